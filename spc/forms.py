"""Forms of the SPC web pages: the overview's filters and sort, the chart window, the
acknowledgement of an alarm and the approval of control limits.

Each form checks only what a person typed or picked; the rules (who may act, what state
an alarm or a limits version must be in) are the services' and come back as their errors,
shown on the form under the field they name.
"""

from __future__ import annotations

from django import forms

#: Points a chart shows: the last N values (individuals) or subgroups' values.
WINDOW_CHOICES = [(100, "Last 100"), (500, "Last 500"), (2000, "Last 2,000")]
DEFAULT_WINDOW = 500

#: States of a characteristic, worst first (the overview's default order).
STATE_CHOICES = [
    ("out_of_spec", "Out of spec"),
    ("alarm", "Alarm"),
    ("no_limits", "No limits"),
    ("insufficient_data", "Insufficient data"),
    ("in_control", "In control"),
]

#: Overview columns that sort (``?sort=cpk``, ``?sort=-last``).
SORT_COLUMNS = {
    "site": "Site",
    "line": "Line",
    "station": "Station",
    "code": "Code",
    "name": "Name",
    "unit": "Unit",
    "class": "CC/SC",
    "state": "State",
    "last": "Last value (UTC)",
    "alarms": "Open alarms",
    "cpk": "Cpk",
}
DEFAULT_SORT = "state"


def _sort_choices() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, label in SORT_COLUMNS.items():
        out += [(key, f"{label}, ascending"), (f"-{key}", f"{label}, descending")]
    return out


class OverviewForm(forms.Form):
    """Filters and sort of the plant overview. The line and station choices are those
    of the active characteristics (set by the view)."""

    line = forms.TypedChoiceField(label="Line", required=False, coerce=int, empty_value=None)
    station = forms.TypedChoiceField(label="Station", required=False, coerce=int, empty_value=None)
    state = forms.ChoiceField(
        label="State", required=False, choices=[("", "Any state"), *STATE_CHOICES]
    )
    sort = forms.ChoiceField(label="Sort", required=False, choices=_sort_choices())

    def __init__(
        self,
        data=None,
        *,
        lines: list[tuple[int, str]],
        stations: list[tuple[int, str]],
    ) -> None:
        super().__init__(data)
        self.fields["line"].choices = [("", "All lines"), *lines]
        self.fields["station"].choices = [("", "All stations"), *stations]

    def clean_sort(self) -> str:
        return self.cleaned_data.get("sort") or DEFAULT_SORT


class ChartWindowForm(forms.Form):
    """How many of the latest values the chart (and its downloads) show."""

    last = forms.TypedChoiceField(
        label="Points",
        choices=WINDOW_CHOICES,
        coerce=int,
        required=False,
        empty_value=DEFAULT_WINDOW,
        error_messages={
            "invalid_choice": "Show the last 100, 500 or 2,000 values (got %(value)s)."
        },
    )

    def clean_last(self) -> int:
        return self.cleaned_data.get("last") or DEFAULT_WINDOW


class AlarmAcknowledgeForm(forms.Form):
    """The cause found for an open alarm ('none found' is a cause) and a comment."""

    cause = forms.CharField(
        label="Cause found",
        max_length=500,
        strip=True,
        error_messages={"required": "Acknowledging an alarm needs the cause found."},
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "placeholder": "e.g. nozzle 3 partly blocked"}
        ),
    )
    comment = forms.CharField(
        label="Comment",
        max_length=2000,
        required=False,
        strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )


class LimitsApproveForm(forms.Form):
    """Why the quality engineer puts a draft of control limits in force."""

    reason = forms.CharField(
        label="Reason",
        max_length=1000,
        strip=True,
        error_messages={"required": "Approving control limits needs a reason."},
        widget=forms.Textarea(
            attrs={
                "rows": 2,
                "placeholder": "e.g. baseline week 48, shift A, no assignable causes",
            }
        ),
    )
