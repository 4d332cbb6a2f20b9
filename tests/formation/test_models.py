"""The formation tables keep their rules in the database: one run per cell and source, one
step per run and sequence, one aging reading per cell and time, one active grading rule set
per line, file import counts that add up; and the small functions beside the models."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from formation.choices import RuleSetState, SignConvention, SourceFormat
from formation.imports import barcode_from_name, cycler_profile_of
from formation.models import (
    AgingReading,
    CyclerFileImport,
    CyclerImportProfile,
    CyclerRun,
    GradingRuleSet,
    StepResult,
    position_key,
)
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _run(cell, station, **kw) -> CyclerRun:
    now = timezone.now()
    values = {
        "unit": cell,
        "station": station,
        "started_at": now - timedelta(hours=20),
        "ended_at": now,
        "source_format": SourceFormat.ENVELOPE,
        "source_sign_convention": SignConvention.CHARGE_POSITIVE,
        **kw,
    }
    return CyclerRun.objects.create(**values)


def _violates(name: str, fn, columns: str = "") -> None:
    """``fn`` breaks the constraint ``name`` (PostgreSQL names it; SQLite names a unique
    constraint's columns)."""
    with pytest.raises(IntegrityError) as err, transaction.atomic():
        fn()
    assert name in str(err.value) or (columns and columns in str(err.value)), str(err.value)


@pytest.mark.parametrize(
    ("given", "key"), [("05", "5"), ("5", "5"), (" 12 ", "12"), ("a3", "A3"), ("", "")]
)
def test_tray_positions_compare_without_leading_zeros(given, key):
    assert position_key(given) == key


def test_a_cell_has_one_run_per_source_file_and_per_cycler_run_id(cells, formation_plant):
    form = formation_plant.stations["form"]
    _run(cells[0], form, source_sha256="a" * 64)
    _run(cells[0], form, source_run_id="FC01-R1")
    _run(cells[1], form, source_sha256="a" * 64, source_run_id="FC01-R1")  # another cell
    _run(cells[0], form)  # no source key: nothing to repeat

    _violates(
        "cyclerrun_once_per_file",
        lambda: _run(cells[0], form, source_sha256="a" * 64),
        "formation_cyclerrun.unit_id, formation_cyclerrun.source_sha256",
    )
    _violates(
        "cyclerrun_once_per_run_id",
        lambda: _run(cells[0], form, source_run_id="FC01-R1"),
        "formation_cyclerrun.unit_id, formation_cyclerrun.source_run_id",
    )
    _violates(
        "cyclerrun_ends_after_start",
        lambda: _run(cells[2], form, ended_at=timezone.now() - timedelta(days=2)),
    )
    assert CyclerRun.objects.count() == 4


def test_a_run_has_one_step_per_sequence(cells, formation_plant):
    run = _run(cells[0], formation_plant.stations["form"])
    values = {
        "run": run,
        "sequence": 1,
        "step_type": "rest",
        "started_at": run.started_at,
        "ended_at": run.started_at + timedelta(minutes=10),
        "duration_s": 600.0,
        "capacity_ah": 0.0,
        "energy_wh": 0.0,
        "start_voltage_v": 2.95,
        "end_voltage_v": 2.95,
        "end_current_a": 0.0,
    }
    StepResult.objects.create(**values)

    _violates(
        "stepresult_once_per_run",
        lambda: StepResult.objects.create(**values),
        "formation_stepresult.run_id, formation_stepresult.sequence",
    )
    _violates(
        "stepresult_ends_after_start",
        lambda: StepResult.objects.create(
            **{**values, "sequence": 2, "ended_at": run.started_at - timedelta(seconds=1)}
        ),
    )


def test_a_cell_has_one_aging_reading_per_time(cells, formation_plant):
    values = {
        "unit": cells[0],
        "station": formation_plant.stations["aging"],
        "rack": "R01",
        "ocv_mv": 3650.1,
        "measured_at": timezone.now() - timedelta(days=1),
    }
    AgingReading.objects.create(**values)

    _violates(
        "aging_once_per_time",
        lambda: AgingReading.objects.create(**values),
        "formation_agingreading.unit_id, formation_agingreading.measured_at",
    )


def test_a_line_has_one_active_rule_set_and_positive_k_limits(formation_plant):
    user = UserFactory(username="qe-models")
    values = {
        "line": formation_plant.line,
        "bins": [{"code": "A"}],
        "k_abs_limit_mv_per_day": 0.2,
        "k_lot_z_limit": 4.0,
        "created_by": user,
        "created_at": timezone.now(),
        "state": RuleSetState.ACTIVE,
    }
    GradingRuleSet.objects.create(name="v1", **values)

    _violates(
        "ruleset_one_active_per_line",
        lambda: GradingRuleSet.objects.create(name="v2", **values),
        "UNIQUE constraint failed: formation_gradingruleset.line_id",
    )
    _violates(
        "ruleset_k_limits_positive",
        lambda: GradingRuleSet.objects.create(
            name="v3", **{**values, "state": RuleSetState.DRAFT, "k_lot_z_limit": 0.0}
        ),
    )
    _violates(
        "ruleset_name_per_line",
        lambda: GradingRuleSet.objects.create(name="v1", **{**values, "state": "draft"}),
        "formation_gradingruleset.line_id, formation_gradingruleset.name",
    )


def test_a_rule_set_form_checks_its_bins(formation_plant):
    rules = GradingRuleSet(
        line=formation_plant.line,
        name="draft",
        bins=[{"code": "A", "limits": {"capacity_ah": {"min": 110, "max": 100}}}],
        k_abs_limit_mv_per_day=0.2,
        k_lot_z_limit=4.0,
    )

    with pytest.raises(ValidationError) as err:
        rules.clean()

    assert err.value.message_dict == {
        "bins": ["bins[0].limits.capacity_ah: min 110 is above max 100."]
    }


def test_file_import_counts_add_up(formation_plant):
    profile = CyclerImportProfile.objects.create(
        name="p", cycler_profile="cabinet_csv", station=formation_plant.stations["form"], source="x"
    )
    user = UserFactory(username="int-files")
    values = {
        "sha256": "b" * 64,
        "name": "T0417.csv",
        "origin": "upload",
        "profile": profile,
        "source_format": "cabinet_csv",
        "size_bytes": 19316,
        "rows": 171,
        "cells": 3,
        "accepted": 2,
        "duplicate": 0,
        "rejected": 1,
        "steps": 15,
        "samples": 171,
        "imported_at": timezone.now(),
        "imported_by": user,
    }
    CyclerFileImport.objects.create(**values)

    _violates(
        "cyclerfile_cells_add_up",
        lambda: CyclerFileImport.objects.create(**{**values, "sha256": "c" * 64, "rejected": 0}),
    )


def test_an_import_profile_carries_the_sites_options(formation_plant):
    profile = CyclerImportProfile(
        name="neware",
        cycler_profile="neware_csv",
        station=formation_plant.stations["form"],
        timezone="Europe/Berlin",
        sign_convention="discharge_positive",
        strict=True,
        barcode_pattern=r"^(?P<barcode>[A-Z0-9-]+)_ch",
        source="Neware BTS",
    )

    reading = cycler_profile_of(profile)

    assert (reading.name, reading.vendor, reading.file_format) == ("neware_csv", "neware", "csv")
    assert (reading.timezone, reading.sign_convention, reading.strict) == (
        "Europe/Berlin",
        "discharge_positive",
        True,
    )
    assert barcode_from_name(profile, "NMC21700-2403-00871_ch82-1-3.csv") == "NMC21700-2403-00871"
    assert barcode_from_name(profile, "export.csv") is None
    profile.full_clean()


@pytest.mark.parametrize(
    ("pattern", "message"),
    [("^(?P<serial>.+)_", "Name a group 'barcode'."), ("^(?P<barcode>[", "Not a regular")],
)
def test_a_barcode_pattern_must_name_its_group(formation_plant, pattern, message):
    profile = CyclerImportProfile(
        name="arbin",
        cycler_profile="arbin_csv",
        station=formation_plant.stations["form"],
        barcode_pattern=pattern,
        source="Arbin",
    )

    with pytest.raises(ValidationError) as err:
        profile.full_clean()

    assert err.value.message_dict["barcode_pattern"][0].startswith(message)


def test_the_migrations_match_the_models():
    out = StringIO()
    call_command("makemigrations", "formation", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
