"""A 21700 cylindrical line for the ingest handler tests, and envelopes as its stations send
them.

Line ``gf1/l2-cyl`` (NMC811/graphite 21700, 5.0 Ah) with build_plant's station codes:
``coat-c`` (cathode areal weight 23.0 mg/cm² +-1.5 %, beta gauge ``coater-1``), ``slit-c``,
``wind`` (consumes slit-coil metres), ``fill`` (electrolyte fill mass 5.00 g +-1 %,
check-weigher ``cw-1``), ``mod-asm`` (46 cells per module), ``pack-asm`` and ``marriage``.
Serials follow the demo plant: cells ``C2`` + year + week + 6 digits (``C22648000001``),
coils ``EC2-C-000123`` (slit lanes ``-A`` .. ``-L``), modules ``MOD2-000001``, packs
``PCK2-000001``, vehicles a VIN, electrolyte lots ``ELY-E12-000042``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from qms.choices import CellFormat, IdentificationMethod, ProcessStep, SpecialCharacteristic
from qms.ingest.envelope import build
from qms.ingest.services import RawMessage
from qms.models import Characteristic, Equipment, Line, Station
from tests.factories import SiteFactory

SITE, LINE = "gf1", "l2-cyl"
GTIN = "04260123450021"
SCHEME = r"C2[0-9]{10}|MX2-[CA]-[0-9]{6}|EC2-[CA]-[0-9]{6}(-[A-L])?|MOD2-[0-9]{6}|PCK2-[0-9]{6}"
VIN_1 = "WCTPH2C81TG000001"
ELECTROLYTE_LOT = "ELY-E12-000042"


def cell(n: int) -> str:
    """Cell serial, week 48 of 2026: ``C22648000001``."""
    return f"C22648{n:06d}"


def gs1(serial: str) -> str:
    """The cell's DataMatrix content in human-readable form."""
    return f"(01){GTIN}(21){serial}"


@dataclass
class Line21700:
    line: Line
    stations: dict[str, Station] = field(default_factory=dict)
    equipment: dict[str, Equipment] = field(default_factory=dict)
    chars: dict[str, Characteristic] = field(default_factory=dict)


def build_line_21700() -> Line21700:
    line = Line.objects.create(
        site=SiteFactory(),
        code=LINE,
        name="Cylindrical line 2 (21700 NMC811, 5.0 Ah)",
        cell_format=CellFormat.CYLINDRICAL,
        identification_method=IdentificationMethod.LASER_MARK,
        serial_scheme=SCHEME,
        gtin=GTIN,
    )
    plant = Line21700(line=line)
    for seq, (code, step) in enumerate(
        [
            ("coat-c", ProcessStep.COATING),
            ("slit-c", ProcessStep.SLITTING),
            ("wind", ProcessStep.WINDING_STACKING),
            ("fill", ProcessStep.ELECTROLYTE_FILL),
            ("mod-asm", ProcessStep.MODULE_ASSEMBLY),
            ("pack-asm", ProcessStep.PACK_ASSEMBLY),
            ("marriage", ProcessStep.VEHICLE_MARRIAGE),
        ]
    ):
        plant.stations[code] = Station.objects.create(
            line=line, code=code, name=code.upper(), process_step=step, sequence=(seq + 1) * 10
        )
    plant.equipment["coater"] = Equipment.objects.create(
        station=plant.stations["coat-c"], code="coater-1", name="Slot-die coater with beta gauge"
    )
    plant.equipment["weigher"] = Equipment.objects.create(
        station=plant.stations["fill"], code="cw-1", name="Check-weigher (before/after fill)"
    )
    plant.chars["areal_weight"] = Characteristic.objects.create(
        station=plant.stations["coat-c"],
        code="cathode-areal-weight",
        name="Cathode areal weight, per side",
        unit="mg/cm²",
        nominal=23.0,
        lsl=22.655,
        usl=23.345,
        measurement_method="beta-ray basis-weight gauge, traversing",
        sample_frequency="continuous, every 0.5 m",
        reaction_plan="Hold the coil segment; MRB.",
        special_class=SpecialCharacteristic.SC,
    )
    plant.chars["fill_mass"] = Characteristic.objects.create(
        station=plant.stations["fill"],
        code="electrolyte-fill-mass",
        name="Electrolyte fill mass (1.0 g/Ah)",
        unit="g",
        nominal=5.0,
        lsl=4.95,
        usl=5.05,
        measurement_method="weight after fill minus weight before fill",
        sample_frequency="100 %",
        reaction_plan="Hold the cell; re-weigh.",
        special_class=SpecialCharacteristic.CC,
    )
    return plant


def an_hour_ago() -> datetime:
    return (timezone.now() - timedelta(hours=1)).replace(microsecond=0)


def envelope(
    kind: str,
    *,
    station: str,
    payload: dict,
    message_id: str,
    sent_at: datetime,
    unit: str | None = None,
    units: list[str] | None = None,
    equipment: str | None = None,
) -> dict:
    return build(
        kind=kind,
        site=SITE,
        line=LINE,
        station=station,
        payload=payload,
        source=f"{station.upper()} PLC",
        message_id=message_id,
        sent_at=sent_at,
        unit=unit,
        units=units,
        equipment=equipment,
    )


def raw(doc: dict | bytes, *, transport: str = "direct", origin: str = "") -> RawMessage:
    """What a transport hands to ``ingest_raw`` (MQTT-like origin unless given)."""
    if isinstance(doc, dict):
        origin = origin or f"qms/{doc['site']}/{doc['line']}/{doc['station']}/{doc['kind']}"
        doc = json.dumps(doc).encode()
    return RawMessage(payload=doc, transport=transport, origin=origin or "test")


def fill_result(
    serial: str,
    *,
    message_id: str,
    sent_at: datetime,
    mass_g: float = 5.01,
    unit_kind: str | None = "cell",
    **measurement,
) -> dict:
    """The fill station's result for one cell: fill mass on the check-weigher."""
    payload = {
        "result": "ok",
        "program": "FILL-21700-E12",
        "operator": "op-4711",
        "measurements": [
            {"characteristic": "electrolyte-fill-mass", "value": mass_g, "unit": "g", **measurement}
        ],
    }
    if unit_kind:
        payload["unit_kind"] = unit_kind
    return envelope(
        "process_result",
        station="fill",
        equipment="cw-1",
        unit=serial,
        payload=payload,
        message_id=message_id,
        sent_at=sent_at,
    )
