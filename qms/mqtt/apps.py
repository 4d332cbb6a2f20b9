from django.apps import AppConfig


class MqttConfig(AppConfig):
    """MQTT transport: the ingest worker (JSON envelopes) and station commands out."""

    name = "qms.mqtt"
    label = "mqtt"
    verbose_name = "MQTT transport"

    def ready(self) -> None:
        from qms.ingest.commands import register_sender

        from .publisher import command_send_mqtt

        register_sender("mqtt", command_send_mqtt)
