from django.apps import AppConfig


class IngestConfig(AppConfig):
    """The ingest envelope, the handler registry, exactly-once bookkeeping, dead letters and
    station commands. Transports (MQTT, Sparkplug B, OPC UA, files, REST) feed it."""

    name = "qms.ingest"
    label = "ingest"
    verbose_name = "Ingest"
