"""API test fixtures: clients per token scope and per role, and a small production run.

Serials follow the demo plant's schemes: cells ``P1`` + year 26 + week 48 + a 7-digit
counter (``P126480000001``), modules ``M2648000001``, packs ``PK2648000001``, vehicles a
17-character VIN, slit coils ``SC-C-000001-A``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from rest_framework.test import APIClient

from compliance.choices import HoldSource
from compliance.services import hold_place
from genealogy.choices import UnitKind
from genealogy.models import Unit
from genealogy.services import (
    coil_segment_consume,
    coil_slit,
    lot_consume,
    unit_assemble,
    unit_create,
    units_create_bulk,
)
from qms.choices import IntegrationScope
from tests.factories import GTIN, UserFactory, integration_create

PASSWORD = "celltrace-test"


def cell_serial(n: int) -> str:
    return f"P12648{n:07d}"


def gs1(serial: str, *, gtin: str = GTIN, lot: str = "L2611A") -> str:
    """The GS1 element string a cell's DataMatrix carries, in human-readable form."""
    return f"(01){gtin}(21){serial}(10){lot}"


@pytest.fixture
def api_client():
    return APIClient()


def _token_client(name: str, scope: str) -> APIClient:
    _integration, key = integration_create(name, scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def read_client(db):
    """An ERP reading genealogy: token with read scope."""
    return _token_client("erp-gf1", IntegrationScope.READ)


@pytest.fixture
def write_client(db):
    """The MES gateway of line 1: token with read_write scope."""
    return _token_client("mes-gf1", IntegrationScope.READ_WRITE)


@pytest.fixture
def login(db):
    """``login(role)`` -> an API client logged in (session) as a new user in that role."""

    def _login(role: str | None, username: str | None = None) -> APIClient:
        user = UserFactory(username=username or f"{role or 'nobody'}-1", role=role)
        client = APIClient()
        assert client.login(username=user.username, password=PASSWORD)
        client.user = user
        return client

    return _login


@pytest.fixture
def actor(db):
    """The person the fixtures' production run is recorded as."""
    return UserFactory(username="line-lead", role="quality_engineer")


@dataclass
class Run:
    """A small production run on line L1-PRI: a cathode lot, a mother coil slit into a slit
    coil, cells consuming 2.4 m segments of it, a module, a pack and a vehicle."""

    lot: Unit
    mother: Unit
    slit: Unit
    cells: list[Unit]
    module: Unit
    pack: Unit
    vehicle: Unit
    spare_cells: list[Unit] = field(default_factory=list)


@pytest.fixture
def run(plant, actor) -> Run:
    line = plant.line
    lot = unit_create(
        kind=UnitKind.MATERIAL_LOT,
        serial="CAM-NMC811-2611-07",
        line=line,
        material="NMC811 CAM",
        supplier="Umicore",
        actor=actor,
    )
    mother = unit_create(
        kind=UnitKind.COIL, serial="CC-000001", line=line, length_m=3000.0, actor=actor
    )
    slit = unit_create(
        kind=UnitKind.SLIT_COIL, serial="SC-C-000001-A", line=line, length_m=1500.0, actor=actor
    )
    lot_consume(lot=lot, consumer=mother, quantity=412.5, quantity_unit="kg", actor=actor)
    coil_slit(mother=mother, slit_coil=slit, start_m=0.0, end_m=1500.0, actor=actor)
    cells = units_create_bulk(
        kind=UnitKind.CELL, serials=[cell_serial(n) for n in range(1, 7)], line=line, actor=actor
    )
    for i, cell in enumerate(cells[:4]):
        coil_segment_consume(
            coil=slit, consumer=cell, start_m=i * 2.4, end_m=(i + 1) * 2.4, actor=actor
        )
    module = unit_create(kind=UnitKind.MODULE, serial="M2648000001", line=line, actor=actor)
    for i, cell in enumerate(cells[:4]):
        unit_assemble(part=cell, assembly=module, slot=f"C{i + 1:03d}", actor=actor)
    pack = unit_create(kind=UnitKind.PACK, serial="PK2648000001", line=line, actor=actor)
    unit_assemble(part=module, assembly=pack, slot="M01", actor=actor)
    vehicle = unit_create(kind=UnitKind.VEHICLE, serial="WVWZZZE1ZRP000001", actor=actor)
    unit_assemble(part=pack, assembly=vehicle, actor=actor)
    return Run(
        lot=lot,
        mother=mother,
        slit=slit,
        cells=cells[:4],
        module=module,
        pack=pack,
        vehicle=vehicle,
        spare_cells=cells[4:],
    )


@pytest.fixture
def hold(actor):
    """``hold(units, reason)`` -> an open manual hold placed through the service."""

    def _hold(units, reason="Fill mass drift on FILL-01, MRB review", source=HoldSource.MANUAL):
        return hold_place(units=units, reason=reason, source=source, actor=actor)

    return _hold
