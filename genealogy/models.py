"""The digital thread: traceable units, the links between them, station visits and
measurements.

Direction: a ``Link`` points from the upstream unit (``parent``: material lot, coil) to the
downstream one (``child``: cell, module). For assembly the parent is the container (module)
and the child the part (cell): still "child goes into parent" is *upstream*. To keep one
direction for trace, ``Link.source`` is always the upstream side and ``Link.target`` the
downstream side:

* consumed: source = material lot / mix batch / coil, target = what consumed it
* slit:     source = mother coil, target = slit coil (target metre 0 = source ``start_m``)
* assembled: source = cell (module, pack), target = module (pack, vehicle); ``slot`` names
  the position in the target.

So backward trace always walks target -> source and forward trace source -> target.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from simple_history.models import HistoricalRecords

from qms.models import Characteristic, Equipment, Line, Station

from .choices import LinkKind, UnitKind, UnitStatus, VisitResult

__all__ = ["Unit", "Link", "StationVisit", "Measurement", "UnitProgress"]


class Unit(models.Model):
    """Anything that carries an identity: a material lot, a mix batch, an electrode coil,
    a slit coil, a cell, a module, a pack or a vehicle (serial = VIN).

    ``serial`` is unique per kind. For GS1-marked cells ``gtin`` and ``batch_lot`` keep the
    AI 01 and AI 10 values; ``length_m`` is the usable length of coils in metres.
    ``status`` is the flag every station interlock reads; only compliance services change it.
    """

    kind = models.CharField(max_length=16, choices=UnitKind.choices)
    serial = models.CharField(max_length=64)
    line = models.ForeignKey(
        Line, on_delete=models.PROTECT, null=True, blank=True, related_name="units"
    )
    status = models.CharField(
        max_length=16, choices=UnitStatus.choices, default=UnitStatus.IN_PROCESS
    )
    status_reason = models.CharField(
        max_length=300,
        blank=True,
        help_text="Why the unit has its status (hold number and reason); shown by interlocks.",
    )
    gtin = models.CharField(max_length=14, blank=True, verbose_name="GTIN")
    batch_lot = models.CharField(max_length=20, blank=True, help_text="GS1 AI 10 batch/lot.")
    material = models.CharField(
        max_length=80, blank=True, help_text="For lots and batches, e.g. 'NMC811 CAM'."
    )
    supplier = models.CharField(max_length=80, blank=True)
    length_m = models.FloatField(
        null=True, blank=True, help_text="Usable length of a coil in metres."
    )
    produced_at = models.DateTimeField(default=timezone.now, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["-produced_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "serial"], name="unit_serial_unique_per_kind"),
            models.CheckConstraint(
                condition=Q(length_m__isnull=True) | Q(length_m__gt=0),
                name="unit_length_positive",
            ),
        ]
        indexes = [
            models.Index(fields=["serial"], name="unit_serial_idx"),
            models.Index(fields=["kind", "status"], name="unit_kind_status_idx"),
            models.Index(fields=["line", "kind", "produced_at"], name="unit_line_kind_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.serial}"


class Link(models.Model):
    """One edge of the genealogy graph, from upstream ``source`` to downstream ``target``.

    For metred sources (coils) ``[start_m, end_m)`` is the consumed segment in the
    source's metres. Rework never deletes a link: it sets ``removed_at`` and adds a new one,
    so genealogy as of any date can be rebuilt.
    """

    source = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="downstream_links")
    target = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="upstream_links")
    kind = models.CharField(max_length=16, choices=LinkKind.choices)
    slot = models.CharField(
        max_length=16, blank=True, help_text="Position in the target, e.g. cell slot 'C017'."
    )
    start_m = models.FloatField(null=True, blank=True)
    end_m = models.FloatField(null=True, blank=True)
    quantity = models.FloatField(
        null=True, blank=True, help_text="Amount of a lot consumed, in quantity_unit."
    )
    quantity_unit = models.CharField(max_length=8, blank=True)
    linked_at = models.DateTimeField(default=timezone.now)
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_reason = models.CharField(max_length=200, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["linked_at", "id"]
        constraints = [
            models.CheckConstraint(condition=~Q(source=F("target")), name="link_not_to_self"),
            models.CheckConstraint(
                condition=(Q(start_m__isnull=True) & Q(end_m__isnull=True))
                | (Q(start_m__gte=0) & Q(end_m__gt=F("start_m"))),
                name="link_segment_valid",
            ),
            models.CheckConstraint(
                condition=Q(removed_at__isnull=True) | Q(removed_at__gte=F("linked_at")),
                name="link_removed_after_linked",
            ),
            # A slot holds one part at a time.
            models.UniqueConstraint(
                fields=["target", "slot"],
                condition=Q(removed_at__isnull=True, kind=LinkKind.ASSEMBLED) & ~Q(slot=""),
                name="link_one_part_per_slot",
            ),
            # A part sits in one assembly at a time.
            models.UniqueConstraint(
                fields=["source"],
                condition=Q(removed_at__isnull=True, kind=LinkKind.ASSEMBLED),
                name="link_part_in_one_assembly",
            ),
        ]
        indexes = [
            models.Index(fields=["source", "target"], name="link_source_target_idx"),
            models.Index(fields=["target", "source"], name="link_target_source_idx"),
        ]

    def __str__(self) -> str:
        seg = f" [{self.start_m:g}, {self.end_m:g}) m" if self.start_m is not None else ""
        return f"{self.source} -> {self.target}{seg}"


class StationVisit(models.Model):
    """A unit's pass through a station: when, on which equipment, with which result.

    Append-only process record; measurements taken during the visit point to it.
    """

    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="visits")
    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="visits")
    equipment = models.ForeignKey(
        Equipment, on_delete=models.PROTECT, null=True, blank=True, related_name="visits"
    )
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=4, choices=VisitResult.choices, default=VisitResult.OK)
    program = models.CharField(max_length=64, blank=True, help_text="Recipe or NC program.")
    operator = models.CharField(max_length=64, blank=True)
    source_message_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [
            models.Index(fields=["unit", "started_at"], name="visit_unit_time_idx"),
            models.Index(fields=["station", "started_at"], name="visit_station_time_idx"),
            models.Index(fields=["equipment", "started_at"], name="visit_equipment_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.unit} @ {self.station} {self.started_at:%Y-%m-%d %H:%M}"


class Measurement(models.Model):
    """One measured value of a control-plan characteristic on a unit.

    The largest table: written in bulk, append-only (no update path, no history).
    ``value`` is in the characteristic's unit; ``position_m`` is the machine-direction
    position on a coil where the value was taken (coating weight profile, thickness).
    ``in_spec`` is evaluated against the limits in force when the value was recorded.
    """

    unit = models.ForeignKey(Unit, on_delete=models.PROTECT, related_name="measurements")
    characteristic = models.ForeignKey(
        Characteristic, on_delete=models.PROTECT, related_name="measurements"
    )
    station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="measurements")
    equipment = models.ForeignKey(
        Equipment, on_delete=models.PROTECT, null=True, blank=True, related_name="measurements"
    )
    visit = models.ForeignKey(
        StationVisit,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="measurements",
    )
    value = models.FloatField()
    in_spec = models.BooleanField()
    measured_at = models.DateTimeField()
    position_m = models.FloatField(null=True, blank=True)
    source_message_id = models.CharField(max_length=128, blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["measured_at", "id"]
        indexes = [
            models.Index(fields=["unit", "measured_at"], name="meas_unit_time_idx"),
            models.Index(fields=["characteristic", "measured_at"], name="meas_char_time_idx"),
            models.Index(fields=["station", "measured_at"], name="meas_station_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.characteristic.code}={self.value:g} on {self.unit}"


class UnitProgress(models.Model):
    """Where a unit is on the line: its latest station visit, and how many stations it has
    passed. One row per unit that has visited a station.

    Derived from ``StationVisit`` by ``genealogy.progress.unit_progress_update`` (a Celery
    task after visits commit) and recomputed from all of the unit's visits each time, so
    late (out-of-order) messages and repeated runs give the same row. ``last_visit_at`` is
    the start of the latest visit; the latest visit is the one with the greatest
    ``started_at``. A station counts as passed when the unit's latest visit there is OK.
    Answers "where is this cell" and "what is at station X" without scanning visits.
    """

    # Derived data: goes with its unit (units are protected by everything else anyway).
    unit = models.OneToOneField(
        Unit, on_delete=models.CASCADE, primary_key=True, related_name="progress"
    )
    last_visit = models.ForeignKey(StationVisit, on_delete=models.PROTECT, related_name="+")
    last_station = models.ForeignKey(Station, on_delete=models.PROTECT, related_name="+")
    last_visit_at = models.DateTimeField()
    last_result = models.CharField(max_length=4, choices=VisitResult.choices)
    stations_passed = models.PositiveIntegerField(
        default=0, help_text="Stations where the unit's latest visit is OK."
    )
    visits = models.PositiveIntegerField(
        default=0, help_text="Station visits recorded for the unit, retests included."
    )
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "unit progress"
        verbose_name_plural = "unit progress"
        indexes = [
            models.Index(fields=["last_station", "last_visit_at"], name="progress_station_time_idx")
        ]

    def __str__(self) -> str:
        return f"{self.unit_id} @ {self.last_station_id} ({self.stations_passed} passed)"
