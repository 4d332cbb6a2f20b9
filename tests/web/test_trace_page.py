"""The trace page through Django's test client: access, look-up, trees, timeline, holds."""

import html
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from compliance import views
from compliance.choices import HoldSource
from compliance.models import Hold
from compliance.services import hold_place, hold_release
from tests.factories import GTIN, UserFactory
from tests.web.thread import (
    ANODE_MOTHER,
    ANODE_SLIT,
    CAM_LOT,
    CATHODE_MOTHER,
    CATHODE_SLIT,
    ELECTROLYTE_LOT,
    MODULES,
    OOS_CELL,
    PACK,
    SEPARATOR_LOT,
    SUPPLIER_HOLD_REASON,
    VIN,
    cell_serial,
)

pytestmark = pytest.mark.django_db

TRACE = "/trace/"
HTMX = {"HX-Request": "true", "HX-Target": "trace-result", "HX-Current-URL": "/trace/"}


def text(fragment: str) -> str:
    """Visible text of an HTML fragment, whitespace folded (links are inline: no space)."""
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


def rows(page: str, testid: str, tag: str) -> list[str]:
    """Texts of the ``tag`` rows (li, tr) inside one section."""
    body = section(page, testid)
    return [text(part[part.index(">") + 1 :]) for part in re.split(rf"<{tag}\b", body)[1:]]


def get(client, serial: str, **headers):
    return client.get(TRACE, {"serial": serial}, headers=headers)


# --- access ------------------------------------------------------------------------------------


def test_trace_page_requires_login(client):
    response = client.get(TRACE, {"serial": VIN})

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/trace/%3Fserial%3D{VIN}"


def test_login_form_lands_on_the_trace_page_and_root_redirects_there(client):
    UserFactory(username="qe-lena", role="quality_engineer", password="Cell-trace-2026")

    response = client.post(reverse("login"), {"username": "qe-lena", "password": "Cell-trace-2026"})

    assert response.status_code == 302
    assert response["Location"] == TRACE
    assert client.get("/")["Location"] == TRACE
    page = client.get(TRACE)
    assert page.status_code == 200
    assert text(section(page.content.decode(), "role")) == "Quality engineer"


def test_wrong_password_is_refused_on_the_login_page(client):
    UserFactory(username="qe-lena", role="quality_engineer", password="Cell-trace-2026")

    response = client.post(reverse("login"), {"username": "qe-lena", "password": "wrong"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_auditor_sees_the_trace_read_only(vehicle_thread, auditor_client):
    response = get(auditor_client, VIN)

    page = response.content.decode()
    assert response.status_code == 200
    assert response.context["can_act"] is False
    assert text(section(page, "role")) == "Auditor (read-only)"
    assert "Read-only access" in text(section(page, "read-only"))
    # The only form that posts is the log-out button.
    assert re.findall(r'<form[^>]*method="post"[^>]*>', page) == [
        '<form method="post" action="/accounts/logout/" class="logout">'
    ]
    assert SUPPLIER_HOLD_REASON in page


def test_quality_engineer_is_not_read_only(vehicle_thread, qe_client):
    response = get(qe_client, VIN)

    assert response.context["can_act"] is True
    assert 'data-testid="read-only"' not in response.content.decode()


# --- look-up -----------------------------------------------------------------------------------


def test_trace_by_vin_shows_pack_modules_cells_coil_segments_and_lots(
    vehicle_thread, qe_client, django_assert_max_num_queries
):
    with django_assert_max_num_queries(25):
        response = get(qe_client, VIN)

    page = response.content.decode()
    assert response.status_code == 200
    assert text(section(page, "unit")).startswith(f"Vehicle {VIN} In process")
    tree = rows(page, "backward-tree", "li")
    assert tree[0] == f"Vehicle {VIN}"
    assert tree[1] == f"Pack {PACK} slot HV"
    assert tree[2] == f"Module {MODULES[0]} slot M01"
    assert tree[3] == f"Cell {cell_serial(1)} slot C01"
    assert tree[4] == (
        f"Slit coil [1204.0, 1210.0) m of {CATHODE_SLIT} "
        f"= [2704.0, 2710.0) m of mother coil {CATHODE_MOTHER}"
    )
    assert tree[5] == f"Coil [1500.0, 3000.0) m of {CATHODE_MOTHER}"
    assert tree[6] == "Mix batch MXC-260302-01 NMC811 cathode slurry"
    assert tree[7] == f"Material lot {CAM_LOT} NMC811 cathode active material · Nordkathode GmbH"
    # Cell 8 (slot C04 of the second module) used the last metres; its slit coils were
    # expanded under cell 1 already, its lots are folded into its row.
    assert f"Cell {cell_serial(8)} slot C04 also {ELECTROLYTE_LOT}, {SEPARATOR_LOT}" in tree
    assert (
        f"Slit coil [1246.0, 1252.0) m of {CATHODE_SLIT} = [2746.0, 2752.0) m of mother coil "
        f"{CATHODE_MOTHER} (upstream listed above)"
    ) in tree
    assert (
        f"Slit coil [353.4, 359.6) m of {ANODE_SLIT} = [353.4, 359.6) m of mother coil "
        f"{ANODE_MOTHER} (upstream listed above)"
    ) in tree
    assert sum(r.startswith("Cell ") for r in tree) == 8
    assert text(section(page, "backward-counts")) == (
        "1 pack 2 modules 8 cells 2 slit coils 2 coils 2 mix batches 7 material lots"
    )
    assert rows(page, "segments", "tr")[1:] == [
        f"Slit coil {CATHODE_SLIT} [1204.0, 1252.0) m 48.0 m",
        f"Slit coil {ANODE_SLIT} [310.0, 359.6) m 49.6 m",
        f"Coil {ANODE_MOTHER} [310.0, 359.6) m 49.6 m",
        f"Coil {CATHODE_MOTHER} [2704.0, 2752.0) m 48.0 m",
    ]
    materials = rows(page, "materials", "tr")[1:]
    assert len(materials) == 9
    assert (
        f"Material lot {SEPARATOR_LOT} PE separator 12 µm, ceramic coated "
        "Separion Films GmbH In process"
    ) in materials
    assert (
        f"Material lot {ELECTROLYTE_LOT} Electrolyte 1.2 M LiPF6 in EC/EMC Elyte Chemicals SE "
        "On hold"
    ) in materials
    assert "Not built into anything yet." in text(section(page, "downstream"))


def test_every_serial_in_the_tree_links_to_its_own_trace_page(vehicle_thread, qe_client):
    page = get(qe_client, VIN).content.decode()

    links = re.findall(r'<a class="serial" href="([^"]+)">([^<]+)</a>', section(page, "upstream"))
    assert links
    assert all(href == f"/trace/?serial={serial}" for href, serial in links)
    assert ("/trace/?serial=" + cell_serial(OOS_CELL), cell_serial(OOS_CELL)) in links


@pytest.mark.parametrize(
    "scanned",
    [
        f"(01){GTIN}(21){cell_serial(OOS_CELL)}(10)L2611A",
        f"]d201{GTIN}21{cell_serial(OOS_CELL)}\x1d10L2611A",
    ],
    ids=["human-readable", "raw-datamatrix"],
)
def test_trace_by_gs1_datamatrix_string(vehicle_thread, qe_client, scanned):
    response = get(qe_client, scanned)

    page = response.content.decode()
    assert response.status_code == 200
    assert response.context["result"].unit == vehicle_thread[cell_serial(OOS_CELL)]
    assert text(section(page, "unit")).startswith(f"Cell {cell_serial(OOS_CELL)} In process")
    assert rows(page, "forward-tree", "li") == [
        f"Cell {cell_serial(OOS_CELL)}",
        f"Module {MODULES[0]} slot C03",
        f"Pack {PACK} slot M01",
        f"Vehicle {VIN} slot HV",
    ]


def test_unknown_serial_is_404_naming_it(vehicle_thread, qe_client):
    response = get(qe_client, "P126119999999")

    assert response.status_code == 404
    assert text(section(response.content.decode(), "trace-error")) == (
        "Not found. No unit with serial 'P126119999999' is known. "
        "Check the serial, or scan the unit's DataMatrix code again."
    )


def test_wrong_gtin_check_digit_is_400_naming_the_problem(vehicle_thread, qe_client):
    scanned = f"(01)09521234543214(21){cell_serial(1)}"

    response = get(qe_client, scanned)

    assert response.status_code == 400
    assert text(section(response.content.decode(), "trace-error")) == (
        f"Cannot read this serial. GS1 AI (01) in '{scanned}': Invalid GTIN check digit for "
        "'09521234543214': Expected 3, got 4."
    )


def test_malformed_gs1_string_is_400(vehicle_thread, qe_client):
    response = get(qe_client, "(01)0952(21)P126110000001")

    message = text(section(response.content.decode(), "trace-error"))
    assert response.status_code == 400
    assert message.startswith("Cannot read this serial. Malformed GS1 element string")
    assert "GS1 AI (01)" in message


def test_empty_serial_is_400_with_a_prompt(qe_client):
    response = get(qe_client, "   ")

    assert response.status_code == 400
    assert text(section(response.content.decode(), "trace-error")) == (
        "Scan or type a serial to trace."
    )


def test_page_without_a_serial_shows_the_form_only(qe_client):
    response = qe_client.get(TRACE)

    page = response.content.decode()
    assert response.status_code == 200
    assert 'name="serial"' in page
    assert 'data-testid="unit"' not in page
    assert 'data-testid="trace-error"' not in page


def test_htmx_submit_gets_the_result_panel_only(vehicle_thread, qe_client):
    response = get(qe_client, VIN, **HTMX)

    page = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in page
    assert 'name="serial"' not in page
    assert f"<title>{VIN} · Trace · Celltrace QMS</title>" in page
    assert 'data-testid="unit"' in page
    assert "HX-Request" in response["Vary"]
    missing = get(qe_client, "NOPE-0001", **HTMX)
    assert missing.status_code == 404
    assert "<html" not in missing.content.decode()
    assert "NOPE-0001" in missing.content.decode()


def test_history_restore_gets_the_whole_page(vehicle_thread, qe_client):
    response = get(qe_client, VIN, **HTMX, **{"HX-History-Restore-Request": "true"})

    assert "<html" in response.content.decode()


# --- timeline ----------------------------------------------------------------------------------


def test_out_of_spec_measurement_is_marked_on_the_cell_timeline(vehicle_thread, qe_client):
    page = get(qe_client, cell_serial(OOS_CELL)).content.decode()

    timeline = section(page, "timeline")
    marked = re.findall(r'<tr class="measurement out-of-spec">.*?</tr>', timeline, re.S)
    assert len(marked) == 1
    assert text(marked[0]).endswith("Electrolyte fill mass CC 404.2 g 405.9 410 414.1 OUT OF SPEC")
    visit = text(re.search(r'<tr class="visit-row.*?</tr>', timeline, re.S).group(0))
    assert visit.endswith(
        "fill FILL · cw-1 · program FILL-105AH-V3 · operator op-117 OK 1 out of spec"
    )


def test_in_spec_measurement_is_not_marked(vehicle_thread, qe_client):
    page = get(qe_client, cell_serial(1)).content.decode()

    timeline = section(page, "timeline")
    assert "out-of-spec" not in timeline
    assert "OUT OF SPEC" not in timeline
    row = text(re.search(r'<tr class="measurement">.*?</tr>', timeline, re.S).group(0))
    assert row.endswith("Electrolyte fill mass CC 409.8 g 405.9 410 414.1 in spec")


def test_vin_timeline_joins_the_pack_and_marks_the_vehicle_out_of_spec(vehicle_thread, qe_client):
    page = get(qe_client, VIN).content.decode()

    timeline = section(page, "timeline")
    visits = [text(v) for v in re.findall(r'<tr class="visit-row.*?</tr>', timeline, re.S)]
    assert [v.split(" · ")[0].split(" ", 2)[2] for v in visits] == [
        "pack-eol Pack end-of-line test",
        "marriage MARRIAGE",
    ]
    assert f"pack {PACK}" in visits[0]
    assert visits[1].endswith("NOK 1 out of spec")
    marked = re.findall(r'<tr class="measurement out-of-spec">.*?</tr>', timeline, re.S)
    assert len(marked) == 1
    assert text(marked[0]).endswith(
        "Vehicle HV insulation resistance CC 42 MΩ 100 500 — OUT OF SPEC"
    )


def test_long_measurement_series_keeps_out_of_spec_and_summarises_the_rest(
    qe_client, plant, monkeypatch
):
    from genealogy.choices import UnitKind
    from genealogy.services import MeasurementInput, measurements_record, unit_create

    actor = UserFactory(username="qe-coat", role="quality_engineer")
    coil = unit_create(
        kind=UnitKind.COIL, serial="CC-260304-001", line=plant.line, length_m=3000.0, actor=actor
    )
    t0 = timezone.now() - timedelta(days=2)
    values = [23.0 + 0.01 * (i % 10) for i in range(60)]
    values[47] = 23.41  # above USL 23.345 mg/cm²
    measurements_record(
        rows=[
            MeasurementInput(
                unit_id=coil.pk,
                characteristic_id=plant.chars["coat_weight"].pk,
                value=v,
                measured_at=t0 + timedelta(seconds=6 * i),
                position_m=0.5 * i,
            )
            for i, v in enumerate(values)
        ],
        actor=actor,
    )
    monkeypatch.setattr(views, "TIMELINE_MAX_MEASUREMENTS", 10)

    page = get(qe_client, "CC-260304-001").content.decode()

    timeline = section(page, "timeline")
    shown = re.findall(r'<tr class="measurement[^"]*">.*?</tr>', timeline, re.S)
    assert len(shown) == 11  # 1 out of spec + 9 in spec + the summary row
    marked = [text(r) for r in shown if "out-of-spec" in r]
    assert len(marked) == 1
    assert marked[0].endswith(
        "Cathode areal weight SC at 23.5 m 23.41 mg/cm² 22.655 23 23.345 OUT OF SPEC"
    )
    assert text(shown[-1]) == "50 more cathode areal weight values in spec, from 23 to 23.09 mg/cm²"


# --- holds -------------------------------------------------------------------------------------


def test_open_holds_of_the_trace_are_shown_with_reason(vehicle_thread, qe_client):
    hold = vehicle_thread.supplier_hold

    page = get(qe_client, VIN).content.decode()

    holds = rows(page, "holds", "tr")
    assert holds[1:] == [
        f"{hold.number} {SUPPLIER_HOLD_REASON} Supplier notice SN-2611-07 "
        f"Material lot {ELECTROLYTE_LOT} Anna Krüger {hold.placed_at:%Y-%m-%d %H:%M}"
    ]
    assert "1 hold on 1 unit of this trace" in text(section(page, "holds"))


def test_released_hold_is_not_shown_and_new_hold_on_a_module_is(vehicle_thread, qe_client):
    actor = vehicle_thread.actor
    module = vehicle_thread[MODULES[1]]
    hold_release(hold=vehicle_thread.supplier_hold, actor=actor, reason="Karl Fischer 8 ppm, OK")
    manual = hold_place(
        units=[module],
        reason="Busbar weld C02-C03 discoloured; check pull force",
        source=HoldSource.MANUAL,
        actor=actor,
    )

    page = get(qe_client, VIN).content.decode()

    holds = rows(page, "holds", "tr")[1:]
    assert len(holds) == 1
    assert holds[0].startswith(
        f"{manual.number} Busbar weld C02-C03 discoloured; check pull force Manual "
        f"Module {MODULES[1]}"
    )
    assert vehicle_thread.supplier_hold.number not in page
    assert Hold.objects.filter(status="open").count() == 1


def test_no_open_hold_says_so(vehicle_thread, qe_client):
    hold_release(hold=vehicle_thread.supplier_hold, actor=vehicle_thread.actor, reason="cleared")

    page = get(qe_client, VIN).content.decode()

    assert text(section(page, "no-holds")) == (
        "No open hold on this unit or on anything in its trace."
    )


def test_interlock_answer_names_the_upstream_hold(vehicle_thread, qe_client):
    page = get(qe_client, cell_serial(1)).content.decode()

    interlock = text(section(page, "interlock"))
    assert interlock.startswith("Interlock at mod-asm (MOD-ASM): refused")
    assert f"upstream material lot {ELECTROLYTE_LOT} is on hold" in interlock


# --- large answers -----------------------------------------------------------------------------


def test_large_downstream_shows_counts_first_units_and_the_recall_csv(
    vehicle_thread, qe_client, monkeypatch
):
    monkeypatch.setattr(views, "DOWNSTREAM_TREE_MAX_UNITS", 10)
    monkeypatch.setattr(views, "FIRST_N_PER_KIND", 3)

    page = get(qe_client, CAM_LOT).content.decode()

    downstream = section(page, "downstream")
    assert 'data-testid="forward-tree"' not in downstream
    assert text(section(page, "forward-counts")) == (
        "1 mix batch 1 coil 1 slit coil 8 cells 2 modules 1 pack 1 vehicle"
    )
    assert text(section(page, "forward-large")).startswith("15 units: too many to draw.")
    samples = [
        text(li) for li in re.findall(r"<li>.*?</li>", section(page, "forward-samples"), re.S)
    ]
    assert samples == [
        "Mix batch 1 MXC-260302-01",
        "Coil 1 CC-260303-001",
        f"Slit coil 1 {CATHODE_SLIT}",
        f"Cells 8 {cell_serial(1)} {cell_serial(2)} {cell_serial(3)} and 5 more",
        f"Modules 2 {MODULES[0]} {MODULES[1]}",
        f"Pack 1 {PACK}",
        f"Vehicle 1 {VIN}",
    ]
    assert re.search(
        rf'href="/api/v1/recall-scope/\?serial={CAM_LOT}&amp;format=csv"[^>]*>Recall scope \(CSV\)',
        downstream,
    )


def test_recall_scope_link_answers_the_csv_of_every_unit(vehicle_thread, qe_client):
    page = get(qe_client, CAM_LOT).content.decode()
    link = re.search(r'<a class="csv-link" href="([^"]+)" data-testid="recall-csv">', page)
    href = html.unescape(link.group(1))

    response = qe_client.get(href)

    assert href == f"/api/v1/recall-scope/?serial={CAM_LOT}&format=csv"
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    assert VIN in body
    assert all(cell_serial(n) in body for n in range(1, 9))


def test_long_branches_are_shortened_per_kind(vehicle_thread, qe_client, monkeypatch):
    monkeypatch.setattr(views, "TREE_PER_KIND", 2)

    page = get(qe_client, PACK).content.decode()

    tree = rows(page, "backward-tree", "li")
    lots = f"also {ELECTROLYTE_LOT}, {SEPARATOR_LOT}"
    assert [r for r in tree if r.startswith(("Module", "Cell", "…"))] == [
        f"Module {MODULES[0]} slot M01",
        f"Cell {cell_serial(1)} slot C01",
        f"Cell {cell_serial(2)} slot C02 {lots}",
        "… and 2 more cells",
        f"Module {MODULES[1]} slot M02",
        f"Cell {cell_serial(5)} slot C01 {lots}",
        f"Cell {cell_serial(6)} slot C02 {lots}",
        "… and 2 more cells",
    ]


def test_cells_beyond_the_detail_limit_get_one_row_each(vehicle_thread, qe_client, monkeypatch):
    monkeypatch.setattr(views, "TREE_CELLS_IN_DETAIL", 2)

    page = get(qe_client, VIN).content.decode()

    tree = rows(page, "backward-tree", "li")
    cells = [r for r in tree if r.startswith("Cell ")]
    assert cells[1:4] == [
        f"Cell {cell_serial(2)} slot C02 also {ELECTROLYTE_LOT}, {SEPARATOR_LOT}",
        f"Cell {cell_serial(3)} slot C03",
        f"Cell {cell_serial(4)} slot C04",
    ]
    # vehicle, pack, 2 modules, 8 cells, cell 1's upstream (2 slit coils, 2 coils, 2 mix
    # batches, 7 lots) and cell 2's 2 slit-coil segments (its lots are folded into its row).
    assert len(tree) == 1 + 1 + 2 + 8 + 13 + 2
