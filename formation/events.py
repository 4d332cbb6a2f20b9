"""Domain events published by formation (delivered after commit, see ``qms.events``)."""

from qms.events import event


@event
class FormationRunsRecorded:
    """Cycler runs (or further steps of them) were stored for these cells."""

    run_ids: tuple[int, ...]
    unit_ids: tuple[int, ...]


@event
class FormationGraded:
    """Cells were graded. ``failed_ids`` did not pass (no bin, or the K screen);
    ``k_screen_failed_ids`` failed the K screen and must not reach module assembly.
    Compliance holds them."""

    grade_ids: tuple[int, ...]
    cell_ids: tuple[int, ...]
    failed_ids: tuple[int, ...] = ()
    k_screen_failed_ids: tuple[int, ...] = ()
