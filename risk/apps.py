from django.apps import AppConfig


class RiskConfig(AppConfig):
    name = "risk"
    verbose_name = "Thermal risk"

    def ready(self) -> None:
        from formation.events import FormationGraded
        from qms import events as event_registry

        from . import events  # noqa: F401  (declares the events this app publishes)
        from .tasks import score_graded_cells

        event_registry.subscribe(
            FormationGraded,
            score_graded_cells,
            app_label=self.label,
            description="score the graded cells' thermal risk with the active model",
        )
