"""Forms of the inspection web pages: the overview's period, acknowledging a coil flag, a
reviewer's verdict on a defect and the registry's commands on a vision model.

Each form checks only what a person typed or picked; the rules (a reclassification needs the
true class, which state a model must be in, who may approve) are the services' and come back
as their errors, shown on the form under the field they name.
"""

from __future__ import annotations

from django import forms

from .choices import ReviewVerdict
from .schema import DEFECT_CLASSES

DEFAULT_DAYS = 7
MAX_DAYS = 366


class PeriodForm(forms.Form):
    """How many days back the overview's Pareto and coil list reach."""

    days = forms.IntegerField(
        label="Days",
        min_value=1,
        max_value=MAX_DAYS,
        required=False,
        initial=DEFAULT_DAYS,
        error_messages={
            "invalid": "Days is a whole number from 1 to 366.",
            "min_value": "Days is a whole number from 1 to 366.",
            "max_value": "Days is a whole number from 1 to 366.",
        },
        widget=forms.NumberInput(attrs={"min": 1, "max": MAX_DAYS, "step": 1}),
    )

    def clean_days(self) -> int:
        return self.cleaned_data.get("days") or DEFAULT_DAYS


class FlagAcknowledgeForm(forms.Form):
    """A note that a person has seen a flag (the hold, if any, stays)."""

    comment = forms.CharField(
        label="Comment",
        max_length=300,
        required=False,
        strip=True,
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "placeholder": "e.g. encoder cable reseated"}
        ),
    )


class DefectReviewForm(forms.Form):
    """A reviewer's verdict on a defect from the review queue: confirm, reclassify (with the
    true class) or false call, and a comment."""

    verdict = forms.ChoiceField(
        label="Verdict",
        choices=ReviewVerdict.choices,
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose a verdict: confirm, reclassify or false call.",
            "invalid_choice": "Choose a verdict: confirm, reclassify or false call "
            "(got %(value)s).",
        },
    )
    label = forms.ChoiceField(
        label="True class",
        required=False,
        choices=[("", "—"), *[(c, c) for c in DEFECT_CLASSES]],
        error_messages={"invalid_choice": "%(value)s is not a defect class."},
    )
    comment = forms.CharField(
        label="Comment",
        max_length=500,
        required=False,
        strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )


class ModelCommandForm(forms.Form):
    """Why a quality engineer approves, activates or retires a vision model (the service
    refuses a command without one)."""

    reason = forms.CharField(
        label="Reason",
        max_length=1000,
        required=False,
        strip=True,
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "placeholder": "e.g. acceptance run 2026-03, lot 7"}
        ),
    )
