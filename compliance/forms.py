"""Forms of the compliance web pages."""

from django import forms


class TraceForm(forms.Form):
    """What a person scans or types at the trace page: any serial, a VIN, or a GS1
    DataMatrix element string (human-readable with parentheses or raw with ``]d2``)."""

    serial = forms.CharField(
        label="Serial, VIN or GS1 DataMatrix string",
        max_length=200,
        strip=True,
        error_messages={"required": "Scan or type a serial to trace."},
        widget=forms.TextInput(
            attrs={
                "type": "search",
                "autocomplete": "off",
                "autocapitalize": "characters",
                "spellcheck": "false",
                "autofocus": True,
                "placeholder": "e.g. P126480000001, WVWZZZE1ZPP012345 or (01)…(21)…",
            }
        ),
    )
