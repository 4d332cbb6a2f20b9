"""Domain events published by inspection (delivered after commit, see ``qms.events``)."""

from qms.events import event


@event
class VisionFlagged:
    """Cells consumed coil metres that vision flagged for a hold (a defect to quarantine or
    stop for, a confirmed review, or an uninspected stretch). Compliance holds them."""

    flag_ids: tuple[int, ...]
    unit_ids: tuple[int, ...]


@event
class CountCharacteristicsCreated:
    """Vision made its defect-count characteristics (one per class and camera, counts per
    10 m of coil). They are charted as c charts; compliance has SPC configure them."""

    characteristic_ids: tuple[int, ...]
