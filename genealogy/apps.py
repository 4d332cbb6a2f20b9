from django.apps import AppConfig


class GenealogyConfig(AppConfig):
    name = "genealogy"
    verbose_name = "Genealogy (digital thread)"

    def ready(self) -> None:
        from qms.ingest import registry as ingest_registry

        # Declare the events this app publishes, so the registry lists them.
        from . import events  # noqa: F401
        from .handlers import BATCH_HANDLERS, HANDLERS

        # The envelope kinds of the digital thread (see genealogy.handlers).
        for kind, handler in HANDLERS.items():
            ingest_registry.register(
                kind, handler, app_label=self.label, batch_handler=BATCH_HANDLERS.get(kind)
            )

        from qms import events as event_registry

        from .events import VisitsRecorded
        from .subscribers import update_unit_progress

        event_registry.subscribe(
            VisitsRecorded,
            update_unit_progress,
            app_label=self.label,
            description="update each unit's station progress (latest station, stations passed)",
        )
