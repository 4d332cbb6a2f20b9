from django.apps import AppConfig


class SparkplugConfig(AppConfig):
    """Sparkplug B host application: birth cache, sequence checks and metric mappings."""

    name = "qms.sparkplug"
    label = "sparkplug"
    verbose_name = "Sparkplug B transport"
