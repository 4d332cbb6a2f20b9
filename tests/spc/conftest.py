"""SPC fixtures on the 21700 line: electrolyte fill mass 5.00 g +-1 % (CC) and cathode areal
weight 23.0 mg/cm² +-1.5 % (SC), with a process sigma from Cpk 1.33 (centred: sigma =
half tolerance / (3 x 1.33)).

Times: the baseline is measured two days ago, one value a minute; Phase II values come a day
later, one every 10 s. Every value is on its own cell (fill) or on a coil (areal weight), as
the stations record them, through ``genealogy.services.measurements_record``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest
from django.utils import timezone

from genealogy.choices import UnitKind
from genealogy.models import Measurement, Unit
from genealogy.services import (
    MeasurementInput,
    measurements_record,
    unit_create,
    units_create_bulk,
)
from spc.services import ALARM_GAP, limits_approve, limits_propose
from tests.factories import UserFactory
from tests.ingest.line21700 import build_line_21700, cell

#: Process sigma of the fill mass (g) and of the areal weight (mg/cm²) from Cpk 1.33.
SIGMA_FILL_G = 0.05 / (3 * 1.33)
SIGMA_AREAL = 0.345 / (3 * 1.33)


@pytest.fixture
def line(db):
    return build_line_21700()


@pytest.fixture
def fill(line):
    return line.chars["fill_mass"]


@pytest.fixture
def qe(db):
    """A quality engineer (may approve control limits)."""
    return UserFactory(username="qe-anna", role="quality_engineer")


@pytest.fixture
def operator(db):
    return UserFactory(username="op-ben", role="operator")


@pytest.fixture
def t0() -> datetime:
    """Start of the baseline: two days ago, on the minute."""
    return (timezone.now() - timedelta(days=2)).replace(second=0, microsecond=0)


class Recorder:
    """Records values as the line does: one new cell per fill value (or the given units)."""

    def __init__(self, line, actor) -> None:
        self.line = line
        self.actor = actor
        self.next_cell = 1

    def cells(self, count: int) -> list[Unit]:
        serials = [cell(self.next_cell + i) for i in range(count)]
        self.next_cell += count
        return units_create_bulk(
            kind=UnitKind.CELL, serials=serials, line=self.line.line, actor=self.actor
        )

    def coils(self, first: int, count: int) -> list[Unit]:
        """Cathode mother coils ``EC2-C-000001`` .., 1,500 m each."""
        return [
            unit_create(
                kind=UnitKind.COIL,
                serial=f"EC2-C-{n:06d}",
                line=self.line.line,
                length_m=1500.0,
                actor=self.actor,
            )
            for n in range(first, first + count)
        ]

    def __call__(
        self,
        characteristic,
        values,
        *,
        start: datetime,
        step_s: float = 10.0,
        units: list[Unit] | None = None,
        times: list[datetime] | None = None,
    ) -> list[Measurement]:
        values = [float(v) for v in values]
        units = units or self.cells(len(values))
        times = times or [start + timedelta(seconds=step_s * i) for i in range(len(values))]
        return measurements_record(
            rows=[
                MeasurementInput(
                    unit_id=u.pk, characteristic_id=characteristic.pk, value=v, measured_at=at
                )
                for u, v, at in zip(units, values, times, strict=True)
            ],
            actor=self.actor,
        )


@pytest.fixture
def record(line, operator) -> Recorder:
    return Recorder(line, operator)


def normal(seed: int, size: int, mean: float, sigma: float) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sigma, size)


@pytest.fixture
def approved_fill(fill, qe, record, t0):
    """Fill-mass limits from 125 in-control values (seed 11), approved by the quality
    engineer, monitoring from the end of the baseline."""
    record(fill, normal(11, 125, 5.0, SIGMA_FILL_G), start=t0, step_s=60)
    end = t0 + timedelta(minutes=125)
    draft = limits_propose(characteristic=fill, baseline_from=t0, baseline_to=end, actor=qe)
    return limits_approve(
        limits=draft,
        actor=qe,
        reason="Baseline week 48, shift A, no assignable causes",
        monitor_from=end,
    )


@pytest.fixture
def phase2_start(t0) -> datetime:
    return t0 + timedelta(days=1)


def episodes(signals, trigger_of, gap: int = ALARM_GAP) -> list[tuple]:
    """Engine signals grouped as the product groups them into alarms: a firing of the same
    rule on the same statistic whose pattern begins at most ``gap`` points after the last
    firing goes on with it. ``(statistic, rule, first index, trigger id, last index)``."""
    going: dict[tuple[str, str], dict] = {}
    found: list[dict] = []
    for signal in signals:
        key = (signal.statistic, signal.rule)
        episode = going.get(key)
        if episode is not None and min(signal.involved) <= episode["last"] + gap:
            episode["last"] = signal.index
            continue
        episode = going[key] = {
            "key": key,
            "first": signal.index,
            "trigger": trigger_of(signal.index),
            "last": signal.index,
        }
        found.append(episode)
    return sorted((*e["key"], e["first"], e["trigger"], e["last"]) for e in found)
