"""Read-side selectors for plant topology and the control plan."""

from django.db.models import QuerySet

from .models import Station


def station_list(*, line_id: int) -> QuerySet[Station]:
    """The stations of a line in process order."""
    return (
        Station.objects.filter(line_id=line_id).select_related("line").order_by("sequence", "code")
    )
