"""The SPC web pages through Django's test client: the plant overview (states, sorting,
filters, query count), a characteristic's page (chart with rule labels, limits, capability,
ARLs, alarms), the chart panel's refresh, the downloads, and the two commands the page
posts (acknowledge an alarm, approve limits) with their refusals.

The plant is the 21700 line of ``tests/spc/conftest.py``: electrolyte fill mass 5.00 g
+-1 % (CC) with limits approved from 125 in-control values and then 100 values whose last
40 are 1.5 sigma high (in spec): the CUSUM and six run rules raise seven alarms.
"""

from __future__ import annotations

import html
import re
import struct
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from qms.choices import SpecialCharacteristic
from qms.models import Characteristic
from spc import queries, views
from spc.models import ControlLimits, SpcAlarm
from spc.services import (
    alarm_acknowledge,
    chart_config_get_or_create,
    chart_config_update,
    limits_approve,
    limits_propose,
    spc_evaluate,
)
from tests.factories import UserFactory
from tests.spc.conftest import SIGMA_AREAL, SIGMA_FILL_G, normal

pytestmark = pytest.mark.django_db

OVERVIEW = "/spc/"
HTMX = {"HX-Request": "true"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: What the engine signals on the shifted fill mass (see the module docstring).
TIMES = "\N{MULTIPLICATION SIGN}"
EN_DASH = "\N{EN DASH}"
FILL_SIGNALS = (
    f"100 points, 12 signals (N2 {TIMES}2, N3 {TIMES}1, N4 {TIMES}1, N5 {TIMES}2, "
    f"N6 {TIMES}2, N8 {TIMES}2, CUSUM {TIMES}2)"
)
FILL_ALARMS = ["cusum", "nelson_2", "nelson_3", "nelson_4", "nelson_5", "nelson_6", "nelson_8"]
CAUSE = "Dosing pump 2 recalibrated after a pressure drop"


# --------------------------------------------------------------------------- helpers


def text(fragment: str) -> str:
    """Visible text of an HTML fragment, whitespace folded."""
    inline = re.sub(r"</?(a|strong|span|q)\b[^>]*>", "", fragment)
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


def body_rows(page: str, testid: str) -> list[str]:
    body = section(page, testid)
    body = body[body.index("<tbody") :]
    return [text(part[part.index(">") + 1 :]) for part in re.split(r"<tr\b", body)[1:]]


def overview_codes(page: str) -> list[str]:
    return re.findall(r'data-characteristic="([^"]+)"', section(page, "overview"))


def login(client, role: str, username: str | None = None):
    user = UserFactory(username=username or f"{role}-web", role=role)
    client.force_login(user)
    client.user = user
    return client


# --------------------------------------------------------------------------- the plant


@pytest.fixture
def alarmed(approved_fill, fill, record, phase2_start):
    """100 values after the approval, the last 40 shifted by 1.5 sigma; evaluated."""
    values = normal(12, 100, 5.0, SIGMA_FILL_G)
    values[60:] += 1.5 * SIGMA_FILL_G
    rows = record(fill, values, start=phase2_start)
    spc_evaluate(characteristic_id=fill.pk)
    return rows


@pytest.fixture
def plant(line, alarmed, qe, record, t0):
    """Five active characteristics, one in each state, and an inactive one.

    * electrolyte fill mass: alarm (seven open alarms);
    * cathode areal weight (SC): limits approved from 125 values, nothing since: in control;
    * slit width: 40 values in spec, no limits;
    * winding tension: 30 values, the 29th above the USL: out of spec;
    * busbar weld pull force: 5 values: insufficient data;
    * an inactive fill mass row with values: not listed.
    """
    areal = line.chars["areal_weight"]
    record(areal, normal(21, 125, 23.0, SIGMA_AREAL), start=t0, step_s=60)
    draft = limits_propose(
        characteristic=areal, baseline_from=t0, baseline_to=t0 + timedelta(minutes=125), actor=qe
    )
    limits_approve(limits=draft, actor=qe, reason="Coater 1 after slot-die service")

    def char(station: str, code: str, name: str, unit: str, nominal, lsl, usl, **extra):
        return Characteristic.objects.create(
            station=line.stations[station],
            code=code,
            name=name,
            unit=unit,
            nominal=nominal,
            lsl=lsl,
            usl=usl,
            measurement_method="inline gauge",
            sample_frequency="100 %",
            reaction_plan="Hold; MRB.",
            **extra,
        )

    slit = char("slit-c", "slit-width", "Slit electrode width", "mm", 65.0, 64.9, 65.1)
    record(slit, normal(31, 40, 65.0, 0.02), start=t0 + timedelta(hours=5))
    tension = char(
        "wind", "winding-tension", "Winding tension", "N", 8.0, 7.5, 8.5,
        special_class=SpecialCharacteristic.SC,
    )  # fmt: skip
    values = normal(32, 30, 8.0, 0.08)
    values[28] = 8.62
    record(tension, values, start=t0 + timedelta(hours=6))
    weld = char("mod-asm", "busbar-weld-pull", "Busbar weld pull force", "N", 120.0, 90.0, None)
    record(weld, [118.2, 121.5, 119.9, 122.4, 120.8], start=t0 + timedelta(hours=7))
    old = char(
        "fill", "electrolyte-fill-mass-v0", "Electrolyte fill mass (old plan)", "g", 5.0, 4.9, 5.1
    )
    record(old, [5.01, 4.99, 5.0], start=t0 + timedelta(hours=8))
    Characteristic.objects.filter(pk=old.pk).update(is_active=False)  # superseded plan row
    return line


# --------------------------------------------------------------------------- overview


def test_pages_require_login(client, fill):
    for url in (
        OVERVIEW,
        f"/spc/characteristics/{fill.pk}/",
        f"/spc/characteristics/{fill.pk}/chart/",
        f"/spc/characteristics/{fill.pk}/chart.png",
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(f"{reverse('login')}?next=")


def test_overview_shows_every_active_characteristic_worst_first(client, plant, fill):
    login(client, "auditor")

    response = client.get(OVERVIEW)

    assert response.status_code == 200
    page = response.content.decode()
    assert body_rows(page, "overview") == [
        "gf1 l2-cyl wind winding-tension Winding tension N SC Out of spec "
        f"{_last(plant.chars['fill_mass'], 'winding-tension')} 0 1.57",
        f"gf1 l2-cyl fill electrolyte-fill-mass Electrolyte fill mass (1.0 g/Ah) g CC Alarm "
        f"{_last(fill, 'electrolyte-fill-mass')} 7 1.26",
        "gf1 l2-cyl slit-c slit-width Slit electrode width mm No limits "
        f"{_last(fill, 'slit-width')} 0 1.87",
        "gf1 l2-cyl mod-asm busbar-weld-pull Busbar weld pull force N Insufficient data "
        f"{_last(fill, 'busbar-weld-pull')} 0 5.11",
        "gf1 l2-cyl coat-c cathode-areal-weight Cathode areal weight, per side mg/cm² SC "
        f"In control {_last(fill, 'cathode-areal-weight')} 0 1.47",
    ]
    assert text(section(page, "state-counts")) == (
        "Out of spec: 1 Alarm: 1 No limits: 1 Insufficient data: 1 In control: 1"
    )
    # State by colour and by text: the class carries the colour, the pill says it.
    assert '<span class="pill spc-state state-alarm">Alarm</span>' in page
    assert "electrolyte-fill-mass-v0" not in page
    assert 'aria-sort="ascending"' in section(page, "overview")
    assert '<a href="/spc/" aria-current="page">SPC</a>' in page


def _last(any_char, code: str) -> str:
    """The time of a characteristic's last value as the overview shows it."""
    found = Characteristic.objects.get(code=code, is_active=True)
    return (
        found.measurements.order_by("-measured_at")
        .first()
        .measured_at.strftime("%Y-%m-%d %H:%M:%S")
    )


def test_overview_rows_agree_with_the_state_of_each_characteristic(plant):
    rows = views.characteristic_overview(queries.overview_characteristics())

    assert len(rows) == 5
    for row in rows:
        state = queries.characteristic_state(Characteristic.objects.get(pk=row.id))
        cpk = next(
            (i["value"] for i in state["capability"].get("indices", []) if i["name"] == "Cpk"),
            None,
        )
        assert (row.state, row.open_alarms, row.cpk) == (state["state"], state["open_alarms"], cpk)
        assert row.last_measured_at.isoformat() == state["last_measured_at"]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        (
            "code",
            [
                "busbar-weld-pull",
                "cathode-areal-weight",
                "electrolyte-fill-mass",
                "slit-width",
                "winding-tension",
            ],
        ),
        (
            "-code",
            [
                "winding-tension",
                "slit-width",
                "electrolyte-fill-mass",
                "cathode-areal-weight",
                "busbar-weld-pull",
            ],
        ),
        (
            "cpk",
            [
                "electrolyte-fill-mass",
                "cathode-areal-weight",
                "winding-tension",
                "slit-width",
                "busbar-weld-pull",
            ],
        ),
        (
            "-alarms",
            [
                "electrolyte-fill-mass",
                "cathode-areal-weight",
                "slit-width",
                "winding-tension",
                "busbar-weld-pull",
            ],
        ),
        (
            "-state",
            [
                "cathode-areal-weight",
                "busbar-weld-pull",
                "slit-width",
                "electrolyte-fill-mass",
                "winding-tension",
            ],
        ),
        (
            "class",
            [
                "electrolyte-fill-mass",
                "cathode-areal-weight",
                "winding-tension",
                "slit-width",
                "busbar-weld-pull",
            ],
        ),
        (
            "station",
            [
                "cathode-areal-weight",
                "slit-width",
                "winding-tension",
                "electrolyte-fill-mass",
                "busbar-weld-pull",
            ],
        ),
        (
            "-last",
            [
                "electrolyte-fill-mass",
                "busbar-weld-pull",
                "winding-tension",
                "slit-width",
                "cathode-areal-weight",
            ],
        ),
    ],
)
def test_overview_sorts_by_the_column_asked_for(client, plant, sort, expected):
    login(client, "operator")

    response = client.get(OVERVIEW, {"sort": sort})

    assert response.status_code == 200
    page = response.content.decode()
    assert overview_codes(page) == expected
    column = sort.removeprefix("-")
    heading = re.search(rf'<th[^>]*aria-sort="(\w+)">\s*<a[^>]*data-sort="{column}"', page)
    assert heading.group(1) == ("descending" if sort.startswith("-") else "ascending")


def test_overview_puts_characteristics_without_a_value_last_in_both_directions(client, plant):
    login(client, "operator")
    Characteristic.objects.create(
        station=plant.stations["pack-asm"],
        code="pack-insulation",
        name="Pack HV insulation resistance",
        unit="MΩ",
        nominal=500.0,
        lsl=100.0,
        measurement_method="insulation tester 1000 V DC",
        sample_frequency="100 %",
        reaction_plan="Hold the pack.",
    )

    for sort in ("cpk", "-cpk", "last", "-last"):
        codes = overview_codes(client.get(OVERVIEW, {"sort": sort}).content.decode())
        assert codes[-1] == "pack-insulation", sort


def test_overview_filters_by_line_station_and_state(client, plant, fill):
    login(client, "quality_engineer")

    by_station = client.get(OVERVIEW, {"station": fill.station_id}).content.decode()
    by_state = client.get(OVERVIEW, {"state": "in_control"}).content.decode()
    by_line = client.get(OVERVIEW, {"line": plant.line.pk, "sort": "code"}).content.decode()

    assert overview_codes(by_station) == ["electrolyte-fill-mass"]
    assert overview_codes(by_state) == ["cathode-areal-weight"]
    assert len(overview_codes(by_line)) == 5
    # The counts cover the chosen line or station in every state.
    assert text(section(by_state, "state-counts")) == (
        "Out of spec: 1 Alarm: 1 No limits: 1 Insufficient data: 1 In control: 1"
    )
    # Sort links keep the filters.
    assert f'href="/spc/?station={fill.station_id}&amp;sort=code"' in by_station


def test_overview_refuses_an_unknown_filter_value_naming_the_field(client, plant):
    login(client, "quality_engineer")

    response = client.get(OVERVIEW, {"state": "on_fire", "sort": "colour"})

    assert response.status_code == 400
    error = text(section(response.content.decode(), "overview-error"))
    assert error == (
        "State: Select a valid choice. on_fire is not one of the available choices. "
        "Sort: Select a valid choice. colour is not one of the available choices."
    )


def test_overview_htmx_request_gets_the_table_only(client, plant):
    login(client, "quality_engineer")

    response = client.get(
        OVERVIEW, {"sort": "-cpk"}, headers={**HTMX, "HX-Target": "overview-result"}
    )

    page = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in page
    assert page.lstrip().startswith('<div id="overview-result"')
    assert 'hx-get="/spc/?sort=-cpk"' in page
    assert (
        '<input type="hidden" name="sort" id="overview-sort" value="-cpk" hx-swap-oob="true">'
        in page
    )
    assert "HX-Request" in response["Vary"]


def test_overview_queries_do_not_grow_with_the_characteristics(
    client, plant, record, t0, django_assert_max_num_queries
):
    login(client, "quality_engineer")
    with CaptureQueriesContext(connection) as five:
        assert client.get(OVERVIEW).status_code == 200
    for n in range(15):
        extra = Characteristic.objects.create(
            station=plant.stations["coat-c"],
            code=f"coating-thickness-{n:02d}",
            name=f"Cathode coating thickness, lane {n}",
            unit="µm",
            nominal=70.0,
            lsl=68.0,
            usl=72.0,
            measurement_method="laser triangulation",
            sample_frequency="every 0.5 m",
            reaction_plan="Hold the coil segment.",
        )
        record(extra, normal(100 + n, 40, 70.0, 0.4), start=t0 + timedelta(hours=9 + n))

    with django_assert_max_num_queries(len(five.captured_queries)):
        response = client.get(OVERVIEW)

    assert response.status_code == 200
    assert len(overview_codes(response.content.decode())) == 20
    # Session, user, the characteristics with their figures, approved limits, values.
    assert len(five.captured_queries) <= 6


# ------------------------------------------------------------------ characteristic page


def test_page_draws_the_chart_with_rule_labels_limits_capability_and_arls(
    client, fill, alarmed, django_assert_max_num_queries
):
    login(client, "quality_engineer", "qe-lena")

    with django_assert_max_num_queries(30):  # one query per panel, not per alarm or point
        response = client.get(f"/spc/characteristics/{fill.pk}/", {"last": 100})

    assert response.status_code == 200
    page = response.content.decode()
    chart = section(page, "chart")
    assert chart.count("<svg ") == 1
    assert re.search(r"<title>electrolyte-fill-mass · [^<]*: Individuals and moving range", chart)
    assert f"{FILL_SIGNALS}</title>" in chart
    labels = set(re.findall(r">(N[1-8](?: N[1-8])*|CUSUM(?: N[1-8])*)</text>", chart))
    assert {"N2", "N4", "N6"} <= labels
    assert "drift detector (CUSUM, EWMA): 2</text>" in chart
    for label in ("UCL 5.037", "CL 5.000", "LCL 4.964", "USL 5.050", "LSL 4.950", "h = 3.34"):
        assert f">{label}</text>" in chart
    assert "<?xml" not in page
    meta = text(section(page, "chart-meta"))
    assert meta.startswith("100 points, ")
    assert "12 signals marked from 7 alarms" in meta
    assert f'href="/spc/characteristics/{fill.pk}/chart.pdf?last=100"' in page

    assert text(section(page, "spc-status")).startswith("Alarm 7 open alarms last value ")
    approved = text(section(page, "limits-approved"))
    assert approved.startswith("Version 1 · in force since ")
    assert "X 4.9638 5.0004 5.0370 MR 0.0000 0.0138 0.0450" in approved
    assert "from 125 of 125 values measured" in approved
    assert "Approved by qe-anna on " in approved
    assert " UTC: Baseline week 48, shift A, no assignable causes. Proposed by qe-anna" in approved
    arl = body_rows(page, "arl")
    assert arl == [
        "CUSUM k 0.75, h 3.34 370.6 10.88 5.18 3.39",
        "Shewhart, rule 1 only L 3 370.4 43.89 14.97 6.30",
    ]
    assert text(section(page, "whole-chart-arl")).startswith(
        "Whole chart in control: a signal somewhere every 47 ± 3 points"
    )
    assert body_rows(page, "indices") == [
        f"Cp 1.37 1.24 {EN_DASH} 1.49",
        f"Cpk 1.26 1.14 {EN_DASH} 1.39",
        f"Pp 1.26 1.14 {EN_DASH} 1.38",
        f"Ppk 1.16 1.05 {EN_DASH} 1.28",
        f"Cpm 1.21 1.10 {EN_DASH} 1.32",
    ]
    assert "capability histogram of 225 values; Cp 1.37, Cpk 1.26" in section(page, "histogram")

    open_rows = body_rows(page, "open-alarms")
    assert len(open_rows) == 7
    assert open_rows[0].startswith("Critical CUSUM CUSUM (k 0.75, h 3.34): sustained shift upward")
    assert sorted(re.findall(r'data-rule="(\w+)"', section(page, "open-alarms"))) == FILL_ALARMS
    assert page.count('data-testid="ack-form"') == 7
    assert "alarms-read-only" not in page


def test_auditor_reads_the_page_without_forms(client, fill, alarmed, qe):
    limits_propose(
        characteristic=fill,
        baseline_from=alarmed[0].measured_at,
        baseline_to=alarmed[-1].measured_at + timedelta(seconds=1),
        actor=qe,
    )
    login(client, "auditor", "auditor-tuv")

    response = client.get(f"/spc/characteristics/{fill.pk}/")

    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-testid="ack-form"' not in page
    assert 'data-testid="approve-form"' not in page
    assert text(section(page, "alarms-read-only")).startswith("Read-only:")
    assert text(section(page, "approve-read-only")) == "Awaiting approval by a quality engineer."
    assert text(section(page, "limits-draft")).startswith("Draft version 2 · proposed by qe-anna")


def test_page_of_a_characteristic_with_too_few_values_says_so(client, line, record, t0):
    areal = line.chars["areal_weight"]
    record(areal, normal(5, 12, 23.0, SIGMA_AREAL), start=t0)
    login(client, "operator")

    page = client.get(f"/spc/characteristics/{areal.pk}/").content.decode()

    assert text(section(page, "insufficient-data")) == (
        "Insufficient data. 12 values measured; control limits need at least 20 values from a "
        "stable baseline. The chart shows the values against the specification only."
    )
    assert section(page, "state").endswith(">Insufficient data</span>")
    assert "12 points" in text(section(page, "chart-meta"))
    assert "no limits: values and specification only" in text(section(page, "chart-meta"))
    assert text(section(page, "limits-none")) == "No limits approved for this characteristic."
    assert text(section(page, "no-open-alarms")) == "No open alarm."


def test_page_without_limits_shows_values_against_the_specification(client, fill, record, t0):
    record(fill, normal(11, 60, 5.0, SIGMA_FILL_G), start=t0)
    login(client, "operator")

    page = client.get(f"/spc/characteristics/{fill.pk}/").content.decode()

    assert text(section(page, "no-limits")).startswith("No control limits in force.")
    assert section(page, "state").endswith(">No limits</span>")
    chart = section(page, "chart")
    assert "Run chart, 60 points, 0 signals</title>" in chart
    assert ">USL 5.050</text>" in chart
    assert body_rows(page, "indices")[1].startswith("Cpk ")


def test_every_value_of_a_rule_1_alarm_is_marked_not_only_its_first_and_last(
    fill, approved_fill, record, phase2_start
):
    # Three values above the UCL within 25 points: one alarm, extended twice.
    values = normal(12, 60, 5.0, SIGMA_FILL_G)
    for i in (30, 35, 40):
        values[i] = 5.0 + 3.8 * SIGMA_FILL_G
    rows = record(fill, values, start=phase2_start)
    spc_evaluate(characteristic_id=fill.pk)
    beyond = SpcAlarm.objects.get(characteristic=fill, rule="nelson_1", statistic="x")
    assert (beyond.chart_index, beyond.last_chart_index, len(beyond.points)) == (30, 40, 3)

    data = queries.chart_data(characteristic=fill, last=100)
    chart = views.chart_input(fill, data, approved_fill, queries.chart_config_for(fill))

    assert len(chart.values) == 60
    assert chart.times[0] == rows[0].measured_at
    marked = [(s.index, s.statistic) for s in chart.signals if s.rule == "nelson_1"]
    assert [i for i, statistic in marked if statistic == "x"] == [30, 35, 40]
    assert {i for i, statistic in marked if statistic == "mr"} <= {30, 31, 35, 36, 40, 41}
    assert chart.cusum.h == 3.34 and len(chart.cusum.up) == 60


def test_page_of_an_x_bar_r_chart_draws_subgroups_and_their_range(
    client, line, qe, record, t0, phase2_start
):
    areal = line.chars["areal_weight"]
    config = chart_config_get_or_create(characteristic=areal)
    chart_config_update(
        config=config, actor=qe, reason="five lanes per traverse", chart_type="xbar_r",
        subgroup_size=5,
    )  # fmt: skip
    record(areal, normal(41, 125, 23.0, SIGMA_AREAL), start=t0, step_s=60)
    end = t0 + timedelta(minutes=125)
    draft = limits_propose(characteristic=areal, baseline_from=t0, baseline_to=end, actor=qe)
    limits_approve(limits=draft, actor=qe, reason="Coater 1 baseline", monitor_from=end)
    record(areal, normal(42, 100, 23.0, SIGMA_AREAL), start=phase2_start)
    spc_evaluate(characteristic_id=areal.pk)
    login(client, "operator")

    page = client.get(f"/spc/characteristics/{areal.pk}/").content.decode()
    png = client.get(f"/spc/characteristics/{areal.pk}/chart.png", {"last": 100})

    chart = section(page, "chart")
    assert re.search(r": X-bar and R, 20 points, \d+ signals", chart)
    assert ">Range (mg/cm²)</text>" in chart
    assert text(section(page, "chart-meta")).startswith("20 points (100 values), ")
    approved = text(section(page, "limits-approved"))
    assert "X-bar " in approved and " R 0.0000 " in approved
    assert png.status_code == 200
    assert struct.unpack(">II", png.content[16:24]) == (1200, 640)


def test_page_refuses_a_window_it_does_not_offer_naming_the_field(client, fill, alarmed):
    login(client, "operator")

    response = client.get(f"/spc/characteristics/{fill.pk}/", {"last": 7})

    assert response.status_code == 400
    page = response.content.decode()
    assert text(section(page, "window-error")) == (
        "Points: Show the last 100, 500 or 2,000 values (got 7)."
    )
    assert text(section(page, "chart-meta")).startswith("100 points")  # the default window


def test_unknown_characteristic_is_404(client, db):
    login(client, "operator")

    assert client.get("/spc/characteristics/999999/").status_code == 404
    assert client.get("/spc/characteristics/999999/chart.svg").status_code == 404


# ------------------------------------------------------------------------ chart refresh


def test_chart_panel_answers_204_until_something_shown_changes(
    client, fill, alarmed, record, phase2_start
):
    login(client, "operator")
    url = f"/spc/characteristics/{fill.pk}/chart/"
    first = client.get(url, {"last": 100}, headers=HTMX)
    version = re.search(r'data-version="(\w+)"', first.content.decode()).group(1)

    unchanged = client.get(url, {"last": 100, "v": version}, headers=HTMX)
    record(fill, [5.004], start=phase2_start + timedelta(minutes=30))
    changed = client.get(url, {"last": 100, "v": version}, headers=HTMX)

    assert first.status_code == 200
    assert first["HX-Replace-Url"] == f"/spc/characteristics/{fill.pk}/?last=100"
    assert "no-cache" in first["Cache-Control"]
    assert f'hx-get="{url}?last=100&amp;v={version}"' in first.content.decode()
    assert unchanged.status_code == 204
    assert unchanged.content == b""
    assert changed.status_code == 200
    assert re.search(r'data-version="(\w+)"', changed.content.decode()).group(1) != version
    last = phase2_start + timedelta(minutes=30)
    assert text(section(changed.content.decode(), "chart-meta")).startswith(
        f"100 points, {alarmed[1].measured_at:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC "
    )


def test_chart_panel_refuses_a_bad_window(client, fill, alarmed):
    login(client, "operator")

    response = client.get(f"/spc/characteristics/{fill.pk}/chart/", {"last": "all"}, headers=HTMX)

    assert response.status_code == 400
    assert text(section(response.content.decode(), "window-error")) == (
        "Points: Show the last 100, 500 or 2,000 values (got all)."
    )


# ---------------------------------------------------------------------------- downloads


@pytest.mark.parametrize(
    ("fmt", "content_type", "head"),
    [
        ("svg", "image/svg+xml", b"<?xml version"),
        ("png", "image/png", PNG_SIGNATURE),
        ("pdf", "application/pdf", b"%PDF-"),
    ],
)
def test_chart_downloads_in_each_format(client, fill, alarmed, fmt, content_type, head):
    login(client, "auditor")

    response = client.get(f"/spc/characteristics/{fill.pk}/chart.{fmt}", {"last": 100})

    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    last = alarmed[-1].measured_at.strftime("%Y%m%dT%H%MZ")
    assert response["Content-Disposition"] == (
        f'attachment; filename="gf1-l2-cyl-fill-electrolyte-fill-mass-last100-{last}.{fmt}"'
    )
    assert response.content.startswith(head)
    if fmt == "png":
        assert struct.unpack(">II", response.content[16:24]) == (1200, 640)  # with CUSUM
    if fmt == "svg":
        assert f"{FILL_SIGNALS}</title>".encode() in response.content


def test_chart_download_refuses_a_bad_window_and_an_unknown_format(client, fill, alarmed):
    login(client, "auditor")

    bad = client.get(f"/spc/characteristics/{fill.pk}/chart.png", {"last": 5001})
    unknown = client.get(f"/spc/characteristics/{fill.pk}/chart.jpg")

    assert bad.status_code == 400
    assert bad.content.decode() == "last: Show the last 100, 500 or 2,000 values (got 5001).\n"
    assert unknown.status_code == 404


# ------------------------------------------------------------------------ acknowledging


def _cusum(fill) -> SpcAlarm:
    return SpcAlarm.objects.get(characteristic=fill, rule="cusum")


def _history(alarm: SpcAlarm) -> int:
    return alarm.history.count()


def test_acknowledge_records_the_cause_and_swaps_the_list(client, fill, alarmed):
    login(client, "mrb_member", "mrb-jonas")
    alarm = _cusum(fill)
    prefix = f"alarm-{alarm.pk}"

    response = client.post(
        f"/spc/alarms/{alarm.pk}/acknowledge/",
        {f"{prefix}-cause": f"  {CAUSE} ", f"{prefix}-comment": "Cells of 11:21-11:28 re-weighed"},
        headers=HTMX,
    )

    assert response.status_code == 200
    alarm.refresh_from_db()
    assert (alarm.status, alarm.cause, alarm.comment, alarm.acknowledged_by) == (
        "acknowledged",
        CAUSE,
        "Cells of 11:21-11:28 re-weighed",
        client.user,
    )
    page = response.content.decode()
    assert page.lstrip().startswith('<section class="card" id="alarms"')
    assert len(body_rows(page, "open-alarms")) == 6
    decided = body_rows(page, "decided-alarms")
    assert len(decided) == 1
    assert decided[0].startswith("Acknowledged (cause recorded) CUSUM CUSUM (k 0.75, h 3.34)")
    assert f"mrb-jonas, {alarm.acknowledged_at:%Y-%m-%d %H:%M} {CAUSE}" in decided[0]
    # The page's state is swapped out of band: still in alarm, one fewer open.
    status = section(page, "spc-status")
    assert 'hx-swap-oob="true"' in status
    assert text(status).startswith("Alarm 6 open alarms")


def test_acknowledge_needs_a_cause_and_writes_nothing(client, fill, alarmed):
    login(client, "quality_engineer")
    alarm = _cusum(fill)
    before = _history(alarm)

    response = client.post(
        f"/spc/alarms/{alarm.pk}/acknowledge/",
        {f"alarm-{alarm.pk}-cause": "   ", f"alarm-{alarm.pk}-comment": "checked"},
        headers=HTMX,
    )

    assert response.status_code == 400
    page = response.content.decode()
    row = section(page, "open-alarms")
    assert text(section(row, "cause-errors")) == "Acknowledging an alarm needs the cause found."
    assert 'value="checked"' in row  # what was typed stays
    alarm.refresh_from_db()
    assert (alarm.status, alarm.cause, alarm.acknowledged_by) == ("open", "", None)
    assert _history(alarm) == before


@pytest.mark.parametrize("role", ["operator", "auditor"])
def test_acknowledge_without_the_permission_is_refused(client, fill, alarmed, role):
    login(client, role)
    alarm = _cusum(fill)
    before = _history(alarm)

    response = client.post(
        f"/spc/alarms/{alarm.pk}/acknowledge/", {f"alarm-{alarm.pk}-cause": CAUSE}, headers=HTMX
    )

    assert response.status_code == 403
    page = response.content.decode()
    assert text(section(page, "alarms-error")) == (
        "Acknowledging SPC alarms needs the permission spc.change_spcalarm "
        "(quality engineers and MRB members)."
    )
    assert 'data-testid="ack-form"' not in page
    alarm.refresh_from_db()
    assert (alarm.status, alarm.cause) == ("open", "")
    assert _history(alarm) == before


def test_acknowledging_an_alarm_someone_acknowledged_meanwhile_is_refused(
    client, fill, alarmed, qe
):
    alarm = alarm_acknowledge(alarm=_cusum(fill), actor=qe, cause="Pump 2 drift")
    before = _history(alarm)
    login(client, "quality_engineer")

    response = client.post(
        f"/spc/alarms/{alarm.pk}/acknowledge/", {f"alarm-{alarm.pk}-cause": CAUSE}, headers=HTMX
    )

    assert response.status_code == 409
    assert text(section(response.content.decode(), "alarms-error")) == (
        f"status: Alarm {alarm.pk} is acknowledged already."
    )
    alarm.refresh_from_db()
    assert (alarm.cause, alarm.acknowledged_by) == ("Pump 2 drift", qe)
    assert _history(alarm) == before


def test_acknowledge_without_javascript_redirects_to_the_page(client, fill, alarmed):
    login(client, "quality_engineer")
    alarm = _cusum(fill)

    done = client.post(f"/spc/alarms/{alarm.pk}/acknowledge/", {f"alarm-{alarm.pk}-cause": CAUSE})
    other = SpcAlarm.objects.get(characteristic=fill, rule="nelson_2")
    refused = client.post(f"/spc/alarms/{other.pk}/acknowledge/", {})

    assert done.status_code == 302
    assert done["Location"] == f"/spc/characteristics/{fill.pk}/#alarms"
    assert refused.status_code == 400
    assert "<html" in refused.content.decode()
    assert text(section(refused.content.decode(), "cause-errors")) == (
        "Acknowledging an alarm needs the cause found."
    )
    assert SpcAlarm.objects.get(pk=other.pk).status == "open"


def test_acknowledge_only_by_post(client, fill, alarmed):
    login(client, "quality_engineer")

    assert client.get(f"/spc/alarms/{_cusum(fill).pk}/acknowledge/").status_code == 405


# ------------------------------------------------------------------------------ approval


@pytest.fixture
def draft(fill, alarmed, qe):
    """Version 2 proposed from the 100 Phase II values (the engineer will approve it)."""
    return limits_propose(
        characteristic=fill,
        baseline_from=alarmed[0].measured_at,
        baseline_to=alarmed[-1].measured_at + timedelta(seconds=1),
        actor=qe,
    )


def test_quality_engineer_approves_a_draft(client, fill, draft, approved_fill):
    login(client, "quality_engineer", "qe-lena")
    page = client.get(f"/spc/characteristics/{fill.pk}/").content.decode()
    assert f'action="/spc/limits/{draft.pk}/approve/"' in section(page, "approve-form")

    response = client.post(
        f"/spc/limits/{draft.pk}/approve/",
        {f"limits-{draft.pk}-reason": "Pump 2 recalibrated; new baseline after the fix"},
        headers=HTMX,
    )

    assert response.status_code == 200
    assert response["HX-Trigger"] == "spc-refresh"
    draft.refresh_from_db()
    approved_fill.refresh_from_db()
    assert (draft.status, draft.approved_by, draft.reason) == (
        "approved",
        client.user,
        "Pump 2 recalibrated; new baseline after the fix",
    )
    assert approved_fill.status == "superseded"
    panel = response.content.decode()
    assert panel.lstrip().startswith('<section class="card" id="limits"')
    approved = text(section(panel, "limits-approved"))
    assert approved.startswith("Version 2 · in force since ")
    assert "Approved by qe-lena on " in approved
    assert " UTC: Pump 2 recalibrated; new baseline after the fix. Proposed by" in approved
    assert 'data-testid="limits-draft"' not in panel
    assert 'hx-swap-oob="true"' in section(panel, "spc-status")


def test_approve_needs_a_reason_and_writes_nothing(client, fill, draft):
    login(client, "quality_engineer")

    response = client.post(
        f"/spc/limits/{draft.pk}/approve/", {f"limits-{draft.pk}-reason": " "}, headers=HTMX
    )

    assert response.status_code == 400
    assert text(section(response.content.decode(), "reason-errors")) == (
        "Approving control limits needs a reason."
    )
    draft.refresh_from_db()
    assert (draft.status, draft.approved_by, draft.reason) == ("draft", None, "")
    assert ControlLimits.objects.filter(characteristic=fill, status="approved").get().version == 1


@pytest.mark.parametrize("role", ["operator", "mrb_member", "auditor"])
def test_approve_without_the_permission_is_refused(client, fill, draft, role):
    login(client, role)
    before = draft.history.count()

    response = client.post(
        f"/spc/limits/{draft.pk}/approve/",
        {f"limits-{draft.pk}-reason": "looks fine"},
        headers=HTMX,
    )

    assert response.status_code == 403
    page = response.content.decode()
    assert text(section(page, "limits-error")) == (
        "Approving control limits needs the permission spc.approve_controllimits "
        "(quality engineers)."
    )
    assert 'data-testid="approve-form"' not in page
    draft.refresh_from_db()
    assert draft.status == "draft"
    assert draft.history.count() == before


def test_approving_limits_without_variation_is_refused_naming_sigma(client, line, record, t0, qe):
    areal = line.chars["areal_weight"]
    record(areal, [23.0] * 30, start=t0, step_s=60)
    flat = limits_propose(
        characteristic=areal, baseline_from=t0, baseline_to=t0 + timedelta(minutes=30), actor=qe
    )
    login(client, "quality_engineer")

    response = client.post(
        f"/spc/limits/{flat.pk}/approve/", {f"limits-{flat.pk}-reason": "Gauge R&R passed"}
    )

    assert response.status_code == 409
    page = response.content.decode()
    assert "<html" in page
    assert text(section(page, "limits-error")).startswith(
        "sigma: These limits have no variation (sigma = 0): every later value off the centre"
    )
    flat.refresh_from_db()
    assert flat.status == "draft"


def test_approving_a_version_that_is_no_longer_a_draft_is_refused(client, approved_fill):
    login(client, "quality_engineer")
    before = approved_fill.history.count()

    response = client.post(
        f"/spc/limits/{approved_fill.pk}/approve/",
        {f"limits-{approved_fill.pk}-reason": "again"},
        headers=HTMX,
    )

    assert response.status_code == 409
    assert text(section(response.content.decode(), "limits-error")) == (
        "status: Control limits v1 are approved, not a draft: only a draft is approved or rejected."
    )
    assert approved_fill.history.count() == before
