"""The thermal-risk web pages through Django's test client: a cell's page (formation curves,
features against the lot, aging OCV with the K-value fit, risk score, history, no-data
states, 404), the risk page (score distribution per lot, quarantine list, field returns,
model registry, retraining runs), the field-return form (good and bad paths), the model
commands and "retrain now", each refused for a user without the permission.

The scene is built through the plant's own paths: sixteen simulated 105 Ah prismatic cells
of lot L1260302A (one with a particle short) formed on the cabinets' channels, aged on two
racks and graded (envelopes through the ingest path, then ``features_compute`` and
``cells_grade``); the grading event has the active thermal-risk model score them. Beside
them, the genealogy tests' thread of 16 cells in 5 modules, 3 packs and 3 vehicles for the
field returns.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from formation import features as fx
from formation import services as formation_services
from formation.models import AgingReading, CellFeatures, CyclerRun, StepResult
from genealogy.models import Unit
from risk import services
from risk.choices import FailureMode, ModelState, RetrainStatus, ReturnLevel
from risk.models import FieldReturn, FieldReturnLabel, RetrainRun, RiskModel, RiskScore
from risk.scoring import default_model_paths
from tests.factories import UserFactory
from tests.formation import conftest as formation_fixtures
from tests.formation.conftest import (
    N_CELLS,
    aging_envelope,
    send,
    step_envelope,
    tray_envelope,
)
from tests.genealogy.conftest import VINS, cell_serial

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_eager")]

# The formation tests' simulated cells and plant, used here by name.
sim = formation_fixtures.sim
sim_curves = formation_fixtures.sim_curves
formation_plant = formation_fixtures.formation_plant
cells = formation_fixtures.cells

LOT = "L1260302A"
HTMX = {"HX-Request": "true"}
SVG = "{http://www.w3.org/2000/svg}"


# --- the scene ---------------------------------------------------------------------------------


@pytest.fixture
def formed(
    sim, sim_curves, cells, formation_plant, quality, risk_model, django_capture_on_commit_callbacks
):
    """The sixteen simulated cells formed, aged, graded and scored (by the grading event)."""
    send(tray_envelope(sim, 0), tray_envelope(sim, 1))
    send(*[step_envelope(sim, sim_curves, i) for i in range(N_CELLS)])
    send(*[aging_envelope(sim, i) for i in range(N_CELLS)])
    ids = [c.pk for c in cells]
    formation_services.features_compute(cell_ids=ids)
    quality.user_permissions.add(Permission.objects.get(codename="change_gradingruleset"))
    quality = type(quality).objects.get(pk=quality.pk)  # permissions are cached per instance
    rules = formation_services.grading_rules_create(
        line=formation_plant.line,
        actor=quality,
        name="prismatic 105 Ah grading",
        bins=[
            {"code": "A", "limits": {"capacity_ah": {"min": 106.0}, "ocv_mv": {"min": 3500.0}}},
            {"code": "B", "limits": {"capacity_ah": {"min": 100.0}}},
        ],
        k_abs_limit_mv_per_day=0.5,
        k_lot_z_limit=6.0,
    )
    formation_services.grading_rules_activate(rule_set=rules, actor=quality, reason="line start")
    with django_capture_on_commit_callbacks(execute=True):
        formation_services.cells_grade(cell_ids=ids, actor=quality)
    assert RiskScore.objects.filter(unit__in=cells).count() == N_CELLS
    return cells


@pytest.fixture
def short(sim, formed) -> Unit:
    """The cell with the particle short."""
    [i] = [k for k, c in enumerate(sim.truth.latent_class) if c == "particle_short"]
    return formed[i]


@pytest.fixture
def auditor(db):
    return UserFactory(username="aud-risk", role="auditor")


@pytest.fixture
def mrb(db):
    return UserFactory(username="mrb-risk", role="mrb_member")


def login(client, user):
    client.force_login(user)


# --- reading pages -----------------------------------------------------------------------------


def text(fragment: str) -> str:
    """Visible text of an HTML fragment, whitespace folded."""
    inline = re.sub(r"</?a\b[^>]*>", "", fragment)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def section(page: str, testid: str) -> str:
    """The HTML of the element carrying ``data-testid=testid`` (up to its closing tag)."""
    start = page.index(f'data-testid="{testid}"')
    tag = page.rindex("<", 0, start)
    name = re.match(r"<(\w+)", page[tag:]).group(1)
    depth, pos = 0, tag
    for m in re.finditer(rf"<(/?){name}\b", page[tag:]):
        depth += -1 if m.group(1) else 1
        if depth == 0:
            pos = tag + m.end()
            break
    return page[tag : page.index(">", pos) + 1]


def svgs(fragment: str, css: str) -> list[ET.Element]:
    """The inline ``<svg class="... css ...">`` elements of a fragment, parsed."""
    out = []
    for m in re.finditer(r"<svg\b[^>]*>.*?</svg>", fragment, re.S):
        root = ET.fromstring(m.group(0))  # noqa: S314  our own renderer's output
        if css in root.get("class", "").split():
            out.append(root)
    return out


def of_class(root: ET.Element, tag: str, css: str) -> list[ET.Element]:
    """The ``tag`` elements of an SVG that carry the class ``css``."""
    return [e for e in root.iter(f"{SVG}{tag}") if css in (e.get("class") or "").split()]


def curves_of(root: ET.Element) -> dict[int, ET.Element]:
    """The curves of a chart by step."""
    return {int(p.get("data-step")): p for p in of_class(root, "path", "curve")}


def path_points(d: str) -> np.ndarray:
    return np.array([[float(v) for v in p.split()] for p in re.split(r"[ML]", d) if p.strip()])


def cell_page(client, serial: str):
    return client.get(f"/risk/cells/{serial}/")


def plot_of(root: ET.Element) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """The plot area (x, y, width, height in px) and the axes' ranges of a chart."""
    box = tuple(float(v) for v in root.get("data-plot").split())
    xr = tuple(float(v) for v in root.get("data-x-range").split())
    yr = tuple(float(v) for v in root.get("data-y-range").split())
    return box, xr, yr


def to_data(points: np.ndarray, root: ET.Element) -> np.ndarray:
    """Pixel coordinates of a chart back to data units."""
    (left, top, pw, ph), (x0, x1), (y0, y1) = plot_of(root)
    x = x0 + (points[:, 0] - left) / pw * (x1 - x0)
    y = y0 + (top + ph - points[:, 1]) / ph * (y1 - y0)
    return np.column_stack([x, y])


def later(version: str, *, minor: int = 0, patch: int = 0) -> str:
    """A version after ``version`` (``major.minor.patch``)."""
    major, mi, pa = (int(p) for p in version.split("."))
    return f"{major}.{mi + minor}.0" if minor else f"{major}.{mi}.{pa + patch}"


def model_copy(actor, tmp_path, *, version: str, rule: dict | None = None) -> RiskModel:
    """The committed model registered again under another version (the same graph), with
    ``rule`` as every product's quarantine rule when given."""
    manifest_path, onnx_path = default_model_paths()
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = version
    manifest["file"] = f"thermal-risk-{version}.onnx"
    if rule is not None:
        manifest["thresholds"] = {product: dict(rule) for product in manifest["thresholds"]}
    out = tmp_path / "incoming"
    out.mkdir(exist_ok=True)
    new_manifest = out / f"thermal-risk-{version}.manifest.json"
    new_manifest.write_text(json.dumps(manifest))
    shutil.copyfile(onnx_path, out / manifest["file"])
    return services.model_register(manifest_path=new_manifest, actor=actor)


# --- the cell page -----------------------------------------------------------------------------


def test_the_cell_page_draws_the_formation_curves_from_the_stored_samples(client, short, quality):
    login(client, quality)

    response = cell_page(client, short.serial)

    assert response.status_code == 200
    page = response.content.decode()
    run = CyclerRun.objects.get(unit=short)
    steps = {s.sequence: s for s in StepResult.objects.filter(run=run)}
    [voltage] = svgs(section(page, "voltage-curves"), "voltage-chart")
    drawn = curves_of(voltage)
    # every charge and discharge step, nothing else (rests, pulses)
    kinds = {k: p.get("data-kind") for k, p in drawn.items()}
    assert kinds == {1: "charge", 2: "charge", 4: "discharge", 6: "charge", 10: "charge"} | {
        14: "discharge"
    }
    (left, top, pw, ph), _, _ = plot_of(voltage)
    for k, p in drawn.items():
        pixels = path_points(p.get("d"))
        assert len(pixels) == int(p.get("data-points")) >= 10, k
        assert (pixels[:, 0] >= left - 0.01).all() and (pixels[:, 0] <= left + pw + 0.01).all()
        assert (pixels[:, 1] >= top - 0.01).all() and (pixels[:, 1] <= top + ph + 0.01).all()
        # read back: the step's capacity counter from 0 to its capacity, and its end voltage
        data = to_data(pixels, voltage)
        assert data[0, 0] == pytest.approx(0.0, abs=0.02 * steps[k].capacity_ah + 0.05)
        assert data[-1, 0] == pytest.approx(steps[k].capacity_ah, rel=0.01)
        assert data[-1, 1] == pytest.approx(steps[k].end_voltage_v, abs=0.01)
    # dQ/dV of the CC charges and discharges that moved most of the capacity
    [dqdv] = svgs(section(page, "dqdv-curves"), "dqdv-chart")
    assert sorted(curves_of(dqdv)) == [1, 4, 10]
    features = CellFeatures.objects.get(unit=short)
    markers = [float(m.get("data-x")) for m in of_class(dqdv, "line", "marker")]
    peaks = [getattr(features, f"ica_peak{j}_v") for j in (1, 2, 3)]
    assert markers == pytest.approx(peaks, abs=1e-4)
    # the discharge dQ/dV peaks where the features put them (same samples, same smoothing)
    discharge = to_data(path_points(curves_of(dqdv)[4].get("d")), dqdv)
    v_at_max = discharge[np.argmax(discharge[:, 1]), 0]
    assert min(abs(v_at_max - m) for m in markers) < 0.01
    assert "from the fixed-size copy" not in page


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_curve_whose_sample_file_is_damaged_is_drawn_from_the_stored_copy(
    client, short, quality, damage
):
    step = StepResult.objects.get(run__unit=short, sequence=4)  # the capacity discharge
    path = Path(step.curve.blob.path)
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-16] + bytes(16))
    login(client, quality)

    response = cell_page(client, short.serial)

    assert response.status_code == 200
    page = response.content.decode()
    [voltage] = svgs(section(page, "voltage-curves"), "voltage-chart")
    drawn = curves_of(voltage)
    assert drawn[4].get("data-points") == str(step.curve.resampled_points)
    assert int(drawn[1].get("data-points")) > step.curve.resampled_points  # full resolution
    data = to_data(path_points(drawn[4].get("d")), voltage)
    assert data[-1, 1] == pytest.approx(step.end_voltage_v, abs=0.01)
    assert "Some curves are drawn from the fixed-size copy kept in the database" in text(page)


def test_the_cell_page_compares_each_feature_with_the_lot(client, short, formed, quality):
    login(client, quality)

    page = cell_page(client, short.serial).content.decode()

    lot = section(page, "lot-features")
    assert f'lot <span class="mono">{LOT}</span>, {N_CELLS} cells' in lot
    values = np.array(
        CellFeatures.objects.filter(lot=LOT).values_list("k_value_mv_per_day", flat=True)
    )
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    own = CellFeatures.objects.get(unit=short)
    row = re.search(r'<tr data-feature="k_value_mv_per_day" class="far">(.*?)</tr>', lot, re.S)
    assert row is not None  # beyond 3 robust sigmas: marked
    cells_ = [text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]
    assert cells_[:7] == [
        "K-value (mV/day)",
        f"{own.k_value_mv_per_day:.4f}",
        f"{median:.4f}",
        f"{mad:.5f}",
        f"{(own.k_value_mv_per_day - median) / (1.4826 * mad):.2f}",
        f"{own.k_value_z_lot:.2f}",  # the lot has not changed since grading
        str(N_CELLS),
    ]
    [strip] = svgs(row.group(1), "strip")
    assert strip.get("data-n") == str(N_CELLS)
    [mark] = of_class(strip, "path", "cell-mark")
    assert float(mark.get("data-value")) == pytest.approx(own.k_value_mv_per_day, rel=1e-5)
    # the cell's mark is right of the lot's box (it self-discharges fastest)
    [box] = of_class(strip, "rect", "box")
    mark_x = path_points(mark.get("d").rstrip("z"))[0, 0]
    assert mark_x > float(box.get("x")) + float(box.get("width"))
    # an ordinary feature of the same cell is not marked
    assert '<tr data-feature="q_discharge_ah">' in lot


def test_the_aging_log_shows_the_k_value_fitted_as_the_features_fit_it(client, short, quality):
    login(client, quality)

    page = cell_page(client, short.serial).content.decode()

    readings = list(AgingReading.objects.filter(unit=short).order_by("measured_at"))
    days = np.array([(r.measured_at - readings[0].measured_at).total_seconds() for r in readings])
    days /= 86400.0
    ocv = np.array([r.ocv_mv for r in readings])
    slope, intercept = np.polyfit(days, ocv, 1)
    features = CellFeatures.objects.get(unit=short)
    assert -slope == pytest.approx(features.k_value_mv_per_day, rel=1e-6)
    [chart] = svgs(section(page, "aging-chart"), "aging-chart")
    [line] = of_class(chart, "line", "k-fit")
    assert float(line.get("data-k-mv-per-day")) == pytest.approx(-slope, rel=1e-5)
    assert float(line.get("data-se-mv-per-day")) == pytest.approx(
        features.k_value_se_mv_per_day, rel=1e-4
    )
    assert float(line.get("data-intercept-mv")) == pytest.approx(intercept, abs=1e-3)
    # the drawn line is that fit: both ends read back onto it
    ends = [(line.get("x1"), line.get("y1")), (line.get("x2"), line.get("y2"))]
    ends = to_data(np.array(ends, dtype=float), chart)
    assert ends[:, 1] == pytest.approx(intercept + slope * ends[:, 0], abs=0.01)
    centres = [(c.get("cx"), c.get("cy")) for c in of_class(chart, "circle", "reading")]
    dots = to_data(np.array(centres, dtype=float), chart)
    assert dots[:, 0] == pytest.approx(days, abs=0.01)
    assert dots[:, 1] == pytest.approx(ocv, abs=0.01)
    facts = text(section(page, "k-value"))
    assert facts == (
        f"{features.k_value_mv_per_day:.4f} mV/day ± "
        f"{features.k_value_se_mv_per_day:.4f} (standard error)"
    )
    assert 'data-testid="k-stale"' not in page


def test_readings_after_the_features_were_computed_are_fitted_and_flagged(
    client, sim, sim_curves, cells, formation_plant, quality
):
    send(tray_envelope(sim, 0))
    send(step_envelope(sim, sim_curves, 0))
    send(aging_envelope(sim, 0, range(0, 6)))
    formation_services.features_compute(cell_ids=[cells[0].pk])
    stored = CellFeatures.objects.get(unit=cells[0]).k_value_mv_per_day
    send(aging_envelope(sim, 0, range(6, 15)))
    login(client, quality)

    page = cell_page(client, cells[0].serial).content.decode()

    log = sim.ocv_log(0)
    expected = fx.k_value((log.at_s - log.at_s[0]) / 86400.0, log.ocv_v * 1e3)
    [chart] = svgs(section(page, "aging-chart"), "aging-chart")
    assert float(chart.get("data-k-mv-per-day")) == pytest.approx(expected.k_mv_per_day, rel=1e-4)
    assert abs(stored - expected.k_mv_per_day) > 1e-4
    assert f"({stored:.4f} mV/day) was computed before the latest readings" in text(
        section(page, "k-stale")
    )
    assert 'data-testid="no-risk"' in page  # graded and scored later


def test_the_cell_page_shows_the_latest_score_its_parts_and_every_score(
    client, short, risk_model, quality, tmp_path
):
    first = RiskScore.objects.get(unit=short)
    strict = model_copy(
        quality,
        tmp_path,
        version=later(risk_model.version, patch=1),
        rule={"mode": "probability", "risk_threshold": 0.9},
    )
    services.model_approve(model=strict, actor=quality, reason="probability rule 0.9 reviewed")
    services.model_activate(model=strict, actor=quality, reason="plant decision Q4")
    [second] = services.cells_score(cell_ids=[short.pk], actor=quality)
    login(client, quality)

    page = cell_page(client, short.serial).content.decode()

    latest = section(page, "latest-score")
    assert second.risk == pytest.approx(first.risk)  # the same graph
    assert f"Risk {second.risk:.6f}" in text(latest)
    assert f"Supervised part {second.supervised_p:.6f}" in text(latest)
    assert f"Outlier part {second.outlier_score:.2f}" in text(latest)
    assert text(section(page, "threshold")) == "0.900000 (probability, product default)"
    assert text(section(page, "quarantined")) == "no"  # 0.74 is below 0.9
    assert text(section(page, "model-version")) == f"thermal-risk {strict.version} Active"
    assert "UTC by qe-risk" in text(latest)
    assert text(section(page, "baseline")).startswith(f"{second.baseline_score:.2f}")
    for flag in second.baseline_flags:
        assert f'<span class="flag">{flag}</span>' in latest
    assert re.findall(r"<li>(.*?)</li>", section(page, "reasons")) == [
        html.escape(r) for r in second.reasons
    ]
    history = section(page, "score-history")
    rows = re.findall(r'<tr data-score="(\d+)"( class="q-row")?>', history)
    assert rows == [(str(second.pk), ""), (str(first.pk), ' class="q-row"')]
    versions = [text(v) for v in re.findall(r'<td class="mono">(.*?)</td>', history)]
    assert versions == [strict.version, risk_model.version]
    scored = section(page, "scored-features")
    assert 'data-feature="k_value_z"' in scored
    assert f"{second.features['k_value_z']:+.2f}" in scored


def test_a_cell_with_no_records_renders_its_no_data_states(client, thread, quality):
    login(client, quality)

    response = cell_page(client, cell_serial(16))

    assert response.status_code == 200
    page = response.content.decode()
    for testid in ("no-formation", "no-features", "no-aging", "no-risk", "no-score"):
        assert f'data-testid="{testid}"' in page, testid
    assert "<svg" not in section(page, "formation")
    assert text(section(page, "grade")) == "not graded"
    assert f'href="/trace/?serial={cell_serial(16)}"' in page


@pytest.mark.parametrize(
    "serial",
    ["P126119999999", "PK2611000001", "CC-260303-001", "(01)0426"],
    ids=["unknown", "a-pack", "a-coil", "malformed-gs1"],
)
def test_a_serial_that_is_not_a_known_cell_is_404(client, thread, quality, serial):
    login(client, quality)

    assert cell_page(client, serial).status_code == 404


def test_the_pages_need_a_login(client, thread):
    for url in ("/risk/", f"/risk/cells/{cell_serial(1)}/", "/risk/returns/new/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next=")


def test_the_cell_page_reads_a_fixed_number_of_queries(
    client, formed, short, quality, django_assert_max_num_queries
):
    login(client, quality)
    cell_page(client, short.serial)  # sessions, permissions and content types cached

    with django_assert_max_num_queries(14):
        assert cell_page(client, short.serial).status_code == 200


def test_the_trace_page_links_cells_to_their_cell_page(client, thread, quality):
    login(client, quality)

    cell = client.get("/trace/", {"serial": cell_serial(3)}).content.decode()
    vehicle = client.get("/trace/", {"serial": VINS[0]}).content.decode()

    assert re.findall(r'<a href="([^"]+)" data-testid="cell-page-link">', cell) == [
        f"/risk/cells/{cell_serial(3)}/"
    ]
    links = re.findall(r'class="cell-page" href="([^"]+)"', section(vehicle, "upstream"))
    assert links == [f"/risk/cells/{cell_serial(n)}/" for n in range(1, 7)]
    assert 'data-testid="cell-page-link">Formation' not in vehicle  # the header: vehicles not


# --- the risk page -----------------------------------------------------------------------------


def test_the_risk_page_draws_each_lots_scores_against_the_threshold(
    client, formed, risk_model, quality
):
    login(client, quality)

    response = client.get("/risk/")

    assert response.status_code == 200
    page = response.content.decode()
    scores = list(RiskScore.objects.filter(unit__in=formed))
    [hist] = svgs(section(page, "distribution"), "risk-hist")
    assert hist.get("data-lot") == LOT
    assert hist.get("data-cells") == str(N_CELLS)
    quarantined = sum(s.quarantined for s in scores)
    assert 0 < quarantined < N_CELLS
    assert hist.get("data-quarantined") == str(quarantined)
    bars = of_class(hist, "rect", "bar")
    assert sum(int(b.get("data-count")) for b in bars) == N_CELLS
    # the stacked parts at or above the threshold are the quarantined cells
    hot = of_class(hist, "rect", "hot")
    assert sum(int(b.get("data-count")) for b in hot) == quarantined
    [line] = of_class(hist, "line", "threshold")
    assert float(line.get("data-threshold")) == pytest.approx(
        risk_model.thresholds["default"]["risk_threshold"], rel=1e-5
    )
    active = f"Active model: thermal-risk {risk_model.version}."
    assert text(section(page, "active-model")) == active


def test_the_quarantine_list_holds_the_cells_whose_latest_score_quarantined_them(
    client, formed, short, risk_model, quality, tmp_path
):
    login(client, quality)
    held = RiskScore.objects.filter(unit__in=formed, quarantined=True).order_by("-risk")

    page = client.get("/risk/").content.decode()

    listed = re.findall(r'<tr data-cell="([^"]+)">', section(page, "quarantine"))
    assert listed == [s.unit.serial for s in held]
    assert listed[0] == short.serial  # the riskiest first
    assert f'href="/risk/cells/{short.serial}/"' in section(page, "quarantine")
    short.refresh_from_db()
    row = re.search(rf'<tr data-cell="{short.serial}">(.*?)</tr>', page, re.S).group(1)
    assert text(section(row, "status")) == short.get_status_display() == "On hold"

    # When: a model with a probability rule of 0.9 scores the lot again.
    strict = model_copy(
        quality,
        tmp_path,
        version=later(risk_model.version, patch=1),
        rule={"mode": "probability", "risk_threshold": 0.9},
    )
    services.model_approve(model=strict, actor=quality, reason="probability rule 0.9 reviewed")
    services.model_activate(model=strict, actor=quality, reason="plant decision Q4")
    services.cells_score(cell_ids=[c.pk for c in formed], actor=quality)

    # Then: no cell's latest score quarantines it; the earlier scores stay in its history.
    page = client.get("/risk/").content.decode()
    assert 'data-testid="no-quarantine"' in page
    assert "Quarantine (0)" in text(page)
    assert RiskScore.objects.filter(unit=short, quarantined=True).count() == 1


def test_the_risk_page_lists_field_returns_newest_first(client, thread, quality):
    first = services.field_return_record(
        returned_on=date(2026, 10, 30),
        failure_mode=FailureMode.CAPACITY_FADE,
        pack_serial="PK2611000002",
        actor=quality,
    )
    second = services.field_return_record(
        returned_on=date(2026, 11, 4),
        failure_mode=FailureMode.VENTING,
        cell_serial=cell_serial(8),
        pack_serial="PK2611000002",
        analysis="Vent opened on cell 8 after 14 months; CT shows a particle at the tab.",
        actor=quality,
    )
    login(client, quality)

    page = client.get("/risk/").content.decode()

    returns = section(page, "returns")
    listed = re.findall(r'<tr data-return="([^"]+)" data-level="(\w+)">', returns)
    assert listed == [(second.number, "cell"), (first.number, "pack")]
    row = re.search(rf'<tr data-return="{second.number}".*?</tr>', returns, re.S).group(0)
    assert f'href="/risk/cells/{cell_serial(8)}/"' in row
    assert text(row) == (
        f"{second.number} 2026-11-04 Cell Venting — PK2611000002 {cell_serial(8)} 1 "
        "Vent opened on cell 8 after 14 months; CT shows a particle at the tab. "
        f"qe-risk, {timezone.localtime(second.entered_at):%Y-%m-%d %H:%M}"
    )
    pack_row = re.search(rf'<tr data-return="{first.number}".*?</tr>', returns, re.S).group(0)
    assert re.findall(r'<td class="num">(\d+)</td>', pack_row) == ["6"]  # the pack's cells
    assert 'data-testid="return-new"' in returns


def test_an_auditor_reads_the_risk_page_without_forms(
    client, formed, risk_model, auditor, tmp_path, quality
):
    # a validated model someone could approve
    model_copy(quality, tmp_path, version=later(risk_model.version, minor=1))
    login(client, auditor)

    page = client.get("/risk/").content.decode()

    for testid in ("returns-read-only", "registry-read-only"):
        assert f'data-testid="{testid}"' in page
    for testid in ("return-new", "model-form", "retrain-form"):
        assert f'data-testid="{testid}"' not in page
    assert '<form method="post"' not in section(page, "registry")
    assert 'data-state="validated"' in page


@pytest.mark.parametrize("days", ["0", "abc", "9999"])
def test_a_bad_period_answers_400_with_the_message(client, quality, days):
    login(client, quality)

    response = client.get("/risk/", {"days": days})

    assert response.status_code == 400
    assert text(section(response.content.decode(), "days-errors")) == (
        "Days is a whole number from 1 to 730."
    )


def test_the_risk_page_reads_a_fixed_number_of_queries(
    client, formed, risk_model, quality, tmp_path, django_assert_max_num_queries
):
    for minor in (1, 2):
        model_copy(quality, tmp_path, version=later(risk_model.version, minor=minor))
    login(client, quality)
    client.get("/risk/")

    with django_assert_max_num_queries(14):
        assert client.get("/risk/").status_code == 200


# --- the field-return form ---------------------------------------------------------------------


def return_form(**values) -> dict:
    data = {
        "returned_on": "2026-11-02",
        "failure_mode": FailureMode.THERMAL_EVENT,
        "vin": "",
        "pack_serial": "",
        "cell_serial": "",
        "analysis": "",
    }
    return data | values


def test_a_pack_level_return_is_recorded_through_the_form(client, thread, quality):
    login(client, quality)
    form = client.get("/risk/returns/new/")
    assert form.status_code == 200
    assert f'value="{timezone.localdate():%Y-%m-%d}"' in section(
        form.content.decode(), "return-form"
    )

    response = client.post(
        "/risk/returns/new/",
        return_form(
            vin=VINS[0].lower(),
            pack_serial="PK2611000001",
            analysis="Pack vented at 62 % SOC while parked; cell not yet identified.",
        ),
    )

    assert response.status_code == 302
    assert response["Location"] == "/risk/#returns"
    [fr] = FieldReturn.objects.all()
    assert (fr.number, fr.level, fr.vin, fr.cell) == (
        "FR-2026-00001",
        ReturnLevel.PACK,
        VINS[0],
        None,
    )
    assert fr.pack.serial == "PK2611000001"
    assert fr.entered_by == quality
    labels = FieldReturnLabel.objects.filter(field_return=fr)
    assert sorted(labels.values_list("unit__serial", flat=True)) == [
        cell_serial(n) for n in range(1, 7)
    ]
    assert set(labels.values_list("weight", flat=True)) == {1 / 6}
    page = client.get(response["Location"]).content.decode()
    assert text(section(page, "messages")) == (
        "Field return FR-2026-00001 recorded: pack-level, the 6 cells of pack PK2611000001 "
        "labelled 1/6."
    )


def test_a_cell_level_return_by_an_mrb_member_labels_the_cell(client, thread, mrb):
    login(client, mrb)

    response = client.post(
        "/risk/returns/new/",
        return_form(
            returned_on="2026-11-04",
            failure_mode=FailureMode.VENTING,
            cell_serial=cell_serial(8),
        ),
        follow=True,
    )

    assert response.status_code == 200
    [fr] = FieldReturn.objects.all()
    # The pack the genealogy put the cell in.
    assert (fr.level, fr.cell.serial, fr.pack.serial) == ("cell", cell_serial(8), "PK2611000002")
    assert list(fr.labels.values_list("unit__serial", "weight")) == [(cell_serial(8), 1.0)]
    assert f"recorded: cell-level, cell {cell_serial(8)} labelled." in text(
        section(response.content.decode(), "messages")
    )


@pytest.mark.parametrize(
    ("values", "status", "field", "message"),
    [
        ({"cell_serial": "P126119999999"}, 404, "cell_serial", "No cell P126119999999."),
        (
            {"pack_serial": "PK2611000001", "cell_serial": cell_serial(16)},
            409,
            "cell_serial",
            f"Cell {cell_serial(16)} is not in pack PK2611000001.",
        ),
        ({"vin": "WVGZZZ"}, 400, "vin", "A VIN has 17 characters; 'WVGZZZ' has 6."),
        ({}, 400, "vin", "A return names a VIN, a pack or a cell."),
        (
            {"pack_serial": "PK2611000001", "returned_on": "2999-01-01"},
            400,
            "returned_on",
            "A return cannot be dated in the future.",
        ),
        (
            {"pack_serial": "PK2611000001", "returned_on": "02/11/2026"},
            400,
            "returned_on",
            "Give a date as YYYY-MM-DD.",
        ),
        (
            {"pack_serial": "PK2611000001", "failure_mode": ""},
            400,
            "failure_mode",
            "Choose the failure mode.",
        ),
        (
            {"pack_serial": "PK2611000001", "failure_mode": "exploded"},
            400,
            "failure_mode",
            "exploded is not a failure mode.",
        ),
        ({"pack_serial": "PK2611999999"}, 404, "pack_serial", "No pack PK2611999999."),
    ],
    ids=[
        "unknown-cell",
        "cell-not-in-pack",
        "short-vin",
        "nothing-named",
        "future-date",
        "bad-date",
        "no-failure-mode",
        "unknown-failure-mode",
        "unknown-pack",
    ],
)
def test_a_refused_return_is_shown_under_its_field_and_writes_nothing(
    client, thread, quality, values, status, field, message
):
    login(client, quality)

    response = client.post("/risk/returns/new/", return_form(**values))

    assert response.status_code == status
    page = response.content.decode()
    assert text(section(page, f"{field}-errors")) == message
    assert 'data-testid="return-error"' not in page  # nothing that is not under a field
    assert FieldReturn.objects.count() == 0
    assert FieldReturnLabel.objects.count() == 0


@pytest.mark.parametrize("who", ["auditor", "operator"])
def test_a_user_without_the_permission_cannot_record_a_return(client, thread, request, who):
    user = request.getfixturevalue(who)
    login(client, user)

    form = client.get("/risk/returns/new/")
    response = client.post("/risk/returns/new/", return_form(pack_serial="PK2611000001"))

    assert form.status_code == response.status_code == 403
    for answer in (form, response):
        page = answer.content.decode()
        assert 'data-testid="return-form"' not in page
        assert "needs the permission risk.add_fieldreturn" in text(section(page, "return-error"))
    assert FieldReturn.objects.count() == 0


# --- the model registry ------------------------------------------------------------------------


def test_a_quality_engineer_approves_and_activates_a_model_on_the_page(
    client, risk_model, quality, tmp_path
):
    challenger = model_copy(quality, tmp_path, version=later(risk_model.version, minor=1))
    login(client, quality)
    page = client.get("/risk/").content.decode()
    card = section(page, "registry")
    assert f'formaction="/risk/models/{challenger.pk}/approve/"' in card
    assert f'formaction="/risk/models/{risk_model.pk}/' not in card  # the active one: none

    approved = client.post(
        f"/risk/models/{challenger.pk}/approve/",
        {f"model-{challenger.pk}-reason": "Hold-out comparison reviewed with MRB"},
    )

    assert approved.status_code == 302
    assert approved["Location"] == f"/risk/#model-{challenger.pk}"
    challenger.refresh_from_db()
    assert (challenger.state, challenger.approved_by) == (ModelState.APPROVED, quality)
    assert challenger.history.first().history_change_reason == (
        "approved: Hold-out comparison reviewed with MRB"
    )

    activated = client.post(
        f"/risk/models/{challenger.pk}/activate/",
        {f"model-{challenger.pk}-reason": f"Plant go-live of {challenger.version}"},
        headers=HTMX,
    )

    assert activated.status_code == 200
    assert activated.templates[0].name == "risk/partials/registry.html"
    fragment = activated.content.decode()
    states = dict(re.findall(r'data-version="([^"]+)" data-state="(\w+)"', fragment))
    assert states == {challenger.version: "active", risk_model.version: "retired"}
    risk_model.refresh_from_db()
    assert risk_model.state == ModelState.RETIRED


def test_a_command_without_a_reason_is_refused_under_the_reason(
    client, risk_model, quality, tmp_path
):
    challenger = model_copy(quality, tmp_path, version=later(risk_model.version, minor=1))
    login(client, quality)

    response = client.post(
        f"/risk/models/{challenger.pk}/approve/", {f"model-{challenger.pk}-reason": "  "}
    )

    assert response.status_code == 400
    card = section(response.content.decode(), "registry")
    card = card[card.index(f'id="model-{challenger.pk}"') :]
    assert text(section(card, "reason-errors")) == "An approval needs a reason."
    challenger.refresh_from_db()
    assert challenger.state == ModelState.VALIDATED
    assert challenger.approved_at is None


def test_approving_the_active_model_is_refused_with_the_state(client, risk_model, quality):
    login(client, quality)

    response = client.post(
        f"/risk/models/{risk_model.pk}/approve/",
        {f"model-{risk_model.pk}-reason": "again"},
        headers=HTMX,
    )

    assert response.status_code == 409
    assert text(section(response.content.decode(), "model-error")) == (
        f"state: Only a validated model can be approved; thermal-risk {risk_model.version} "
        "is Active."
    )
    risk_model.refresh_from_db()
    assert risk_model.state == ModelState.ACTIVE


def test_an_operator_cannot_approve_a_model(client, risk_model, operator, quality, tmp_path):
    challenger = model_copy(quality, tmp_path, version=later(risk_model.version, minor=1))
    login(client, operator)

    response = client.post(
        f"/risk/models/{challenger.pk}/approve/",
        {f"model-{challenger.pk}-reason": "looks fine to me"},
    )

    assert response.status_code == 403
    page = response.content.decode()
    assert text(section(page, "registry-error")) == (
        "Approving, activating or retiring a risk model needs the permission "
        "risk.approve_riskmodel (quality engineers)."
    )
    assert 'data-testid="model-form"' not in page
    challenger.refresh_from_db()
    assert (challenger.state, challenger.approved_at) == (ModelState.VALIDATED, None)
    assert challenger.history.count() == 2  # registered, validated: nothing since


def test_an_unknown_model_is_404(client, risk_model, quality):
    login(client, quality)

    response = client.post(f"/risk/models/{risk_model.pk + 99}/approve/", {})

    assert response.status_code == 404


# --- retraining --------------------------------------------------------------------------------


def test_retrain_now_enqueues_a_run_after_commit(
    client, formed, quality, django_capture_on_commit_callbacks
):
    login(client, quality)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post("/risk/retrain/")

    assert response.status_code == 302
    assert response["Location"] == "/risk/#retrain"
    assert len(callbacks) == 1
    [run] = RetrainRun.objects.all()
    assert (run.requested_by, run.status) == (quality, RetrainStatus.TOO_FEW_LABELS)
    page = client.get("/risk/").content.decode()
    runs = section(page, "retrain")
    assert f'<article class="run" id="run-{run.pk}" data-run="{run.pk}" ' in runs
    assert f"0 cells old enough to be labelled (of {N_CELLS} scored)" in text(runs)
    assert "Retraining started" in text(section(page, "messages"))


def test_an_operator_cannot_start_a_retraining(
    client, formed, operator, django_capture_on_commit_callbacks
):
    login(client, operator)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post("/risk/retrain/")

    assert response.status_code == 403
    assert callbacks == []
    assert RetrainRun.objects.count() == 0
    assert "needs the permission risk.approve_riskmodel" in text(
        section(response.content.decode(), "retrain-error")
    )


def test_a_retraining_run_shows_its_comparison_and_drift_and_its_challenger(
    client, plant, risk_model, quality
):
    from tests.risk.test_services import _history

    _history(risk_model, plant, n=1200, seed=7)
    run = services.retrain(actor=quality)
    assert run.status == RetrainStatus.DONE, run.detail
    login(client, quality)

    page = client.get("/risk/").content.decode()

    runs = section(page, "retrain")
    comparison = section(runs, "comparison")
    rows = re.findall(r'<tr class="(\w+)" data-score="\w+">(.*?)</tr>', comparison, re.S)
    assert [key for key, _ in rows] == ["challenger", "active", "baseline"]
    for key, row in rows:
        figures = run.comparison[key]
        cells_ = [text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        assert cells_[1:5] == [
            f"{figures['cells']:,}",
            f"{figures['bad_cells']:,}",
            f"{figures['auroc']:.3f}",
            f"{figures['average_precision']:.3f}",
        ]
        assert cells_[5:] == [
            v
            for rate in ("1pct", "2pct", "5pct")
            for v in (
                f"{figures[f'capture_at_{rate}'] * 100:.1f} %",
                f"{figures[f'false_quarantines_at_{rate}']:,.0f}",
            )
        ]
    per_class = section(comparison, "per-class")
    assert "thermal_event" in per_class and "good cells (false quarantines)" in per_class
    drift_row = r'<tr data-feature="(\w+)"><td class="mono">\w+</td><td>([\d.]+)</td>'
    drift = re.findall(drift_row, section(runs, "drift"))
    top = sorted(run.drift_psi.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    assert drift == [(name, f"{psi:.3f}") for name, psi in top]
    # the challenger's card names its run and offers approval, not activation
    card = page[page.index(f'id="model-{run.challenger_id}"') :]
    card = card[: card.index("</section>")]
    assert f"challenger of retraining run {run.pk}" in text(card)
    assert 'data-action="approve"' in card and 'data-action="activate"' not in card
