"""Forms of the thermal-risk pages: the risk page's period, recording a field return, and the
registry's commands on a risk model.

Each form checks only what a person typed or picked; the rules (which serials exist, that a
cell is in the pack named, that a return is not dated in the future, who may approve, which
state a model must be in) are :mod:`risk.services`' and come back as their errors, shown on
the form under the field they name.
"""

from __future__ import annotations

from django import forms

from .choices import FailureMode

DEFAULT_DAYS = 30
MAX_DAYS = 730
_DAYS_MESSAGE = f"Days is a whole number from 1 to {MAX_DAYS}."


class PeriodForm(forms.Form):
    """How many days back the risk page's score distribution reaches."""

    days = forms.IntegerField(
        label="Days",
        min_value=1,
        max_value=MAX_DAYS,
        required=False,
        initial=DEFAULT_DAYS,
        error_messages={
            "invalid": _DAYS_MESSAGE,
            "min_value": _DAYS_MESSAGE,
            "max_value": _DAYS_MESSAGE,
        },
        widget=forms.NumberInput(attrs={"min": 1, "max": MAX_DAYS, "step": 1}),
    )

    def clean_days(self) -> int:
        return self.cleaned_data.get("days") or DEFAULT_DAYS


class FieldReturnForm(forms.Form):
    """A battery returned from the field. With a cell serial the return is cell-level (that
    cell is labelled); without one it is pack-level (the pack named, or the pack of the
    VIN's vehicle, and each of its cells is labelled with one over their number)."""

    returned_on = forms.DateField(
        label="Returned on",
        # ISO only: what a date input sends, and never 02/11 read as February or November
        input_formats=["%Y-%m-%d"],
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        help_text="Date the return was reported.",
        error_messages={
            "required": "Give the date the return was reported.",
            "invalid": "Give a date as YYYY-MM-DD.",
        },
    )
    failure_mode = forms.ChoiceField(
        label="Failure mode",
        choices=[("", "—"), *FailureMode.choices],
        error_messages={
            "required": "Choose the failure mode.",
            "invalid_choice": "%(value)s is not a failure mode.",
        },
    )
    vin = forms.CharField(
        label="VIN",
        required=False,
        max_length=32,
        strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "off", "placeholder": "17 characters"}),
    )
    pack_serial = forms.CharField(
        label="Pack serial",
        required=False,
        max_length=64,
        strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    cell_serial = forms.CharField(
        label="Cell serial",
        required=False,
        max_length=64,
        strip=True,
        help_text="Only when the analysis found the cell: the return is then cell-level.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    analysis = forms.CharField(
        label="Analysis",
        required=False,
        max_length=5000,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 4}),
    )


class ModelCommandForm(forms.Form):
    """Why a quality engineer approves, activates or retires a risk model (the service
    refuses a command without one)."""

    reason = forms.CharField(
        label="Reason",
        max_length=1000,
        required=False,
        strip=True,
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "placeholder": "e.g. hold-out comparison reviewed"}
        ),
    )
