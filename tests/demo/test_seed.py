"""seed_demo: the demo plant, its control plan, users and tokens; idempotent."""

import re
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from compliance.demo import plant
from genealogy.serials import parse_serial
from qms.choices import ProcessStep, SpecialCharacteristic
from qms.models import Characteristic, Equipment, Integration, Line, Site, Station

pytestmark = pytest.mark.django_db


def _counts() -> dict[str, int]:
    return {
        "sites": Site.objects.count(),
        "lines": Line.objects.count(),
        "stations": Station.objects.count(),
        "equipment": Equipment.objects.count(),
        "characteristics": Characteristic.objects.count(),
        "characteristic_history": Characteristic.history.count(),
        "users": User.objects.count(),
        "integrations": Integration.objects.count(),
    }


def _char(line: str, station: str, code: str) -> Characteristic:
    return Characteristic.objects.get(station__line__code=line, station__code=station, code=code)


def test_seed_twice_gives_the_same_rows_and_writes_nothing_the_second_time():
    out = StringIO()
    call_command("seed_demo", stdout=out)
    first = _counts()
    call_command("seed_demo", stdout=out)

    assert _counts() == first
    assert first == {
        "sites": 1,
        "lines": 2,
        "stations": 40,
        "equipment": 88,
        "characteristics": 54,
        "characteristic_history": 54,
        "users": 7,
        "integrations": 2,
    }
    assert out.getvalue().splitlines()[-1] == "Demo plant already loaded; nothing changed."


def test_seed_leaves_a_changed_control_plan_alone():
    plant.seed()
    fill = _char("L2-CYL", "fill", "fill-mass")
    fill.usl = 5.04
    fill.save()

    result = plant.seed()

    fill.refresh_from_db()
    assert (fill.usl, result.changed) == (5.04, False)


def test_lines_cover_every_process_step_they_run():
    plant.seed()
    site = Site.objects.get(code="GF1")
    assert (site.country, site.lines.count()) == ("DE", 2)
    no_degassing = {s.value for s in ProcessStep} - {ProcessStep.DEGASSING}
    for code in ("L1-PRI", "L2-CYL"):
        steps = set(Station.objects.filter(line__code=code).values_list("process_step", flat=True))
        assert steps == no_degassing, code
        bare = Station.objects.filter(line__code=code, equipment__isnull=True)
        assert not bare.exists(), f"{code}: stations without equipment"


def test_line_identification_gtin_and_serial_scheme():
    plant.seed()
    pri = Line.objects.get(code="L1-PRI")
    cyl = Line.objects.get(code="L2-CYL")
    assert (pri.cell_format, pri.identification_method) == ("prismatic", "datamatrix")
    assert (cyl.cell_format, cyl.identification_method) == ("cylindrical", "laser_mark")

    parsed = parse_serial("(01)04260123450014(11)260518(10)L1260518A(21)P10000000001", line=pri)
    assert (parsed.serial, parsed.gtin, parsed.batch_lot) == (
        "P10000000001",
        "04260123450014",
        "L1260518A",
    )
    for serial in ("P10000000001", "MX1-C-000001", "EC1-A-000002", "EC1-C-000001-D",
                   "MOD1-000001", "PCK1-000001"):  # fmt: skip
        assert re.fullmatch(pri.serial_scheme, serial), serial
    for serial in ("C20000000001", "EC2-C-000001-J", "MOD2-000001", "PCK2-000001"):
        assert re.fullmatch(cyl.serial_scheme, serial), serial
    assert not re.fullmatch(pri.serial_scheme, "C20000000001")


def test_control_plan_rows_carry_limits_method_frequency_reaction_and_class():
    plant.seed()
    loading = _char("L1-PRI", "coat-c", "cathode-areal-loading")
    assert (loading.unit, loading.nominal, loading.lsl, loading.usl) == (
        "mg/cm²",
        23.0,
        22.655,
        23.345,
    )
    assert loading.special_class == SpecialCharacteristic.SC
    assert loading.sample_frequency == "continuous, one value per 10 m"

    assert _char("L1-PRI", "slit-c", "cathode-burr").usl == 10.0  # Al
    assert _char("L1-PRI", "slit-a", "anode-burr").usl == 15.0  # Cu
    fill_pri = _char("L1-PRI", "fill", "fill-mass")
    fill_cyl = _char("L2-CYL", "fill", "fill-mass")
    assert (fill_pri.lsl, fill_pri.nominal, fill_pri.usl) == (156.42, 158.0, 159.58)
    assert (fill_cyl.lsl, fill_cyl.nominal, fill_cyl.usl) == (4.95, 5.0, 5.05)
    assert fill_cyl.special_class == SpecialCharacteristic.CC
    dcir = _char("L2-CYL", "grade", "dcir")
    assert (dcir.unit, dcir.lsl, dcir.nominal, dcir.usl) == ("mΩ", 20.0, 27.0, 35.0)
    leak = _char("L1-PRI", "seal", "he-leak-rate")
    assert (leak.unit, leak.lsl, leak.usl, leak.special_class) == ("mbar·L/s", None, 1e-6, "cc")
    pull = _char("L1-PRI", "tabweld", "tab-pull-force")
    assert (pull.sample_size, pull.lsl, pull.usl) == (2, 150.0, None)
    assert "weld batch" in pull.sample_frequency
    assert _char("L2-CYL", "aging", "k-value").unit == "mV/day"
    assert _char("L1-PRI", "asm", "insulation-resistance").unit == "MΩ"
    for char in Characteristic.objects.all():
        assert char.measurement_method and char.sample_frequency and char.reaction_plan, char
        assert char.lsl is None or char.usl is None or char.lsl < char.nominal < char.usl, char


def test_demo_users_have_their_role_and_documented_password():
    plant.seed()
    for demo in plant.DEMO_USERS:
        user = User.objects.get(username=demo.username)
        assert user.check_password(demo.password), demo.username
        if demo.superuser:
            assert user.is_superuser and user.is_staff
        else:
            assert list(user.groups.values_list("name", flat=True)) == [demo.role]
    roles = {u.role for u in plant.DEMO_USERS}
    assert roles == {"superuser", "operator", "quality_engineer", "mrb_member", "auditor"}


def test_integrations_store_only_the_hash_of_the_fixed_demo_tokens():
    plant.seed()
    ro = Integration.objects.get(name="ERP reader (demo)")
    rw = Integration.objects.get(name="MES gateway (demo)")
    assert (ro.scope, rw.scope) == ("read", "read_write")
    for integration, demo in ((ro, plant.DEMO_INTEGRATIONS[0]), (rw, plant.DEMO_INTEGRATIONS[1])):
        assert integration.key_hash == Integration.hash_key(demo.token)
        assert demo.token not in (integration.key_hash, integration.key_prefix)
        assert list(integration.user.groups.values_list("name", flat=True)) == ["integration"]
        assert not integration.user.has_usable_password()


def test_demo_logins_prints_every_login_and_token():
    out = StringIO()
    call_command("demo_logins", stdout=out)
    text = out.getvalue()
    for demo in plant.DEMO_USERS:
        assert f"{demo.username:<10} {demo.password:<20} {demo.may}" in text
    for demo in plant.DEMO_INTEGRATIONS:
        assert demo.token in text
    assert (
        'curl -H "Authorization: Token ctdemo-read-2c7d9f41e6b85a03" '
        "http://127.0.0.1:8000/api/v1/plant/lines/"
    ) in text
