"""Maccor text exports (MacTest32 / MIMS "export data", tab-separated).

Layout facts the reader relies on:

* An optional first line of metadata: ``Today's Date``, ``Date of Test:``, ``Filename:``,
  ``Procedure:``, ``Comment/Barcode:``, each followed by its value. A comment that is one
  token (no spaces) is taken as the cell's barcode.
* Columns: ``Rec#``, ``Cyc#`` or ``Cycle P``, ``Step``, the test and step times as
  ``TestTime``/``StepTime`` (clock strings such as ``0d 00:01:30.00`` or seconds) or
  ``Test (Sec)``/``Step (Sec)``/``Test (Min)``, ``Amp-hr``, ``Watt-hr``, ``Amps``,
  ``Volts`` (or ``Cap. [Ah]``, ``Ener. [Wh]``, ``Current [A]``, ``Voltage [V]``),
  ``State`` (or ``MD``), ``ES``, ``DPt Time`` and optional ``Temp 1``.
* Current is a **magnitude**; the state says the direction: ``C`` charge, ``D``
  discharge, ``R`` rest, ``O`` open circuit. The reader signs it (+ = charge).
* ``Amp-hr``/``Watt-hr`` count per charge or discharge period: they run on across
  consecutive steps of one direction and restart when it changes; the reader takes each
  step's share (a counter lower at a step's start than at the previous row was reset).
* A step's kind comes from its state (C: CC, CV or CCCV from the curve; a short one is a
  pulse); ``ES`` of its last row (the end-of-step code, 128-255) is kept as the end reason.
* ``DPt Time`` is month-first with AM/PM (``03/12/2024 8:15:02 AM``), local time.
"""

from __future__ import annotations

from .readers import Alias, Field, VendorSpec, aliases, header_key, spec_register
from .records import SignConvention

_KNOWN = (
    r"acimpohms",
    r"dcirohms",
    r"acimp",
    r"acr",
    r"dcir",
    r"evtemp",
    r"cyclec",
    r"var\d+",
    r"wf(chg|dis)(cap|e)",
    r"unnamed\d*",
    r"resistance",
    r"power",
    r"watts",
    r"temp\d+",
    r"ev(hum|humidity)",
    r"capacity",
)

MACCOR = spec_register(
    VendorSpec(
        vendor="maccor",
        title="Maccor text export",
        fields=(
            Field("data_point", "integer", aliases("Rec#", "Rec", "Record"), required=True),
            Field("cycle_index", "integer", aliases("Cycle P", "Cyc#", "Cycle", "Cycle C")),
            Field("step_index", "integer", (Alias("step", with_unit=False),), required=True),
            Field(
                "test_time",
                "duration",
                aliases("TestTime", "Test Time", Alias("test", with_unit=True)),
                required=True,
            ),
            Field(
                "step_time",
                "duration",
                aliases("StepTime", "Step Time", Alias("step", with_unit=True)),
                required=True,
            ),
            Field(
                "capacity",
                "number",
                aliases(Alias("amphr", unit="Ah"), Alias("ahr", unit="Ah"), "Cap.", "Cap"),
                required=True,
                quantity="capacity",
            ),
            Field(
                "energy",
                "number",
                aliases(Alias("watthr", unit="Wh"), Alias("whr", unit="Wh"), "Ener.", "Energy"),
                quantity="energy",
            ),
            Field(
                "current",
                "number",
                aliases(Alias("amps", unit="A"), Alias("amp", unit="A"), "Current"),
                required=True,
                quantity="current",
            ),
            Field(
                "voltage",
                "number",
                aliases(Alias("volts", unit="V"), Alias("volt", unit="V"), "Voltage"),
                required=True,
                quantity="voltage",
            ),
            Field("state", "text", aliases("State", "MD", "Mode"), required=True),
            Field("end_reason", "text", aliases("ES")),
            Field(
                "timestamp", "timestamp", aliases("DPt Time", "DPtTime", "Date Time"), required=True
            ),
            Field(
                "temperature",
                "number",
                aliases("Temp 1", "Temperature", "Aux1"),
                quantity="temperature",
                default_unit="°C",
            ),
        ),
        known=_KNOWN,
        capacity_counter="cumulative",
        step_kinds="state",
        sign_convention=SignConvention.MAGNITUDE_WITH_STATE,
        delimiter="\t",
        metadata_identity={"barcode": "barcode"},
        preamble_metadata=lambda lines: _preamble(lines),
    )
)

_PREAMBLE_LABELS = {
    "todaysdate": "Today's Date",
    "dateoftest": "Date of Test",
    "filename": "Filename",
    "procedure": "Procedure",
    "commentbarcode": "Comment/Barcode",
    "comment": "Comment/Barcode",
}


def _preamble(lines: list[list[str]]) -> dict[str, str]:
    """``Label:<tab>value`` pairs of the lines above the header."""
    out: dict[str, str] = {}
    for cells in lines:
        cells = [c.strip() for c in cells]
        for i, cell in enumerate(cells[:-1]):
            label = _PREAMBLE_LABELS.get(header_key(cell.replace("''", "'")))
            if label and cells[i + 1] and label not in out:
                out[label] = cells[i + 1]
    comment = out.get("Comment/Barcode", "")
    if comment and not any(ch.isspace() for ch in comment) and "," not in comment:
        out["barcode"] = comment
    return out
