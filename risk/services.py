"""Every write of the risk app: the risk-model registry (register, approve, activate,
retire), scoring cells and storing their scores, field returns with the labels they put on
cells, and retraining runs.

What happens next: a score above its product's quarantine threshold publishes
:class:`risk.events.CellsQuarantined` (compliance holds those cells, so module assembly
refuses them). Every score names the model version that gave it and keeps the features it
was computed from, so it stays explainable after the model is retired.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from formation.models import CellFeatures
from genealogy.choices import UnitKind
from genealogy.models import Measurement, Unit
from genealogy.queries import iter_trace_backward, trace_backward, trace_forward
from inspection.choices import FlagKind
from inspection.models import CellVisionFlag, InspectionResult
from qms import events
from qms.exceptions import InvalidInput, NotFound, Refused
from qms.models import Characteristic
from spc.models import SpcAlarm

from . import scoring
from .baseline import baseline_flags, baseline_reasons, baseline_score
from .choices import FailureMode, ModelState, ReturnLevel
from .events import CellsQuarantined, CellsScored
from .features import FEATURE_NAMES, GAUGE_NAMES, assemble_features
from .models import FieldReturn, FieldReturnLabel, RetrainRun, RiskModel, RiskScore

Actor = AbstractBaseUser

logger = logging.getLogger("celltrace.risk")

APPROVE_PERMISSION = "risk.approve_riskmodel"
#: Cells of the same lots scored together with the cells asked for, at most: lot medians
#: and equipment offsets are taken over this population (a lone cell is its own median).
POPULATION_MAX = 2000
#: Characteristic codes (control plan) that feed each upstream gauge, besides the gauge's
#: own name with hyphens or underscores.
GAUGE_CODE_ALIASES: dict[str, tuple[str, ...]] = {
    "cathode_loading_mg_cm2": ("cathode-areal-weight",),
    "anode_loading_mg_cm2": ("anode-areal-weight",),
    "fill_mass_g": ("fill-mass", "electrolyte-fill-mass"),
}


# --- model registry ---------------------------------------------------------------------------


def _load_checked(manifest_path: Path, onnx_path: Path, expected_sha256: str | None):
    """Load with :meth:`risk.scoring.RiskModel.load`, refusing a file whose sha256 does not
    match or a manifest this code cannot serve."""
    try:
        return scoring.RiskModel.load(
            manifest_path, onnx_path=onnx_path, expected_sha256=expected_sha256
        )
    except scoring.RiskModelError as exc:
        raise InvalidInput(f"Model refused: {exc}", field="file", code=exc.code) from exc


@transaction.atomic
def model_register(
    *,
    manifest_path: Path | str,
    onnx_path: Path | str | None = None,
    actor: Actor,
    notes: str = "",
) -> RiskModel:
    """Copy a trained risk model (ONNX and manifest) into the model store, check the file's
    sha256 against the manifest and that this code serves the manifest (feature list and
    order, calibration, quarantine rules); register it as validated.

    A refused model leaves nothing: no row, no files in the store; the active model runs on.
    """
    manifest_path = Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        name, version = str(manifest["name"]), str(manifest["version"])
    except FileNotFoundError as exc:
        raise InvalidInput(f"No manifest at {manifest_path}.", field="manifest") from exc
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise InvalidInput(f"The manifest is unreadable: {exc!r}.", field="manifest") from exc
    onnx_path = Path(onnx_path) if onnx_path else manifest_path.with_name(str(manifest["file"]))
    if RiskModel.objects.filter(name=name, version=version).exists():
        raise Refused(f"Model {name} {version} is registered already.", field="version")

    store = Path(settings.QMS_MODEL_STORE) / name / version
    if store.exists():  # left over from a refused registration
        shutil.rmtree(store)
    store.mkdir(parents=True)
    try:
        stored_onnx, stored_manifest = store / "model.onnx", store / "manifest.json"
        try:
            shutil.copyfile(onnx_path, stored_onnx)
        except FileNotFoundError as exc:
            raise InvalidInput(f"No model file at {onnx_path}.", field="file") from exc
        shutil.copyfile(manifest_path, stored_manifest)
        loaded = _load_checked(stored_manifest, stored_onnx, None)
        now = timezone.now()
        record = RiskModel(
            name=name,
            version=version,
            file_name=f"{name}/{version}/model.onnx",
            manifest_name=f"{name}/{version}/manifest.json",
            sha256=loaded.sha256,
            size_bytes=stored_onnx.stat().st_size,
            feature_set_version=str(manifest["feature_set_version"]),
            manifest=manifest,
            thresholds=manifest["thresholds"],
            metrics=manifest.get("metrics", {}),
            state=ModelState.DRAFT,
            notes=notes,
            registered_by=actor,
            registered_at=now,
        )
        record._history_user = actor
        record._change_reason = "registered"
        record.save()
        record.state = ModelState.VALIDATED
        record.validated_at = now
        record._change_reason = f"checksum and manifest passed (sha256 {loaded.sha256[:12]})"
        record.save()
    except BaseException:
        shutil.rmtree(store, ignore_errors=True)
        raise
    return record


def _require_approver(actor: Actor) -> None:
    if not actor.has_perm(APPROVE_PERMISSION):
        raise Refused(
            "Only a quality engineer may approve, activate or retire a risk model.",
            field="actor",
            code="forbidden",
        )


def _transition(model: RiskModel, actor: Actor, reason: str, **changes) -> RiskModel:
    for name, value in changes.items():
        setattr(model, name, value)
    model._history_user = actor
    model._change_reason = reason[:100]
    model.save()
    return model


def _reason(reason: str, what: str) -> str:
    if not reason.strip():
        raise InvalidInput(f"{what} needs a reason.", field="reason")
    return reason.strip()


@transaction.atomic
def model_approve(*, model: RiskModel, actor: Actor, reason: str) -> RiskModel:
    """A quality engineer approves a validated model (after reading its comparison)."""
    _require_approver(actor)
    model = RiskModel.objects.select_for_update().get(pk=model.pk)
    if model.state != ModelState.VALIDATED:
        raise Refused(
            f"Only a validated model can be approved; {model} is {model.get_state_display()}.",
            field="state",
        )
    reason = _reason(reason, "An approval")
    return _transition(
        model,
        actor,
        f"approved: {reason}",
        state=ModelState.APPROVED,
        approved_by=actor,
        approved_at=timezone.now(),
    )


@transaction.atomic
def model_activate(*, model: RiskModel, actor: Actor, reason: str) -> RiskModel:
    """Score cells with an approved model from now on: the model of the same name that was
    active is retired (kept for rollback). The stored file is checked again first; a file
    that no longer matches is refused and the active model stays.

    A retired model that was approved once can be activated again (rollback).
    """
    _require_approver(actor)
    model = RiskModel.objects.select_for_update().get(pk=model.pk)
    if model.state == ModelState.ACTIVE:
        return model
    if model.approved_at is None or model.state not in (ModelState.APPROVED, ModelState.RETIRED):
        raise Refused(f"{model} is not approved.", field="state")
    reason = _reason(reason, "An activation")
    _load_checked(model.manifest_path(), model.onnx_path(), model.sha256)
    now = timezone.now()
    for old in RiskModel.objects.select_for_update().filter(
        name=model.name, state=ModelState.ACTIVE
    ):
        _transition(
            old, actor, f"retired: {model} activated", state=ModelState.RETIRED, retired_at=now
        )
    return _transition(
        model, actor, f"activated: {reason}", state=ModelState.ACTIVE, activated_at=now
    )


@transaction.atomic
def model_retire(*, model: RiskModel, actor: Actor, reason: str) -> RiskModel:
    """Retire a model that is not active (an active one is retired by activating its
    replacement, so cells are never left without a model by accident)."""
    _require_approver(actor)
    model = RiskModel.objects.select_for_update().get(pk=model.pk)
    if model.state == ModelState.RETIRED:
        return model
    if model.state == ModelState.ACTIVE:
        raise Refused(f"{model} is active; activate its replacement instead.", field="state")
    reason = _reason(reason, "A retirement")
    return _transition(
        model, actor, f"retired: {reason}", state=ModelState.RETIRED, retired_at=timezone.now()
    )


_loaded_lock = threading.Lock()
_loaded: dict[tuple[int, str], scoring.RiskModel] = {}


def model_loaded(model: RiskModel) -> scoring.RiskModel:
    """The served model of a registry row, loaded once per process and checked against
    the approved sha256 when loaded."""
    key = (model.pk, model.sha256)
    with _loaded_lock:
        found = _loaded.get(key)
        if found is None:
            found = _load_checked(model.manifest_path(), model.onnx_path(), model.sha256)
            _loaded[key] = found
        return found


def active_model_get(name: str = scoring.MODEL_NAME) -> RiskModel:
    model = RiskModel.objects.filter(name=name, state=ModelState.ACTIVE).first()
    if model is None:
        raise Refused(f"No {name} model is active.", field="model", code="no_active_model")
    return model


# --- features from the plant's records --------------------------------------------------------


def _gauge_codes() -> dict[str, str]:
    """Characteristic code -> gauge name."""
    out = {}
    for gauge in GAUGE_NAMES:
        out[gauge] = gauge
        out[gauge.replace("_", "-")] = gauge
        for alias in GAUGE_CODE_ALIASES.get(gauge, ()):
            out[alias] = gauge
    return out


@dataclass
class Population:
    """Cells scored together: their units, features, and the raw K-values."""

    units: list[Unit]
    features: np.ndarray
    k_value_mv_per_day: np.ndarray


def _population(cells: Sequence[Unit]) -> list[Unit]:
    """The cells asked for and, to make lot medians meaningful, the newest cells of their
    lots (at most :data:`POPULATION_MAX` in all)."""
    asked = {u.pk: u for u in cells}
    lots = set(
        CellFeatures.objects.filter(unit_id__in=asked).exclude(lot="").values_list("lot", flat=True)
    )
    room = max(0, POPULATION_MAX - len(asked))
    neighbours = (
        Unit.objects.filter(formation_features__lot__in=lots)
        .exclude(pk__in=asked)
        .select_related("line")
        .order_by("-formation_features__formed_at", "-pk")[:room]
        if lots and room
        else []
    )
    return list(cells) + list(neighbours)


def features_build(cells: Sequence[Unit]) -> Population:
    """The risk feature matrix of ``cells`` from the plant's records.

    Formation: each cell's :class:`formation.models.CellFeatures` (lot, channel, rack).
    Upstream gauges: measurements of the cell and of every unit upstream of it whose
    characteristic feeds a risk gauge; on a coil, only values measured inside the metres
    the cell consumed (all of the coil's values when none lie there); limits from the
    control plan (a gauge the control plan lacks is scored at nominal, not as missing; a
    gauge it has but the cell's units lack counts as a missing value). Vision: flags on
    metres the cell consumed (absent when none of its coils was inspected). SPC: alarms on
    its line's characteristics open when it was made.
    """
    n = len(cells)
    ids = [u.pk for u in cells]
    cf = {f.unit_id: f for f in CellFeatures.objects.filter(unit_id__in=ids)}
    formation = {name: np.full(n, np.nan) for name in FEATURE_NAMES_FORMATION}
    lot = np.empty(n, dtype=object)
    channel = np.empty(n, dtype=object)
    rack = np.empty(n, dtype=object)
    k_raw = np.full(n, np.nan)
    for i, unit in enumerate(cells):
        f = cf.get(unit.pk)
        lot[i] = (f.lot if f else "") or f"unit:{unit.pk}"
        channel[i] = (f.channel_key if f else "") or f"unit:{unit.pk}"
        rack[i] = (f.rack if f else "") or f"unit:{unit.pk}"
        if f is None:
            continue
        for name in FEATURE_NAMES_FORMATION:
            value = getattr(f, name, None)
            if value is not None:
                formation[name][i] = value
        if f.k_value_mv_per_day is not None:
            k_raw[i] = f.k_value_mv_per_day

    # upstream: which units (and which metres of them) each cell came from
    upstream: list[dict[int, tuple[float | None, float | None]]] = []
    for unit in cells:
        upstream.append(
            {row.unit_id: (row.start_m, row.end_m) for row in iter_trace_backward(unit)}
        )
    all_units = set().union(*[set(u) for u in upstream]) if upstream else set()
    codes = _gauge_codes()
    chars = {
        c.pk: c
        for c in Characteristic.objects.filter(code__in=codes)
        .select_related("station")
        .order_by("pk")
    }
    # Each line's control plan has its own limits (a cylindrical cell's fill mass is grams
    # where a prismatic cell's is a hundred grams): a cell is judged by its own line's.
    limits_by_line: dict[int | None, dict[str, dict]] = defaultdict(dict)
    for c in chars.values():
        row = {"nominal": c.nominal, "lsl": c.lsl, "usl": c.usl}
        limits_by_line[c.station.line_id].setdefault(codes[c.code], row)
        limits_by_line[None].setdefault(codes[c.code], row)
    values: dict[tuple[int, str], list[tuple[float, float | None]]] = defaultdict(list)
    if chars:
        for unit_id, char_id, value, pos in Measurement.objects.filter(
            unit_id__in=all_units, characteristic_id__in=chars
        ).values_list("unit_id", "characteristic_id", "value", "position_m"):
            values[(unit_id, codes[chars[char_id].code])].append((value, pos))
    gauge_values = {g: np.full(n, np.nan) for g in GAUGE_NAMES}
    for i, reached in enumerate(upstream):
        for gauge in GAUGE_NAMES:
            picked: list[float] = []
            for unit_id, (lo, hi) in reached.items():
                got = values.get((unit_id, gauge))
                if not got:
                    continue
                inside = [
                    v for v, pos in got if pos is not None and lo is not None and lo <= pos < hi
                ]
                picked.extend(inside or [v for v, _ in got])
            if picked:
                gauge_values[gauge][i] = float(np.mean(picked))
    # vision: defect flags on the cell's metres; absent when its coils were never inspected
    flagged = defaultdict(int)
    for unit_id in CellVisionFlag.objects.filter(
        unit_id__in=ids, flag__kind=FlagKind.DEFECT
    ).values_list("unit_id", flat=True):
        flagged[unit_id] += 1
    inspected = set(
        InspectionResult.objects.filter(coil_id__in=all_units)
        .values_list("coil_id", flat=True)
        .distinct()
    )
    vision = np.array(
        [
            float(flagged[u.pk]) if inspected & set(upstream[i]) else np.nan
            for i, u in enumerate(cells)
        ]
    )
    # SPC: alarms on the line's characteristics open while the cell was made
    spc = np.full(n, np.nan)
    by_line: dict[int, list[tuple[datetime, datetime | None]]] = defaultdict(list)
    line_ids = {u.line_id for u in cells if u.line_id}
    for line_id, first, closed in SpcAlarm.objects.filter(
        characteristic__station__line_id__in=line_ids
    ).values_list("characteristic__station__line_id", "first_measured_at", "closed_at"):
        by_line[line_id].append((first, closed))
    for i, unit in enumerate(cells):
        if unit.line_id is None:
            continue
        made = unit.produced_at
        spc[i] = sum(
            1
            for first, closed in by_line[unit.line_id]
            if first <= made and (closed is None or closed > made)
        )
    extras = {"vision_defects_on_segments": vision, "open_spc_alarms": spc}
    values = np.zeros((n, len(FEATURE_NAMES)))
    by_line: dict[int | None, list[int]] = defaultdict(list)
    for i, unit in enumerate(cells):
        by_line[unit.line_id if unit.line_id in limits_by_line else None].append(i)
    for line_id, rows in by_line.items():
        idx = np.asarray(rows)
        limits = limits_by_line.get(line_id, {})
        # A gauge the line's control plan does not have is not measured on that line at
        # all: its cells are scored at nominal rather than as missing (every cell would
        # count it).
        gauges, picked = {}, {}
        for g in GAUGE_NAMES:
            if g in limits:
                gauges[g], picked[g] = limits[g], gauge_values[g][idx]
            else:
                gauges[g], picked[g] = {"nominal": 0.0, "lsl": -1.0, "usl": 1.0}, np.zeros(len(idx))
        table = assemble_features(
            {name: col[idx] for name, col in formation.items()},
            picked,
            gauges=gauges,
            lot=lot[idx],
            channel=channel[idx],
            rack=rack[idx],
            extras={name: col[idx] for name, col in extras.items()},
        )
        values[idx] = table.values
    return Population(list(cells), values, k_raw)


FEATURE_NAMES_FORMATION: tuple[str, ...] = (
    "q_charge_ah",
    "q_discharge_ah",
    "ice",
    "v_mean_discharge_v",
    "cv_time_s",
    "dcir_1s_mohm",
    "dcir_10s_mohm",
    "r_low_soc_10s_mohm",
    "temperature_rise_k",
    "k_value_mv_per_day",
    "k_value_se_mv_per_day",
    "ocv_end_mv",
)


def _product(unit: Unit, thresholds: dict) -> str:
    """The key of the cell's quarantine rule: its material, GTIN, line or cell format,
    whichever the model has a rule for; ``default`` otherwise."""
    line = unit.line
    for key in (unit.material, unit.gtin, line and line.code, line and line.cell_format):
        if key and key in thresholds:
            return str(key)
    return "default"


# --- scoring ----------------------------------------------------------------------------------


@transaction.atomic
def cells_score(
    *,
    cell_ids: Iterable[int],
    actor: Actor | None = None,
    skip_current: bool = False,
) -> list[RiskScore]:
    """Score cells with the active model and append one :class:`RiskScore` each: the
    calibrated risk and its parts, the baseline beside it, the top reasons, the feature
    vector, the model version and the product's threshold.

    Cells at or above their product's threshold are quarantined: the event
    :class:`risk.events.CellsQuarantined` is published (after commit), and compliance holds
    them. ``skip_current``: leave out cells the active model has already scored since
    their formation features were computed (a repeated task adds nothing).
    Refused when no model is active or a cell is not a cell; nothing is written then.
    """
    ids = sorted({int(i) for i in cell_ids})
    if not ids:
        return []
    cells = list(Unit.objects.filter(pk__in=ids).select_related("line"))
    missing = sorted(set(ids) - {u.pk for u in cells})
    if missing:
        raise NotFound(f"No units {missing}.", field="cell_ids")
    not_cells = [u.serial for u in cells if u.kind != UnitKind.CELL]
    if not_cells:
        raise Refused(f"Not cells: {', '.join(not_cells)}.", field="cell_ids")
    record = active_model_get()
    served = model_loaded(record)
    if skip_current:
        latest = dict(
            RiskScore.objects.filter(unit_id__in=ids, model=record)
            .values("unit_id")
            .annotate(at=Max("scored_at"))
            .values_list("unit_id", "at")
        )
        computed = dict(
            CellFeatures.objects.filter(unit_id__in=ids).values_list("unit_id", "computed_at")
        )
        cells = [
            u
            for u in cells
            if u.pk not in latest or (u.pk in computed and computed[u.pk] > latest[u.pk])
        ]
        if not cells:
            return []
    cells.sort(key=lambda u: u.pk)
    population = features_build(_population(cells))
    x = population.features[: len(cells)]
    try:
        risk, p, o = served.score(x)
        reasons = served.reasons(x)
    except scoring.RiskModelError as exc:
        raise InvalidInput(f"The model cannot score these cells: {exc}", field="cell_ids") from exc
    base = baseline_score(x)
    base_flags = baseline_reasons(x)
    now = timezone.now()
    rows = []
    for i, unit in enumerate(cells):
        product = _product(unit, served.thresholds)
        rule = served.rule(product)
        r = float(min(max(risk[i], 0.0), 1.0))
        rows.append(
            RiskScore(
                unit=unit,
                model=record,
                model_version=record.version,
                risk=r,
                supervised_p=float(p[i]),
                outlier_score=float(o[i]) if math.isfinite(o[i]) else 1e9,
                baseline_score=float(base[i]),
                baseline_flags=base_flags[i],
                reasons=reasons[i],
                features={k: float(v) for k, v in zip(FEATURE_NAMES, x[i], strict=True)},
                product=product,
                threshold=rule.risk_threshold,
                threshold_mode=rule.mode,
                quarantined=r >= rule.risk_threshold,
                scored_at=now,
                scored_by=actor,
            )
        )
    created = RiskScore.objects.bulk_create(rows)
    if not all(s.pk for s in created):  # backends that return no ids
        created = list(
            RiskScore.objects.filter(unit_id__in=[u.pk for u in cells], scored_at=now).order_by(
                "unit_id"
            )
        )
    events.publish(
        CellsScored(
            score_ids=tuple(s.pk for s in created),
            unit_ids=tuple(s.unit_id for s in created),
            model_version=record.version,
        )
    )
    held = [s for s in created if s.quarantined]
    if held:
        events.publish(
            CellsQuarantined(
                score_ids=tuple(s.pk for s in held),
                unit_ids=tuple(s.unit_id for s in held),
                model_version=record.version,
            )
        )
    return created


# --- field returns ----------------------------------------------------------------------------


def _return_number(on: date) -> str:
    prefix = f"FR-{on.year}-"
    last = (
        FieldReturn.objects.select_for_update()
        .filter(number__startswith=prefix)
        .order_by("-number")
        .values_list("number", flat=True)
        .first()
    )
    return f"{prefix}{int(last.removeprefix(prefix)) + 1 if last else 1:05d}"


def _unit_of_kind(serial: str, kind: str, field: str) -> Unit:
    unit = Unit.objects.filter(serial=serial, kind=kind).first()
    if unit is None:
        raise NotFound(f"No {kind} {serial}.", field=field)
    return unit


@transaction.atomic
def field_return_record(
    *,
    returned_on: date,
    failure_mode: str,
    actor: Actor,
    vin: str = "",
    pack_serial: str = "",
    cell_serial: str = "",
    analysis: str = "",
) -> FieldReturn:
    """Record a battery returned from the field and the labels it puts on cells.

    With a cell: a cell-level return labelling that cell with weight 1 (its pack is found
    from the genealogy when not given). Without one, a pack-level return: each of the n
    cells the pack was built from (at the time, by the genealogy) is labelled suspect with
    weight 1/n. The pack may be given by its serial or found from the VIN's vehicle.
    Refused (nothing written) on an unknown serial, a future date, a VIN whose vehicle has
    no pack, or a pack the genealogy gives no cells for.
    """
    if failure_mode not in FailureMode.values:
        raise InvalidInput(f"Unknown failure mode {failure_mode!r}.", field="failure_mode")
    if returned_on > timezone.localdate():
        raise InvalidInput("A return cannot be dated in the future.", field="returned_on")
    vin = vin.strip().upper()
    if vin and len(vin) != 17:
        raise InvalidInput(f"A VIN has 17 characters; {vin!r} has {len(vin)}.", field="vin")
    if not (vin or pack_serial or cell_serial):
        raise InvalidInput("A return names a VIN, a pack or a cell.", field="vin")
    cell = _unit_of_kind(cell_serial, UnitKind.CELL, "cell_serial") if cell_serial else None
    pack = _unit_of_kind(pack_serial, UnitKind.PACK, "pack_serial") if pack_serial else None
    if pack is None and vin and cell is None:
        vehicle = _unit_of_kind(vin, UnitKind.VEHICLE, "vin")
        packs = trace_backward(vehicle).by_kind(UnitKind.PACK)
        if len(packs) != 1:
            raise Refused(
                f"Vehicle {vin} has {len(packs)} packs in the genealogy; name the pack.",
                field="pack_serial",
            )
        pack = Unit.objects.get(pk=packs[0].unit_id)
    if cell is not None:
        level = ReturnLevel.CELL
        if pack is not None and not any(
            row.unit_id == cell.pk for row in iter_trace_backward(pack)
        ):
            raise Refused(f"Cell {cell.serial} is not in pack {pack.serial}.", field="cell_serial")
        if pack is None:  # the pack the genealogy put the cell in, when there is one
            packs = trace_forward(cell).by_kind(UnitKind.PACK)
            if len(packs) == 1:
                pack = Unit.objects.get(pk=packs[0].unit_id)
        members = [cell.pk]
    else:
        level = ReturnLevel.PACK
        members = sorted(r.unit_id for r in trace_backward(pack).by_kind(UnitKind.CELL))
        if not members:
            raise Refused(f"The genealogy gives no cells for pack {pack.serial}.", field="pack")
    now = timezone.now()
    record = FieldReturn(
        number=_return_number(returned_on),
        vin=vin,
        pack=pack,
        cell=cell,
        level=level,
        returned_on=returned_on,
        failure_mode=failure_mode,
        analysis=analysis.strip(),
        entered_by=actor,
        entered_at=now,
    )
    record._history_user = actor
    record._change_reason = f"recorded ({level}-level, {len(members)} cell(s) labelled)"
    record.save()
    weight = 1.0 / len(members)
    FieldReturnLabel.objects.bulk_create(
        FieldReturnLabel(
            field_return=record,
            unit_id=unit_id,
            weight=weight,
            failure_mode=failure_mode,
            created_at=now,
        )
        for unit_id in members
    )
    return record


# --- retraining -------------------------------------------------------------------------------

#: Below these a challenger is not trained: the run ends ``too_few_labels`` and says why.
MIN_MATURE_CELLS = 500
MIN_POSITIVE_WEIGHT = 10.0
#: A cell is labelled once this long has passed since it was built (younger cells may still
#: come back).
LABEL_HORIZON_DAYS = 365.0
#: Time slices of the labelled history: oldest for training, then calibration, then the
#: hold-out every model is compared on.
SLICES = (0.75, 0.125, 0.125)
#: Fewest cells per side for the input drift (PSI) to be reported.
MIN_DRIFT_CELLS = 20
RETRAIN_USERNAME = "celltrace-retrain"


@dataclass
class TrainingSet:
    """The scored cells (latest score each) with their build times, products, failure
    modes where a cell-level return names one, and the labels field returns give."""

    unit_ids: np.ndarray
    features: np.ndarray
    built_at_s: np.ndarray
    product: np.ndarray
    failure_mode: np.ndarray
    labels: scoring.TrainingLabels
    counts: dict


def training_set(*, as_of: datetime, horizon_days: float = LABEL_HORIZON_DAYS) -> TrainingSet:
    """Every scored cell with the features of its latest score (what the model saw) and
    the labels field returns give them as of ``as_of`` (cell-level returns label their cell;
    pack-level returns each of the pack's cells with one over the pack's cells)."""
    latest: dict[int, tuple] = {}
    for unit_id, features, produced_at, product in (
        RiskScore.objects.order_by("unit_id", "-scored_at", "-id")
        .values_list("unit_id", "features", "unit__produced_at", "product")
        .iterator(chunk_size=5000)
    ):
        if unit_id not in latest:
            latest[unit_id] = (features, produced_at, product)
    ids = np.array(sorted(latest), dtype=np.int64)
    index = {int(u): i for i, u in enumerate(ids)}
    n = len(ids)
    x = np.array(
        [[float(latest[u][0].get(name, 0.0)) for name in FEATURE_NAMES] for u in ids.tolist()]
    ).reshape(n, len(FEATURE_NAMES))
    built = np.array([latest[u][1].timestamp() for u in ids.tolist()], dtype=np.float64)
    product = np.array([latest[u][2] or "default" for u in ids.tolist()], dtype=object)
    mode = np.full(n, "none", dtype=object)
    pack_of = np.full(n, -1, dtype=np.int64)
    cell_returns, pack_returns = [], set()
    for unit_id, level, pack_id, returned_on, failure_mode in FieldReturnLabel.objects.values_list(
        "unit_id",
        "field_return__level",
        "field_return__pack_id",
        "field_return__returned_on",
        "field_return__failure_mode",
    ):
        i = index.get(unit_id)
        if i is None:
            continue
        at = datetime(returned_on.year, returned_on.month, returned_on.day, tzinfo=UTC)
        if level == ReturnLevel.CELL:
            cell_returns.append((i, at))
            mode[i] = failure_mode
        else:
            pack_of[i] = pack_id
            pack_returns.add((pack_id, at))
    labels = scoring.field_return_labels(
        built,
        as_of=as_of,
        horizon_days=horizon_days,
        cell_returns=cell_returns,
        pack_returns=sorted(pack_returns),
        pack_of=pack_of,
    )
    counts = {
        "scored_cells": n,
        "mature_cells": int(labels.mature.sum()),
        "cell_level_returns": len({i for i, _ in cell_returns}),
        "pack_level_returns": len({p for p, _ in pack_returns}),
        "positive_weight": round(labels.positives, 4),
        "horizon_days": horizon_days,
        "as_of": as_of.isoformat(),
    }
    return TrainingSet(ids, x, built, product, mode, labels, counts)


def _drift(data: TrainingSet) -> dict:
    """PSI of every feature: the newest hold-out slice against the training slice."""
    from . import evaluation

    if len(data.built_at_s) < 2 * MIN_DRIFT_CELLS:
        return {}
    train, _, hold = evaluation.time_split(data.built_at_s, fractions=SLICES)
    if train.sum() < MIN_DRIFT_CELLS or hold.sum() < MIN_DRIFT_CELLS:
        return {}
    table = evaluation.psi_table(data.features[train], data.features[hold], FEATURE_NAMES)
    return {k: round(v, 4) for k, v in table.items()}


def _next_version(name: str) -> str:
    """One minor version above the highest registered ``major.minor.patch``."""
    best = (1, 0, 0)
    for version in RiskModel.objects.filter(name=name).values_list("version", flat=True):
        try:
            parts = tuple(int(p) for p in version.split("."))
        except ValueError:
            continue
        if len(parts) == 3 and parts > best:
            best = parts
    return f"{best[0]}.{best[1] + 1}.0"


def _retrain_actor(actor: Actor | None) -> Actor:
    if actor is not None:
        return actor
    from django.contrib.auth import get_user_model

    user, created = get_user_model().objects.get_or_create(
        username=RETRAIN_USERNAME, defaults={"is_active": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _challenger_train(data: TrainingSet, *, seed: int, active: RiskModel | None, directory: Path):
    """Fit the three parts on their time slices (as ``scripts/train_risk_model.py``),
    write the model files and compare on the hold-out. Returns (manifest, onnx, comparison);
    raises ValueError when a slice lacks a label."""
    from . import evaluation

    x, labels = data.features, data.labels
    train, cal, hold = evaluation.time_split(data.built_at_s, fractions=SLICES)
    in_train = train[labels.rows]
    estimator = scoring.fit_supervised(
        x[labels.rows[in_train]], labels.y[in_train], labels.weight[in_train], seed=seed
    )
    onnx_bytes = scoring.export_onnx(estimator)
    session = scoring.onnx_session(onnx_bytes)
    outlier = scoring.fit_outlier(x[train], seed=seed)
    in_cal = cal[labels.rows]
    rows = labels.rows[in_cal]
    calibration = scoring.fit_calibration(
        scoring.onnx_probabilities(session, x[rows]),
        outlier.score(x[rows]),
        baseline_flags(x[rows])[0].sum(axis=1),
        labels.y[in_cal],
        labels.weight[in_cal],
        seed=seed,
    )
    later = cal | hold
    risk_later = calibration.risk(
        scoring.onnx_probabilities(session, x[later]),
        outlier.score(x[later]),
        calibration.screens(x[later]),
    )
    top = scoring.top_fraction_rule
    fraction = 0.02
    thresholds = {"default": top(risk_later, fraction)}
    for product in sorted(set(data.product[later].tolist()) - {"default"}):
        sel = data.product[later] == product
        thresholds[product] = top(risk_later[sel], fraction)
    xh = x[hold]
    scores = {
        "challenger": calibration.risk(
            scoring.onnx_probabilities(session, xh), outlier.score(xh), calibration.screens(xh)
        ),
        "baseline": baseline_score(xh),
    }
    if active is not None:
        scores["active"] = model_loaded(active).score(xh)[0]
    truth = labels.returned[hold]
    if truth.sum() == 0 or (~truth).sum() == 0:
        raise ValueError("the hold-out slice has no cell-level return (or only returns)")
    comparison = evaluation.compare(scores, truth, latent_class=data.failure_mode[hold])
    comparison = json.loads(json.dumps(comparison, default=float))
    training = {
        "as_of": data.counts["as_of"],
        "labels": data.counts,
        "slices": list(SLICES),
        "seed": seed,
        "data_sha256": scoring.array_sha256(x, data.built_at_s),
        "source": "plant risk scores and field returns",
    }
    manifest, onnx = scoring.write_model_files(
        directory,
        version=_next_version(scoring.MODEL_NAME),
        estimator=estimator,
        onnx_bytes=onnx_bytes,
        outlier=outlier,
        calibration=calibration,
        thresholds=thresholds,
        scale=scoring.feature_scale(x[train]),
        training=training,
        metrics={"holdout_field_returns": {"scores": comparison}},
    )
    return manifest, onnx, comparison


def retrain(
    *,
    actor: Actor | None = None,
    as_of: datetime | None = None,
    horizon_days: float = LABEL_HORIZON_DAYS,
    seed: int = 20260101,
) -> RetrainRun:
    """Train a challenger on every label so far, register it (validated, not active) and
    store its comparison with the active model and the baseline on the time-ordered
    hold-out, with the input drift (PSI per feature).

    Not one transaction: the run row is written first so a long or failed training leaves
    a record. With too few labels the run ends ``too_few_labels`` and ``detail`` gives the
    counts; an error ends it ``failed`` with the message. Promotion stays a quality
    engineer's decision (:func:`model_approve`, :func:`model_activate`).
    """
    import tempfile

    from .choices import RetrainStatus

    as_of = as_of or timezone.now()
    active = RiskModel.objects.filter(name=scoring.MODEL_NAME, state=ModelState.ACTIVE).first()
    run = RetrainRun.objects.create(
        status=RetrainStatus.RUNNING,
        started_at=timezone.now(),
        requested_by=actor,
        active_model=active,
    )
    try:
        data = training_set(as_of=as_of, horizon_days=horizon_days)
        run.label_counts = data.counts
        run.drift_psi = _drift(data)
        c = data.counts
        if c["mature_cells"] < MIN_MATURE_CELLS or c["positive_weight"] < MIN_POSITIVE_WEIGHT:
            run.status = RetrainStatus.TOO_FEW_LABELS
            run.detail = (
                f"{c['mature_cells']} cells old enough to be labelled (of {c['scored_cells']} "
                f"scored) and {c['positive_weight']:g} returned-cell weight "
                f"({c['cell_level_returns']} cell-level, {c['pack_level_returns']} pack-level "
                f"returns); training needs at least {MIN_MATURE_CELLS} cells and "
                f"{MIN_POSITIVE_WEIGHT:g}. The active model stays."
            )
        else:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    manifest, onnx, comparison = _challenger_train(
                        data, seed=seed, active=active, directory=Path(tmp)
                    )
                except ValueError as exc:
                    run.status = RetrainStatus.TOO_FEW_LABELS
                    run.detail = f"Not trainable on these labels: {exc}. The active model stays."
                else:
                    run.challenger = model_register(
                        manifest_path=manifest,
                        onnx_path=onnx,
                        actor=_retrain_actor(actor),
                        notes=f"challenger of retraining run {run.pk}",
                    )
                    run.comparison = comparison
                    run.status = RetrainStatus.DONE
                    run.detail = "Challenger registered; promotion needs a quality engineer."
    except Exception as exc:
        run.status = RetrainStatus.FAILED
        run.detail = f"{type(exc).__name__}: {exc}"[:2000]
        logger.exception("risk: retraining run %s failed", run.pk)
    run.finished_at = timezone.now()
    run.save()
    return run
