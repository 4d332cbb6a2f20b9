"""Factories and a small realistic plant for tests.

The plant: site GF1, a prismatic line L1-PRI (DataMatrix, GTIN 09521234543213) with coating,
slitting, fill, module, pack and vehicle-marriage stations, and the control-plan rows the
tests measure against (cathode areal weight 23.0 mg/cm² +-1.5 %, fill mass 410 g +-1 %).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import factory
from django.contrib.auth.models import Group, User

from compliance.roles import roles_sync
from genealogy.choices import UnitKind
from genealogy.models import Unit
from qms.choices import CellFormat, IdentificationMethod, ProcessStep, SpecialCharacteristic
from qms.models import Characteristic, Equipment, Integration, Line, Site, Station

GTIN = "09521234543213"
CELL_SCHEME = r"P1[0-9]{2}[0-9]{2}[0-9]{7}"  # P1 + year + week + 7-digit counter


class SiteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Site
        django_get_or_create = ("code",)

    code = "gf1"
    name = "Gigafactory 1"
    country = "DE"


class LineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Line
        django_get_or_create = ("site", "code")

    site = factory.SubFactory(SiteFactory)
    code = "l1-pri"
    name = "Prismatic line 1 (NMC811, 105 Ah)"
    cell_format = CellFormat.PRISMATIC
    identification_method = IdentificationMethod.DATAMATRIX
    serial_scheme = r"[A-Z0-9-]{4,40}"
    gtin = GTIN


class StationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Station
        django_get_or_create = ("line", "code")

    line = factory.SubFactory(LineFactory)
    code = factory.Sequence(lambda n: f"st-{n:02d}")
    name = factory.LazyAttribute(lambda o: o.code.upper())
    process_step = ProcessStep.CELL_ASSEMBLY
    sequence = factory.Sequence(lambda n: n * 10)


class UnitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Unit

    kind = UnitKind.CELL
    serial = factory.Sequence(lambda n: f"P1264{n:07d}")
    line = factory.SubFactory(LineFactory)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "celltrace-test")

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        if extracted:
            if not Group.objects.filter(name=extracted).exists():
                roles_sync()  # a transactional test flushed the groups the migration made
            self.groups.add(Group.objects.get(name=extracted))
        self.save()


def integration_create(name: str, scope: str) -> tuple[Integration, str]:
    """An integration with its own user; returns it with its clear-text token."""
    user = UserFactory(username=f"int-{name}", role="integration")
    key = Integration.generate_key()
    integration = Integration(name=name, user=user, scope=scope)
    integration.set_key(key)
    integration.save()
    return integration, key


@dataclass
class Plant:
    site: Site
    line: Line
    stations: dict[str, Station] = field(default_factory=dict)
    equipment: dict[str, Equipment] = field(default_factory=dict)
    chars: dict[str, Characteristic] = field(default_factory=dict)


def build_plant() -> Plant:
    line = LineFactory()
    plant = Plant(site=line.site, line=line)
    for seq, (code, step) in enumerate(
        [
            ("coat-c", ProcessStep.COATING),
            ("slit-c", ProcessStep.SLITTING),
            ("fill", ProcessStep.ELECTROLYTE_FILL),
            ("mod-asm", ProcessStep.MODULE_ASSEMBLY),
            ("pack-asm", ProcessStep.PACK_ASSEMBLY),
            ("marriage", ProcessStep.VEHICLE_MARRIAGE),
        ]
    ):
        plant.stations[code] = StationFactory(
            line=line, code=code, process_step=step, sequence=(seq + 1) * 10
        )
    plant.equipment["coater"] = Equipment.objects.create(
        station=plant.stations["coat-c"], code="coater-1", name="Slot-die coater 1"
    )
    plant.equipment["weigher"] = Equipment.objects.create(
        station=plant.stations["fill"], code="cw-1", name="Check-weigher 1"
    )
    plant.chars["coat_weight"] = Characteristic.objects.create(
        station=plant.stations["coat-c"],
        code="cathode-areal-weight",
        name="Cathode areal weight",
        unit="mg/cm²",
        nominal=23.0,
        lsl=22.655,
        usl=23.345,
        measurement_method="beta-ray basis-weight gauge, traversing",
        sample_size=1,
        sample_frequency="continuous, every 0.5 m",
        reaction_plan="Hold coil segment; MRB.",
        special_class=SpecialCharacteristic.SC,
    )
    plant.chars["fill_mass"] = Characteristic.objects.create(
        station=plant.stations["fill"],
        code="electrolyte-fill-mass",
        name="Electrolyte fill mass",
        unit="g",
        nominal=410.0,
        lsl=405.9,
        usl=414.1,
        measurement_method="check-weigher",
        sample_size=1,
        sample_frequency="100 %",
        reaction_plan="Hold cell; re-weigh.",
        special_class=SpecialCharacteristic.CC,
    )
    return plant
