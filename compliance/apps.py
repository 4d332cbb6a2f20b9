from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance"

    def ready(self) -> None:
        from genealogy.events import MeasurementsRecorded
        from qms import events as registry
        from qms.ingest import registry as ingest_registry

        from . import events  # noqa: F401  (declares the events this app publishes)
        from .handlers import handle_hold_request
        from .subscribers import hold_out_of_spec_units

        registry.subscribe(
            MeasurementsRecorded,
            hold_out_of_spec_units,
            app_label="compliance",
            description="hold every cell, module or pack with an out-of-spec measurement",
        )
        ingest_registry.register("hold_request", handle_hold_request, app_label=self.label)
