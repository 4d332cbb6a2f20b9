"""Read-side selectors for holds and the station interlock."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db.models import Count, QuerySet

from genealogy import queries as genealogy_queries
from genealogy.choices import UnitStatus
from genealogy.models import StationVisit, Unit
from qms.models import Station

from .choices import HoldStatus
from .models import Hold, HoldUnit


def hold_list() -> QuerySet[Hold]:
    """Holds, newest first, with who placed/released them and how many units they cover."""
    return Hold.objects.select_related("placed_by", "released_by").annotate(
        unit_count=Count("hold_units")
    )


def holds_open_for_units(unit_ids: Iterable[int]) -> dict[int, list[Hold]]:
    """Open holds per unit id (only units that have one appear)."""
    out: dict[int, list[Hold]] = {}
    for hu in (
        HoldUnit.objects.filter(unit_id__in=list(unit_ids), hold__status=HoldStatus.OPEN)
        .select_related("hold", "hold__placed_by")
        .order_by("hold__placed_at")
    ):
        out.setdefault(hu.unit_id, []).append(hu.hold)
    return out


@dataclass(frozen=True)
class InterlockAnswer:
    """What a station PLC gets back: may the unit enter, and if not, why (for its HMI)."""

    unit: Unit
    station: Station
    allowed: bool
    reasons: list[str] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)


def interlock_check(*, unit: Unit, station: Station) -> InterlockAnswer:
    """May ``unit`` enter ``station``?

    Refused when the unit is on hold (with each open hold's number and reason), scrapped or
    shipped; when anything upstream of it (a material lot, a coil) is on hold or scrapped;
    or when its last station visit elsewhere ended NOK.
    """
    reasons: list[str] = []
    holds = holds_open_for_units([unit.pk]).get(unit.pk, [])
    if unit.status == UnitStatus.ON_HOLD:
        if holds:
            reasons += [f"on hold {h.number}: {h.reason}" for h in holds]
        else:
            reasons.append(f"on hold: {unit.status_reason}")
    elif unit.status in (UnitStatus.SCRAPPED, UnitStatus.SHIPPED):
        reasons.append(f"{unit.get_status_display().lower()}: {unit.status_reason}".rstrip(": "))
    for _id, kind, serial, status, why in genealogy_queries.upstream_blocked(unit):
        label = "on hold" if status == UnitStatus.ON_HOLD else status
        reasons.append(f"upstream {kind.replace('_', ' ')} {serial} is {label}: {why}")
    last = (
        StationVisit.objects.filter(unit=unit)
        .select_related("station")
        .order_by("-started_at", "-id")
        .first()
    )
    if last is not None and last.result == "nok" and last.station_id != station.pk:
        reasons.append(f"last visit at {last.station.code} ended NOK")
    return InterlockAnswer(
        unit=unit, station=station, allowed=not reasons, reasons=reasons, holds=holds
    )
