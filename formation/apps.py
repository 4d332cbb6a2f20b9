from django.apps import AppConfig


class FormationConfig(AppConfig):
    name = "formation"
    verbose_name = "Formation and aging"

    def ready(self) -> None:
        from qms.ingest import registry as ingest_registry

        from . import events  # noqa: F401  (declares the events this app publishes)
        from .handlers import BATCH_HANDLERS, HANDLERS
        from .schema import (
            AGING_OCV_SCHEMA,
            CYCLER_STATUS_SCHEMA,
            FORMATION_STEP_SCHEMA,
            TRAY_LOAD_SCHEMA,
        )

        schemas = {
            "formation_step": FORMATION_STEP_SCHEMA,
            "aging_ocv": AGING_OCV_SCHEMA,
            "tray_load": TRAY_LOAD_SCHEMA,
            "cycler_status": CYCLER_STATUS_SCHEMA,
        }
        for kind, handler in HANDLERS.items():
            ingest_registry.register(
                kind,
                handler,
                app_label=self.label,
                payload_schema=schemas[kind],
                batch_handler=BATCH_HANDLERS.get(kind),
            )
