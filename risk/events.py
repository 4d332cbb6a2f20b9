"""Domain events published by risk (delivered after commit, see ``qms.events``)."""

from qms.events import event


@event
class CellsScored:
    """Cells were given a thermal-risk score by ``model_version``."""

    score_ids: tuple[int, ...]
    unit_ids: tuple[int, ...]
    model_version: str


@event
class CellsQuarantined:
    """Cells scored above their product's quarantine threshold. ``score_ids[i]`` is the
    score that quarantined ``unit_ids[i]`` (its reasons say why). Compliance holds them,
    so the module-assembly interlock refuses them."""

    score_ids: tuple[int, ...]
    unit_ids: tuple[int, ...]
    model_version: str
