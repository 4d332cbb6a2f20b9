"""Ingest handler of the ``inspection`` envelope kind (one frame from a vision worker).

Registered in :meth:`inspection.apps.InspectionConfig.ready` with the payload schema of
:mod:`inspection.schema`. The envelope's ``station`` is the camera's station and ``unit`` is
the coil under the camera. Every refusal names the envelope field to fix; the handler runs
in the savepoint the ingest opens per message, so a refusal writes nothing.
"""

from __future__ import annotations

from genealogy.choices import METRED_KINDS
from genealogy.queries import unit_find
from qms.exceptions import InvalidInput, NotFound
from qms.ingest.envelope import Envelope
from qms.ingest.registry import UNKNOWN_UNIT
from qms.ingest.services import HandlerContext

from . import services


def handle_inspection(env: Envelope, ctx: HandlerContext) -> None:
    if not env.unit:
        raise InvalidInput("An inspection result names its coil in 'unit'.", field="unit")
    camera = services.camera_get(station=env.station, camera=env.payload["camera"])
    coil = unit_find(env.unit)
    if coil is None:
        raise NotFound(f"Unknown coil {env.unit!r}.", field="unit", code=UNKNOWN_UNIT)
    if coil.kind not in METRED_KINDS:
        raise InvalidInput(f"{coil.serial} is not a coil.", field="unit")
    services.inspection_record(
        camera=camera, coil=coil, payload=env.payload, message_id=env.message_id
    )
