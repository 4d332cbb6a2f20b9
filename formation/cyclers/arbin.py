"""Arbin exports from MITS Pro / Data Watcher, as CSV or XLSX.

Layout facts the reader relies on:

* One file is one channel. Columns: ``Data_Point``, ``Date_Time``, ``Test_Time(s)``,
  ``Step_Time(s)``, ``Cycle_Index``, ``Step_Index``, ``Current(A)``, ``Voltage(V)``,
  ``Charge_Capacity(Ah)``, ``Discharge_Capacity(Ah)``, ``Charge_Energy(Wh)``,
  ``Discharge_Energy(Wh)``, auxiliary temperatures as ``Aux_Temperature_1(C)`` (older) or
  ``Temperature (C)_1`` / ``Aux_Temperature(C)_1``. Newer exports write the same names with
  spaces (``Test Time (s)``); both are read.
* Current is + for charge. Charge and discharge capacity and energy are **cumulative**:
  they run on across steps and reset at a new cycle; the reader takes each step's share.
* There is no step type column: a step is a rest, a charge (CC, CV or CCCV from its curve),
  a discharge or a pulse (short, or both directions) from its current.
* ``Date_Time`` is month-first (``03/12/2024 08:15:02.123``) or ISO; it is local time.
* XLSX: the records are on the ``Channel_<n>...`` sheet; ``Global_Info`` holds a header row
  (``Channel``, ``Start DateTime``, ``Schedule File Name``, ``Barcode``, ...) with the values
  in the row below.
"""

from __future__ import annotations

from .readers import Alias, Field, VendorSpec, aliases, header_key, spec_register
from .records import SignConvention

_KNOWN = (
    r"power",
    r"acr",
    r"dvdt",
    r"internalresistance",
    r"dqdv",
    r"dvdq",
    r"tccounter\d*",
    r"isfcdata",
    r"acimpedance",
    r"aciphaseangle",
    r"auxvoltage\d*",
    r"auxdtdt\d*",
    r"auxdvdt\d*",
    r"auxtemperature\d*",
    r"temperature\d*",
    r"auxtemperaturedtdt\d*",
    r"(charge|discharge)time",
    r"testid",
    r"mvvoltage\d*",
    r"mvv\d*",
    r"auxvoltagedvdt\d*",
)

ARBIN = spec_register(
    VendorSpec(
        vendor="arbin",
        title="Arbin MITS export",
        fields=(
            Field("data_point", "integer", aliases("Data_Point", "Data Point"), required=True),
            Field("timestamp", "timestamp", aliases("Date_Time", "Date Time"), required=True),
            Field("test_time", "duration", aliases("Test_Time", "Test Time"), required=True),
            Field("step_time", "duration", aliases("Step_Time", "Step Time"), required=True),
            Field("cycle_index", "integer", aliases("Cycle_Index", "Cycle Index")),
            Field("step_index", "integer", aliases("Step_Index", "Step Index"), required=True),
            Field("current", "number", aliases("Current"), required=True, quantity="current"),
            Field("voltage", "number", aliases("Voltage"), required=True, quantity="voltage"),
            Field(
                "charge_capacity",
                "number",
                aliases("Charge_Capacity", "Charge Capacity"),
                required=True,
                quantity="capacity",
            ),
            Field(
                "discharge_capacity",
                "number",
                aliases("Discharge_Capacity", "Discharge Capacity"),
                required=True,
                quantity="capacity",
            ),
            Field(
                "charge_energy",
                "number",
                aliases("Charge_Energy", "Charge Energy"),
                quantity="energy",
            ),
            Field(
                "discharge_energy",
                "number",
                aliases("Discharge_Energy", "Discharge Energy"),
                quantity="energy",
            ),
            Field(
                "temperature",
                "number",
                aliases(
                    "Aux_Temperature_1",
                    "Temperature_1",
                    "Aux_Temperature",
                    "Temperature",
                    Alias(r"auxtemperature\d+", pattern=True),
                    Alias(r"temperature\d+", pattern=True),
                ),
                quantity="temperature",
                default_unit="°C",
            ),
        ),
        known=_KNOWN,
        capacity_counter="cumulative",
        step_kinds="infer",
        sign_convention=SignConvention.CHARGE_POSITIVE,
        metadata_identity={"Barcode": "barcode", "Channel": "channel"},
        data_sheet=lambda names: _data_sheet(names),
        workbook_metadata=lambda book, data: _global_info(book),
    )
)


def _data_sheet(names: list[str]) -> str | None:
    for n in names:
        if n.casefold().startswith("channel"):
            return n
    return None


_LABELS = {
    "channel": "Channel",
    "barcode": "Barcode",
    "startdatetime": "Start DateTime",
    "schedulefilename": "Schedule File Name",
    "testname": "Test Name",
    "itemid": "Item ID",
    "comments": "Comments",
    "creator": "Creator",
}


def _global_info(book) -> dict[str, str]:
    """The ``Global_Info`` sheet: a row of labels and the values in the row below."""
    name = next((n for n in book.sheetnames if header_key(n) == "globalinfo"), None)
    if name is None:
        return {}
    rows = []
    for number, row in enumerate(book[name].iter_rows(values_only=True), start=1):
        rows.append(list(row))
        if number >= 20:
            break
    out: dict[str, str] = {}
    for r, row in enumerate(rows[:-1]):
        labels = {i: _LABELS.get(header_key(str(c))) for i, c in enumerate(row) if c is not None}
        if sum(1 for v in labels.values() if v) < 2:
            continue
        below = rows[r + 1]
        for i, label in labels.items():
            if label and i < len(below) and below[i] is not None and str(below[i]).strip():
                value = below[i]
                text = (
                    str(int(value))
                    if isinstance(value, float) and value.is_integer()
                    else (str(value).strip())
                )
                out.setdefault(label, text)
        break
    return out
