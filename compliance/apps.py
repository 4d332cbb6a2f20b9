from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance"

    def ready(self) -> None:
        # Declare the events this app publishes, so the registry lists them.
        from . import events  # noqa: F401
