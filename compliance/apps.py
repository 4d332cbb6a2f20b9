from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance"

    def ready(self) -> None:
        from formation.events import CyclerAlarmRaised, FormationGraded
        from genealogy.events import MeasurementsRecorded
        from inspection.events import CountCharacteristicsCreated, VisionFlagged
        from qms import events as registry
        from qms.ingest import registry as ingest_registry
        from risk.events import CellsQuarantined
        from spc.events import AlarmExtended, AlarmRaised

        from . import events  # noqa: F401  (declares the events this app publishes)
        from .handlers import handle_hold_request
        from .subscribers import (
            chart_vision_counts,
            hold_cells_with_critical_cycler_alarms,
            hold_k_screen_failures,
            hold_out_of_spec_units,
            hold_quarantined_cells,
            hold_vision_flagged_cells,
            react_to_spc_alarm,
            react_to_spc_alarm_extended,
        )

        registry.subscribe(
            MeasurementsRecorded,
            hold_out_of_spec_units,
            app_label="compliance",
            description="hold every cell, module or pack with an out-of-spec measurement",
        )
        registry.subscribe(
            AlarmRaised,
            react_to_spc_alarm,
            app_label="compliance",
            description="hold the suspect window and stop the station, as the reaction plan says",
        )
        registry.subscribe(
            AlarmExtended,
            react_to_spc_alarm_extended,
            app_label="compliance",
            description="hold the units a continuing SPC alarm added to its window",
        )
        registry.subscribe(
            VisionFlagged,
            hold_vision_flagged_cells,
            app_label="compliance",
            description="hold the cells made from coil metres vision flagged (defect or gap)",
        )
        registry.subscribe(
            CountCharacteristicsCreated,
            chart_vision_counts,
            app_label="compliance",
            description="chart vision's defect counts per 10 m as c charts in SPC",
        )
        registry.subscribe(
            FormationGraded,
            hold_k_screen_failures,
            app_label="compliance",
            description="hold the cells the K-value screen failed, before module assembly",
        )
        registry.subscribe(
            CyclerAlarmRaised,
            hold_cells_with_critical_cycler_alarms,
            app_label="compliance",
            description="hold the cell on a formation channel with a critical cycler alarm",
        )
        registry.subscribe(
            CellsQuarantined,
            hold_quarantined_cells,
            app_label="compliance",
            description="hold the cells scored above their thermal-risk quarantine threshold",
        )
        ingest_registry.register("hold_request", handle_hold_request, app_label=self.label)
