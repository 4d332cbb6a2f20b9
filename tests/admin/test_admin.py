"""Django admin: every page renders, units show their links and history, status changes go
through the compliance services, append-only records stay read-only."""

import re

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from compliance.choices import HoldStatus
from compliance.models import Hold
from genealogy.choices import UnitStatus
from genealogy.models import Measurement, Unit
from genealogy.services import MeasurementInput, measurements_record
from qms.models import Integration
from tests.api.conftest import cell_serial, gs1
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

CELTRACE_APPS = {"qms", "genealogy", "compliance"}


def staff(role: str) -> Client:
    user = UserFactory(username=f"{role}-staff", role=role, is_staff=True)
    client = Client()
    client.force_login(user)
    client.user = user
    return client


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def unit_url(unit: Unit, view: str = "change") -> str:
    return reverse(f"admin:genealogy_unit_{view}", args=[unit.pk])


@pytest.fixture
def measured(run, plant, actor):
    return measurements_record(
        rows=[
            MeasurementInput(
                unit_id=run.cells[0].pk,
                characteristic_id=plant.chars["fill_mass"].pk,
                value=410.4,
                measured_at=run.cells[0].produced_at,
            )
        ],
        actor=actor,
    )


def test_every_model_has_an_admin_and_its_pages_render(admin_client, run, hold, measured):
    hold([run.cells[0]])
    models = [m for m in admin.site._registry if m._meta.app_label in CELTRACE_APPS]
    names = {f"{m._meta.app_label}.{m.__name__}" for m in models}
    assert names >= {
        "qms.Site",
        "qms.Line",
        "qms.Station",
        "qms.Equipment",
        "qms.Characteristic",
        "qms.Integration",
        "genealogy.Unit",
        "genealogy.Link",
        "genealogy.StationVisit",
        "genealogy.Measurement",
        "compliance.Hold",
        "compliance.HoldUnit",
    }
    for model in models:
        opts = model._meta
        text(admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")))
        obj = model.objects.first()
        if obj is None:
            continue
        change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        text(admin_client.get(change))
        if hasattr(model, "history"):
            history = reverse(f"admin:{opts.app_label}_{opts.model_name}_history", args=[obj.pk])
            text(admin_client.get(history))


def test_unit_page_shows_upstream_and_downstream_links_and_holds(admin_client, run, hold):
    held = hold([run.module], reason="Module busbar weld resistance 0.31 mΩ above 0.25")
    page = text(admin_client.get(unit_url(run.module)))
    assert "Upstream links (first 100)" in page
    assert "Downstream links (first 100)" in page
    for cell in run.cells:
        assert f"Cell {cell.serial}</a>" in page
    assert "Pack PK2648000001</a>" in page
    assert held.number in page
    assert "Module busbar weld resistance 0.31 mΩ above 0.25" in page
    assert "4 upstream</a>" in page
    assert "1 downstream</a>" in page


def test_unit_history_page_shows_who_and_why(admin_client, run, hold):
    held = hold([run.cells[0]], reason="Fill mass 404.1 g below LSL")
    page = text(admin_client.get(unit_url(run.cells[0], "history")))
    assert f"{held.number} placed: Fill mass 404.1 g below LSL" in page
    assert "line-lead" in page  # the acting user


def test_history_cannot_be_reverted(admin_client, run, hold):
    hold([run.cells[0]])
    version = run.cells[0].history.earliest()
    url = reverse("admin:genealogy_unit_simple_history", args=[run.cells[0].pk, version.history_id])
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"material": "x"})
    assert response.status_code == 403
    assert Unit.objects.get(pk=run.cells[0].pk).status == UnitStatus.ON_HOLD


def test_search_by_serial_gs1_and_prefix(admin_client, run):
    url = reverse("admin:genealogy_unit_changelist")

    def found(q: str) -> list[str]:
        page = text(admin_client.get(url, {"q": q}))
        return re.findall(r'<th class="field-serial"><a [^>]*>([^<]+)</a>', page)

    assert found(cell_serial(2)) == [cell_serial(2)]
    assert found(gs1(cell_serial(2))) == [cell_serial(2)]
    assert sorted(found("P1264800000*")) == [cell_serial(n) for n in range(1, 7)]
    assert found("P1264") == []


def test_list_filters_kind_status_line(admin_client, run, hold):
    hold([run.cells[1]])
    url = reverse("admin:genealogy_unit_changelist")
    page = text(
        admin_client.get(
            url,
            {
                "kind__exact": "cell",
                "status__exact": "on_hold",
                "line__id__exact": run.cells[1].line_id,
            },
        )
    )
    assert re.findall(r'<th class="field-serial"><a [^>]*>([^<]+)</a>', page) == [cell_serial(2)]


def test_status_is_read_only_in_the_unit_form(run):
    qe = staff("quality_engineer")
    cell = run.cells[0]
    page = text(qe.get(unit_url(cell)))
    assert 'name="status"' not in page
    response = qe.post(
        unit_url(cell),
        {
            "material": "",
            "supplier": "",
            "status": "scrapped",
            "status_reason": "typed in the admin",
            **_empty_inlines(),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    cell.refresh_from_db()
    assert (cell.status, cell.status_reason) == (UnitStatus.IN_PROCESS, "")


def _empty_inlines() -> dict:
    """Management forms of the read-only inlines on the unit page."""
    data = {}
    for prefix in ("upstream_links", "downstream_links", "hold_units"):
        data.update(
            {
                f"{prefix}-TOTAL_FORMS": "0",
                f"{prefix}-INITIAL_FORMS": "0",
                f"{prefix}-MIN_NUM_FORMS": "0",
                f"{prefix}-MAX_NUM_FORMS": "1000",
            }
        )
    return data


def test_place_hold_action_goes_through_the_service(run):
    operator = staff("operator")
    changelist = text(operator.get(reverse("admin:genealogy_unit_changelist")))
    assert 'value="place_hold"' in changelist
    assert 'name="reason"' in changelist  # typed next to the action
    response = operator.post(
        reverse("admin:genealogy_unit_changelist"),
        {
            "action": "place_hold",
            "_selected_action": [run.cells[0].pk, run.cells[1].pk],
            "reason": "Separator fold seen by VIS-03",
            "source": "vision",
        },
        follow=True,
    )
    hold = Hold.objects.get()
    assert f"{hold.number} placed on 2 unit(s): Separator fold seen by VIS-03" in text(response)
    assert (hold.source, hold.placed_by) == ("vision", operator.user)
    assert [Unit.objects.get(pk=c.pk).status for c in run.cells[:2]] == ["on_hold", "on_hold"]
    latest = Unit.objects.get(pk=run.cells[0].pk).history.latest()
    assert latest.history_change_reason == f"{hold.number} placed: Separator fold seen by VIS-03"
    assert latest.history_user == operator.user


def test_place_hold_action_without_reason_writes_nothing(run):
    operator = staff("operator")
    response = operator.post(
        reverse("admin:genealogy_unit_changelist"),
        {"action": "place_hold", "_selected_action": [run.cells[0].pk], "reason": ""},
        follow=True,
    )
    assert "No hold placed: A hold needs a reason." in text(response)
    assert not Hold.objects.exists()
    assert Unit.objects.get(pk=run.cells[0].pk).status == UnitStatus.IN_PROCESS


def test_release_action_restores_status(run, hold):
    held = hold([run.cells[0], run.cells[1]])
    qe = staff("quality_engineer")
    response = qe.post(
        reverse("admin:compliance_hold_changelist"),
        {
            "action": "release",
            "_selected_action": [held.pk],
            "reason": "MRB-2026-112: re-weighed, within limits",
        },
        follow=True,
    )
    assert f"Released {held.number}." in text(response)
    held.refresh_from_db()
    assert (held.status, held.released_by, held.release_reason) == (
        HoldStatus.RELEASED,
        qe.user,
        "MRB-2026-112: re-weighed, within limits",
    )
    assert [Unit.objects.get(pk=c.pk).status for c in run.cells[:2]] == ["in_process"] * 2


def test_operator_cannot_release(run, hold):
    held = hold([run.cells[0]])
    operator = staff("operator")
    page = text(operator.get(reverse("admin:compliance_hold_changelist")))
    assert 'value="release"' not in page
    operator.post(
        reverse("admin:compliance_hold_changelist"),
        {"action": "release", "_selected_action": [held.pk], "reason": "looks fine"},
    )
    assert Hold.objects.get(pk=held.pk).status == HoldStatus.OPEN


def test_hold_page_lists_units_and_is_read_only(admin_client, run, hold):
    held = hold(run.cells, reason="Coating weight above USL at m 410-425")
    page = text(admin_client.get(reverse("admin:compliance_hold_change", args=[held.pk])))
    for cell in run.cells:
        assert f"Cell {cell.serial}</a>" in page
    assert 'name="reason"' not in page  # no edit form
    assert admin_client.get(reverse("admin:compliance_hold_add")).status_code == 403
    search = text(
        admin_client.get(reverse("admin:compliance_hold_changelist"), {"q": cell_serial(3)})
    )
    assert held.number in search


def test_measurements_are_read_only(admin_client, measured):
    m = measured[0]
    assert admin_client.get(reverse("admin:genealogy_measurement_add")).status_code == 403
    page = text(admin_client.get(reverse("admin:genealogy_measurement_change", args=[m.pk])))
    assert 'name="value"' not in page
    assert 'name="_save"' not in page
    admin_client.post(reverse("admin:genealogy_measurement_change", args=[m.pk]), {"value": "1"})
    assert Measurement.objects.get(pk=m.pk).value == 410.4
    listing = text(admin_client.get(reverse("admin:genealogy_measurement_changelist")))
    assert "electrolyte-fill-mass" in listing


def test_integration_add_shows_the_token_once(admin_client, plant):
    response = admin_client.post(
        reverse("admin:qms_integration_add"),
        {"name": "plc-gw-l1", "scope": "read"},
        follow=True,
    )
    page = text(response)
    match = re.search(r"Token for plc-gw-l1 \(shown once, store it now\): ([\w-]+)", page)
    assert match, page
    integration = Integration.objects.get(name="plc-gw-l1")
    assert integration.key_hash == Integration.hash_key(match.group(1))
    assert integration.user.username == "int-plc-gw-l1"
    again = text(admin_client.get(reverse("admin:qms_integration_change", args=[integration.pk])))
    assert match.group(1) not in again
