from django.apps import AppConfig


class OpcuaConfig(AppConfig):
    """OPC UA transport: station servers and node mappings, the subscription client and the
    station simulator server."""

    name = "qms.opcua"
    label = "opcua"
    verbose_name = "OPC UA transport"

    def ready(self) -> None:
        from qms.ingest import commands

        from .client import send_command

        # Line-stop, hold and release commands to stations whose command transport is OPC UA
        # call the station's Stop(Reason) / Resume() method.
        commands.register_sender("opcua", send_command)
