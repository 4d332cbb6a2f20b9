from django.apps import AppConfig


class GenealogyConfig(AppConfig):
    name = "genealogy"
    verbose_name = "Genealogy (digital thread)"

    def ready(self) -> None:
        # Declare the events this app publishes, so the registry lists them.
        from . import events  # noqa: F401
