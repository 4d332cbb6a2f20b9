from django.apps import AppConfig


class InspectionConfig(AppConfig):
    name = "inspection"
    verbose_name = "Vision inspection"

    def ready(self) -> None:
        from genealogy.events import UnitsLinked
        from qms import events as event_registry
        from qms.ingest import registry as ingest_registry

        from . import events  # noqa: F401  (declares the events this app publishes)
        from .handlers import handle_inspection
        from .schema import PAYLOAD_SCHEMA
        from .subscribers import flag_cells_from_flagged_metres

        ingest_registry.register(
            "inspection", handle_inspection, app_label=self.label, payload_schema=PAYLOAD_SCHEMA
        )
        event_registry.subscribe(
            UnitsLinked,
            flag_cells_from_flagged_metres,
            app_label=self.label,
            description="flag cells that consumed coil metres vision flagged (defect or gap)",
        )
