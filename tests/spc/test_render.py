"""Server-side SPC charts: what is drawn, byte-identical output, the formats, the refusals."""

import math
import re
import struct
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import matplotlib as mpl
import numpy as np
import pytest

from spc.engine import (
    DEFAULT_CUSUM,
    Monitor,
    MonitorConfig,
    capability,
    evaluate_attribute,
    evaluate_subgroups,
    phase1_attribute,
    phase1_individuals,
    standard_limits,
)
from spc.render import (
    SIGMA,
    ChartSignal,
    ControlChartData,
    CusumData,
    HistogramData,
    capability_histogram,
    control_chart,
    rule_label,
)

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Open-circuit voltage after 14 days of aging, 21700 cell: target 3620 mV, sigma 2 mV,
# specification 3605..3635 mV.
OCV_LIMITS = standard_limits("i_mr", centre=3620.0, sigma=2.0)
EN_DASH = "\N{EN DASH}"
TIMES = "\N{MULTIPLICATION SIGN}"
RULE_TEXT = re.compile(r"^(N[1-8]|CUSUM|EWMA)( (N[1-8]|CUSUM|EWMA))*$")


def svg_texts(svg: bytes) -> list[str]:
    root = ET.fromstring(svg)  # noqa: S314  our own renderer's output, not untrusted input
    return [element.text for element in root.iter(f"{SVG}text") if element.text]


def png_size(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])
    return width, height


OCV_VALUES = [
    3619.4, 3621.1, 3618.2, 3620.6, 3622.3, 3619.0, 3617.9, 3620.8, 3621.6, 3618.7,
    3620.2, 3619.3, 3628.9, 3621.0, 3619.8, 3620.4, 3621.7, 3620.9, 3622.1, 3621.3,
    3620.7, 3622.8, 3621.9, 3620.5, 3621.4, 3618.6, 3619.9, 3620.3, 3617.8, 3621.2,
    3619.5, 3620.1, 3618.9, 3621.8, 3619.2, 3620.0, 3618.4, 3622.0, 3619.7, 3620.6,
]  # fmt: skip
# What the engine finds in them (Nelson rules 1-8, rule 1 on the moving range, default CUSUM):
# the spike at index 12 (N1, both moving ranges around it, the CUSUM), nine points above the
# centre at 23 and 24 (N2), fourteen alternating points at 39 (N4).
OCV_SIGNALS = Monitor(MonitorConfig(OCV_LIMITS)).push_many(OCV_VALUES).signals


def ocv_chart(**changes) -> ControlChartData:
    """40 OCV readings of one aging rack with the engine's signals and the specification."""
    data = {
        "code": "OCV-AGE2",
        "name": "OCV after 14 d aging",
        "unit": "mV",
        "values": OCV_VALUES,
        "limits": OCV_LIMITS.to_dict(),
        "signals": [ChartSignal(s.index, s.rule, s.statistic) for s in OCV_SIGNALS],
        "lsl": 3605.0,
        "usl": 3635.0,
    }
    data.update(changes)
    return ControlChartData(**data)


# ---------------------------------------------------------------------- control chart


def test_svg_is_xml_with_title_limits_spec_and_rule_labels():
    svg = control_chart(ocv_chart())

    texts = svg_texts(svg)
    assert "OCV-AGE2 · OCV after 14 d aging (mV)" in texts
    # Limits of the individuals: 3620 ± 3 x 2; moving range: d2(2) 2 = 2.257, UCL 7.37.
    for label in ("UCL 3626.0", "CL 3620.0", "LCL 3614.0", "USL 3635.0", "LSL 3605.0"):
        assert label in texts
    assert "UCL 7.4" in texts
    assert "CL 2.3" in texts
    # One label per signalling point, the rules of one point together (N1 and the CUSUM at
    # index 12); the moving ranges' signals on their own panel.
    assert [(s.index, s.rule, s.statistic) for s in OCV_SIGNALS] == [
        (12, "nelson_1", "x"),
        (12, "nelson_1", "mr"),
        (12, "cusum", "cusum_up"),
        (13, "nelson_1", "mr"),
        (23, "nelson_2", "x"),
        (24, "nelson_2", "x"),
        (39, "nelson_4", "x"),
    ]
    labels = sorted(t for t in texts if RULE_TEXT.match(t))
    assert labels == ["N1", "N1", "N1 CUSUM", "N2", "N2", "N4"]
    # Points by their most severe kind: 12 (x), 12 and 13 (MR) beyond the limits; 23, 24, 39
    # by run rules; the CUSUM shares the marker of point 12.
    assert "beyond control limits (N1): 3" in texts
    assert f"run rule (N2{EN_DASH}N8): 3" in texts
    assert not any(t.startswith("drift detector") for t in texts)
    assert "Individual value (mV)" in texts
    assert "MR (mV)" in texts
    assert "Sample" in texts


def test_svg_names_the_chart_for_screen_readers():
    svg = control_chart(ocv_chart())

    root = ET.fromstring(svg)  # noqa: S314  our own renderer's output
    assert root.get("role") == "img"
    title = root.find(f"{SVG}title")
    assert title is not None
    assert title.text == (
        "OCV-AGE2 · OCV after 14 d aging (mV): Individuals and moving range (I-MR), 40 points, "
        f"7 signals (N1 {TIMES}3, N2 {TIMES}2, N4 {TIMES}1, CUSUM {TIMES}1)"
    )
    assert root.get("width") == "900pt"  # 1200 CSS px
    assert root.get("height") == "375pt"  # 500 CSS px


def test_same_input_gives_identical_bytes_in_every_format():
    for fmt in ("svg", "png", "pdf"):
        assert control_chart(ocv_chart(), fmt=fmt) == control_chart(ocv_chart(), fmt=fmt)
    data = HistogramData("OCV-AGE2", "OCV after 14 d aging", "mV", ocv_chart().values)
    assert capability_histogram(data) == capability_histogram(data)


def test_output_ignores_global_matplotlib_settings():
    expected = control_chart(ocv_chart())

    with mpl.rc_context({"lines.linewidth": 5.0, "font.size": 20.0, "svg.hashsalt": None}):
        changed = control_chart(ocv_chart())
        assert mpl.rcParams["lines.linewidth"] == 5.0  # the caller's settings are left alone

    assert changed == expected


def test_threads_draw_the_same_chart_as_one_thread():
    expected = control_chart(ocv_chart(), fmt="svg")

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: control_chart(ocv_chart(), fmt="svg"), range(8)))

    assert all(result == expected for result in results)


def test_svg_ids_differ_between_characteristics():
    ids = re.compile(rb'id="(p[0-9a-f]{10})"')

    first = set(ids.findall(control_chart(ocv_chart())))
    second = set(ids.findall(control_chart(ocv_chart(code="OCV-AGE1"))))

    assert first
    assert first.isdisjoint(second)


def test_png_has_the_signature_and_the_asked_size():
    default = control_chart(ocv_chart(), fmt="png")
    small = control_chart(ocv_chart(), fmt="png", width_px=800, height_px=420)

    assert default.startswith(PNG_SIGNATURE)
    assert png_size(default) == (1200, 500)
    assert png_size(small) == (800, 420)


def test_pdf_starts_with_the_pdf_header_and_has_no_creation_date():
    pdf = control_chart(ocv_chart(), fmt="pdf")

    assert pdf.startswith(b"%PDF-")
    assert b"/CreationDate" not in pdf
    assert b"(Celltrace SPC)" in pdf


def test_three_thousand_streamed_points_with_engine_signals():
    rng = np.random.default_rng(20260302)
    limits = phase1_individuals(rng.normal(3620.0, 2.0, 125)).limits
    values = rng.normal(3620.0, 2.0, 3000)
    values[2000:2300] += 3.0  # a 1.5 sigma shift: the CUSUM and the run rules fire
    values[500] += 10.0
    monitor = Monitor(MonitorConfig(limits, cusum=DEFAULT_CUSUM))
    result = monitor.push_many(values)
    start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    data = ControlChartData(
        code="OCV-AGE2",
        name="OCV after 14 d aging",
        unit="mV",
        values=values,
        limits=limits.to_dict(),
        times=[start + timedelta(seconds=20 * i) for i in range(3000)],
        signals=[(s.index, s.rule, s.statistic) for s in result.signals],
        lsl=3605.0,
        usl=3635.0,
        cusum=CusumData(
            h=DEFAULT_CUSUM.h,
            up=result.series["cusum_up"].value,
            down=result.series["cusum_down"].value,
        ),
    )

    svg = control_chart(data, tz=ZoneInfo("Europe/Berlin"))

    counts = Counter(rule_label(s.rule) for s in result.signals)
    assert counts["N1"] > 0
    assert counts["CUSUM"] > 0
    title = ET.fromstring(svg).find(f"{SVG}title").text  # noqa: S314  our own output
    assert f"3,000 points, {len(result.signals):,} signals" in title
    for label, count in counts.items():
        assert f"{label} {TIMES}{count}" in title
    texts = svg_texts(svg)
    assert "Measured at (Europe/Berlin)" in texts
    assert f"CUSUM ({SIGMA})" in texts
    assert "h = 3.34" in texts
    assert any(t.startswith("drift detector (CUSUM, EWMA): ") for t in texts)
    # Every signalling point keeps its marker; labels go where there is room (at most 60 per
    # panel, latest first), and each panel says how many points carry one.
    labelled = [t for t in texts if RULE_TEXT.match(t)]
    notes = [
        re.fullmatch(r"rule labels on (\d+) of ([\d,]+) signalling points \(latest first\)", t)
        for t in texts
    ]
    shown, total = zip(*[(int(m[1]), int(m[2].replace(",", ""))) for m in notes if m], strict=True)
    main_points = {s.index for s in result.signals if s.statistic != "mr"}
    mr_points = {s.index for s in result.signals if s.statistic == "mr"}
    assert total == (len(main_points), len(mr_points))
    assert sum(shown) == len(labelled)
    assert 0 < shown[0] <= 60
    assert 0 < shown[1] <= 60
    assert png_size(control_chart(data, fmt="png")) == (1200, 500)


def test_p_chart_limits_follow_each_sample_size():
    # Visual defects of tab welds per inspected lot; lots of 150..400 cells.
    sizes = [200, 180, 350, 400, 150, 260, 310, 220, 190, 380, 240, 160]
    defects = [4, 3, 8, 7, 2, 6, 5, 4, 19, 9, 5, 3]
    limits = standard_limits("p", centre=0.02, n=250)
    evaluation = evaluate_attribute(limits, defects, sizes)
    data = ControlChartData(
        code="WELD-VIS",
        name="Tab weld visual defects",
        unit="",
        values=[d / n for d, n in zip(defects, sizes, strict=True)],
        sizes=sizes,
        limits=limits.to_dict(),
        signals=[(s.index, s.rule, s.statistic) for s in evaluation.signals],
    )

    texts = svg_texts(control_chart(data))

    # The labels give the limits of the last sample (n = 160), not those at n = 250.
    ucl_last = 0.02 + 3 * math.sqrt(0.02 * 0.98 / 160)
    assert f"UCL {ucl_last:.3f}" in texts
    assert ucl_last == pytest.approx(0.0532, abs=1e-4)
    assert "CL 0.020" in texts
    assert "LCL" not in " ".join(texts)  # clipped at 0 for every sample: not drawn
    assert [s.index for s in evaluation.signals] == [8]
    assert [t for t in texts if RULE_TEXT.match(t)] == ["N1"]
    assert "Proportion nonconforming" in texts


def test_xbar_r_chart_draws_the_range_panel():
    # Coating mass per unit area, mg/cm², subgroups of 5 per coil.
    rng = np.random.default_rng(11)
    subgroups = rng.normal(21.4, 0.15, (25, 5))
    subgroups[17] += 0.5
    limits = standard_limits("xbar_r", centre=21.4, sigma=0.15, n=5)
    evaluation = evaluate_subgroups(limits, subgroups)
    means = subgroups.mean(axis=1)
    ranges = np.ptp(subgroups, axis=1)

    svg = control_chart(
        ControlChartData(
            code="COAT-MASS",
            name="Cathode coating mass",
            unit="mg/cm²",
            values=means,
            dispersion=ranges,
            limits=limits.to_dict(),
            signals=[(s.index, s.rule, s.statistic) for s in evaluation.signals],
        )
    )

    texts = svg_texts(svg)
    assert "Subgroup mean (mg/cm²)" in texts
    assert "Range (mg/cm²)" in texts
    assert "Subgroup" in texts
    assert f"UCL {21.4 + 3 * 0.15 / math.sqrt(5):.3f}" in texts
    assert any(s.index == 17 and s.rule == "nelson_1" for s in evaluation.signals)
    assert "N1" in [t.split(" ")[0] for t in texts if RULE_TEXT.match(t)]


def test_zero_defect_p_chart_shares_one_label_for_its_coinciding_lines():
    # Helium leak test of prismatic cans: no failure in 30 lots of 200, then one.
    limits = phase1_attribute("p", [0] * 30, [200] * 30).limits
    data = ControlChartData(
        code="HE-LEAK",
        name="Helium leak test failures",
        unit="",
        values=[0.0] * 29 + [1 / 200],
        sizes=[200] * 30,
        limits=limits.to_dict(),
        signals=[(29, "nelson_1", "p")],
    )

    texts = svg_texts(control_chart(data))

    assert limits.degenerate
    assert [t for t in texts if "CL" in t] == ["UCL = CL 0.000"]
    assert any("no variation in the baseline: limits on the centre line" in t for t in texts)
    assert [t for t in texts if RULE_TEXT.match(t)] == ["N1"]


def test_spec_limit_far_from_the_process_is_named_not_scaled_into_view():
    texts = svg_texts(control_chart(ocv_chart(usl=3700.0)))

    assert any("USL 3700.0 off scale (above)" in t for t in texts)
    assert "LSL 3605.0" in texts


def test_chart_without_limits_draws_the_points_as_a_run_chart():
    texts = svg_texts(control_chart(ocv_chart(limits=None, signals=[])))

    assert "Run chart · 40 points · no control limits yet" in " ".join(texts)
    assert not any(t.startswith(("UCL", "LCL")) for t in texts)


def test_no_points_draws_a_message():
    data = ocv_chart(values=[], signals=[])

    svg = control_chart(data)

    assert "No data points" in svg_texts(svg)
    assert control_chart(data, fmt="png").startswith(PNG_SIGNATURE)
    assert control_chart(data, fmt="pdf").startswith(b"%PDF-")


def test_nan_in_values_is_refused_naming_the_index():
    values = list(ocv_chart().values)
    values[2] = float("nan")

    with pytest.raises(ValueError, match=r"^values\[2\] is not a finite number \(nan\)$"):
        control_chart(ocv_chart(values=values))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dispersion": [1.0] * 38 + [float("inf")]}, r"dispersion\[38\] is not a finite number"),
        (
            {"cusum": CusumData(h=3.34, up=[0.0] * 5 + [math.nan] + [0.0] * 34)},
            r"cusum\.up\[5\] is not a finite number",
        ),
        ({"lsl": math.nan}, r"lsl must be a finite number"),
    ],
)
def test_nan_in_other_inputs_is_refused_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        control_chart(ocv_chart(**changes))


def test_sizes_with_nan_are_refused():
    limits = standard_limits("p", centre=0.02, n=250)
    data = ControlChartData(
        "WELD-VIS", "Tab weld visual defects", "", [0.02, 0.03], limits.to_dict(),
        sizes=[200, math.nan],
    )  # fmt: skip

    with pytest.raises(ValueError, match=r"^sizes\[1\] is not a finite number \(nan\)$"):
        control_chart(data)


def test_bad_times_are_refused():
    start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    times = [start + timedelta(minutes=i) for i in range(40)]
    naive = list(times)
    naive[3] = datetime(2026, 3, 2, 6, 3)  # noqa: DTZ001  the refused case
    backwards = list(times)
    backwards[10] = start

    with pytest.raises(ValueError, match=r"^times\[3\] has no timezone"):
        control_chart(ocv_chart(times=naive))
    with pytest.raises(ValueError, match=r"^times\[10\] .* is before times\[9\]"):
        control_chart(ocv_chart(times=backwards))
    with pytest.raises(ValueError, match=r"^times has 39 entries for 40 values$"):
        control_chart(ocv_chart(times=times[:39]))


@pytest.mark.parametrize(
    ("signals", "message"),
    [
        ([(40, "nelson_1", "x")], r"signals\[0\] index 40 is outside the 40 plotted points"),
        ([(3, "nelson_9", "x")], r"unknown rule code 'nelson_9'"),
        ([(3, "nelson_1", "r")], r"signals\[0\] is on 'r', which this chart does not plot"),
        ([(0, "nelson_1", "mr")], r"the first MR value is at index 1"),
        ([(3, "nelson_1")], r"signals\[0\] must be a ChartSignal or \(index, rule, statistic\)"),
    ],
)
def test_bad_signals_are_refused(signals, message):
    with pytest.raises(ValueError, match=message):
        control_chart(ocv_chart(signals=signals))


def test_inconsistent_chart_input_is_refused():
    xbar = standard_limits("xbar_r", centre=21.4, sigma=0.15, n=5).to_dict()
    p_varying = {**standard_limits("p", centre=0.02, n=250).to_dict(), "n": None}
    settings = dict(mpl.rcParams)

    with pytest.raises(ValueError, match=r"needs its R values: give dispersion"):
        control_chart(ocv_chart(limits=xbar, signals=[]))
    with pytest.raises(ValueError, match=r"dispersion has 40 MR values, expected 39"):
        control_chart(ocv_chart(dispersion=[1.0] * 40))
    with pytest.raises(ValueError, match=r"limits have no single size n: give sizes"):
        control_chart(ocv_chart(limits=p_varying, signals=[]))
    with pytest.raises(ValueError, match=r"sizes are for subgroup charts"):
        control_chart(ocv_chart(sizes=[1] * 40))
    with pytest.raises(ValueError, match=r"lsl \(3640.0\) must be below usl \(3635.0\)"):
        control_chart(ocv_chart(lsl=3640.0))
    with pytest.raises(ValueError, match=r"fmt must be one of svg, png, pdf, got 'jpg'"):
        control_chart(ocv_chart(), fmt="jpg")
    with pytest.raises(ValueError, match=r"width_px must be an int within 200..6000"):
        control_chart(ocv_chart(), width_px=50)
    with pytest.raises(ValueError, match=r"unknown limits format"):
        control_chart(ocv_chart(limits={**OCV_LIMITS.to_dict(), "format": 99}))
    # Refused before drawing: matplotlib's settings are untouched and the next chart draws.
    assert dict(mpl.rcParams) == settings
    assert control_chart(ocv_chart(), fmt="png").startswith(PNG_SIGNATURE)


def test_rule_labels_are_the_engine_codes_shortened():
    assert [rule_label(f"nelson_{n}") for n in range(1, 9)] == [f"N{n}" for n in range(1, 9)]
    assert rule_label("cusum") == "CUSUM"
    assert rule_label("ewma") == "EWMA"


# ---------------------------------------------------------------------- capability


def ocv_sample(size=125, seed=3):
    return np.random.default_rng(seed).normal(3620.0, 2.0, size)


def test_capability_histogram_shows_limits_and_the_engine_indices():
    values = ocv_sample()
    study = capability(values, lsl=3605.0, usl=3635.0)

    svg = capability_histogram(
        HistogramData("OCV-AGE2", "OCV after 14 d aging", "mV", values, capability=study)
    )

    texts = svg_texts(svg)
    assert "OCV-AGE2 · OCV after 14 d aging (mV)" in texts
    assert "LSL 3605.0" in texts
    assert "USL 3635.0" in texts
    assert "Target 3620.0" in texts  # the middle of the specification, as the study used
    for name in ("Cp", "Cpk", "Pp", "Ppk", "Cpm"):
        index = study.index(name)
        assert name in texts
        assert f"{index.value:.2f}" in texts
        assert f"{index.lower:.2f} {EN_DASH} {index.upper:.2f}" in texts
    assert "95% interval" in texts
    assert f"Anderson-Darling p = {study.normality.p_value:.3f} (normal)" in texts
    title = ET.fromstring(svg).find(f"{SVG}title").text  # noqa: S314  our own output
    assert title.startswith("OCV-AGE2 · OCV after 14 d aging (mV): capability histogram of 125")
    assert f"Cpk {study.index('Cpk').value:.2f}" in title


def test_capability_histogram_one_sided_and_non_normal():
    # K value (self-discharge), lognormal by nature, upper limit only.
    values = np.random.default_rng(5).lognormal(math.log(0.08), 0.35, 400)
    study = capability(values, usl=0.5)

    texts = svg_texts(
        capability_histogram(
            HistogramData("K-AGE", "Self-discharge K value", "mV/day", values, study)
        )
    )

    assert "Percentile method (lognormal):" in texts
    assert f"{study.nonnormal.index('Ppk').value:.2f}" in texts
    assert "Cp: needs both specification limits" in texts
    assert any(t.startswith("USL 0.500") for t in texts)


def test_capability_histogram_insufficient_data_draws_a_message():
    one = [3620.4]
    study = capability(one, lsl=3605.0, usl=3635.0)

    for values, capability_result in ((one, study), ([], None), ([], study)):
        svg = capability_histogram(
            HistogramData("OCV-AGE2", "OCV", "mV", values, capability=capability_result)
        )
        assert "Insufficient data" in svg_texts(svg)
    texts = svg_texts(capability_histogram(HistogramData("OCV-AGE2", "OCV", "mV", one, study)))
    assert "capability needs at least 2" in texts
    assert "values, got 1" in texts
    png = capability_histogram(HistogramData("OCV-AGE2", "OCV", "mV", [], None), fmt="png")
    assert png.startswith(PNG_SIGNATURE)
    assert png_size(png) == (1200, 500)


def test_capability_histogram_without_variation_draws_a_message():
    values = [3620.0] * 30
    study = capability(values, lsl=3605.0, usl=3635.0)

    texts = svg_texts(capability_histogram(HistogramData("OCV-AGE2", "OCV", "mV", values, study)))

    assert "No variation" in texts
    assert study.status == "no_variation"


def test_capability_histogram_refusals():
    values = list(ocv_sample(20))
    study = capability(values, lsl=3605.0, usl=3635.0)
    with_nan = [*values[:7], math.nan, *values[8:]]

    with pytest.raises(ValueError, match=r"^values\[7\] is not a finite number \(nan\)$"):
        capability_histogram(HistogramData("OCV-AGE2", "OCV", "mV", with_nan))
    with pytest.raises(ValueError, match=r"lsl 3600.0 differs from the capability study's lsl"):
        capability_histogram(HistogramData("OCV-AGE2", "OCV", "mV", values, study, lsl=3600.0))
    with pytest.raises(ValueError, match=r"capability must be Capability.to_dict\(\)"):
        capability_histogram(HistogramData("OCV-AGE2", "OCV", "mV", values, {"cp": 1.3}))
    with pytest.raises(ValueError, match=r"bins must be an int within 1..500"):
        capability_histogram(HistogramData("OCV-AGE2", "OCV", "mV", values, bins=0))
