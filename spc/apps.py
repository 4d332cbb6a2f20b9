from django.apps import AppConfig


class SpcConfig(AppConfig):
    name = "spc"
    verbose_name = "Statistical process control"

    def ready(self) -> None:
        from genealogy.events import MeasurementsRecorded
        from qms import events as registry

        from . import events  # noqa: F401  (declares the events this app publishes)
        from .subscribers import evaluate_new_measurements

        registry.subscribe(
            MeasurementsRecorded,
            evaluate_new_measurements,
            app_label="spc",
            description="evaluate new values against the approved control limits (run rules, "
            "CUSUM, EWMA) and raise SPC alarms",
        )
