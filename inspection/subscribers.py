"""Inspection's reactions to events of lower layers (registered in ``apps.py``)."""

from genealogy.events import UnitsLinked


def flag_cells_from_flagged_metres(evt: UnitsLinked) -> None:
    from .tasks import flags_for_links_task

    flags_for_links_task.delay(link_ids=list(evt.link_ids))
