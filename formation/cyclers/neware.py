"""Neware BTS exports: the record (detail) layer as CSV or XLSX from BTSDA 7/8, and the
binary .nda/.ndax files through the optional ``NewareNDA`` package.

Layout facts the reader relies on:

* One file is one channel (one cell). The record table has a data point number
  (``DataPoint``, ``Record ID``, ``Record Index``), the protocol step number
  (``Step Index``, ``Step ID``), the step type in words (``CC Chg``, ``CV Chg``,
  ``CCCV Chg``, ``CC DChg``, ``CP DChg``, ``Rest``, ``Pulse``; ``CC_Chg`` in .nda files;
  Chinese names such as 恒流充电 in Chinese-localised exports), the step time as a clock
  string (``Time``, ``Relative Time(h:min:s.ms)``), an absolute time (``Date``,
  ``Realtime``, ``Absolute Time``) and the electrical columns with units in brackets:
  ``Voltage(V)``, ``Current(mA)`` or ``Current(A)``, ``Capacity(mAh)``/``Capacity(Ah)``
  (BTS 7 spells it ``CapaCity``), ``Energy(mWh)``/``Energy(Wh)``, or the split
  ``Chg. Cap.``/``DChg. Cap.`` and ``Chg. Energy``/``DChg. Energy`` columns.
* Capacity and energy restart at every step. Discharge current is negative.
* BTSDA appends a tab to some CSV values so that Excel keeps them as text (``\\t-``,
  ``2024-03-12 08:15:02\\t``); cells are stripped before they are read.
* XLSX exports carry several worksheets; the records are on ``record`` (BTS 8) or
  ``Detail_<unit>_<channel>_<n>`` (BTS 7), the barcode on an ``Info``/``test``/``unit``
  sheet as a label followed by its value.
"""

from __future__ import annotations

import logging
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

from .errors import CyclerFileError
from .readers import (
    Alias,
    CyclerProfile,
    Field,
    Table,
    VendorSpec,
    aliases,
    header_key,
    spec_register,
)

#: The version this reader was checked against (pin it in requirements when enabling .nda).
NEWARE_NDA_VERSION = "2026.6.11"

_KNOWN = (
    r"(chg|dchg)?speccap",
    r"(chg|dchg)?specenergy",
    r"(chg|dchg)?spec(ific)?capacity.*",
    r"power",
    r"dqdv",
    r"dqmdv",
    r"dvdq",
    r"contactresistance",
    r"modulestartstopswitch",
    r"v\d+",
    r"t\d+",
    r"auxv\d*",
    r"auxvoltage\d*",
    r"auxδv",
    r"auxdv",
    r"gapofvoltage",
    r"auxtemp\d*",
    r"dcir",
    r"ir",
    r"capacitydensity",
    r"cmpeng",
    r"(min|max|avg)t",
    r"net(engy|energy|cap)?dchg.*",
    r"netdchg.*",
    r"jumpto",
    r"totaltime",
    r"cyclecount",
    r"(chg|dchg)?(mid)?(value)?voltage",
    r"(start|end)(voltage|current|temperature)",
    r"capacitance(chg|dchg)?f",
    r"(dis)?chargetime",
    r"oristepid",
    r"rawstepid",
)

NEWARE = spec_register(
    VendorSpec(
        vendor="neware",
        title="Neware BTS export",
        fields=(
            Field(
                "data_point",
                "integer",
                aliases(
                    "DataPoint",
                    "Data Point",
                    "Record ID",
                    "Record Index",
                    "Record",
                    "Index",
                    "数据序号",
                    "记录序号",
                ),
                required=True,
            ),
            Field(
                "cycle_index",
                "integer",
                aliases("Cycle Index", "Cycle ID", "Cycle", "循环号", "循环序号"),
            ),
            Field(
                "step_index",
                "integer",
                aliases("Step Index", "Step ID", "Steps", "Step", "工步号", "工步序号"),
                required=True,
            ),
            Field("step_sequence", "integer", aliases("Step Count")),
            Field(
                "step_type",
                "text",
                aliases("Step Type", "Step Name", "Status", "工步类型", "工步名称", "状态"),
                required=True,
            ),
            Field(
                "step_time",
                "duration",
                aliases("Time", "Step Time", "Relative Time", "时间", "相对时间"),
                required=True,
            ),
            Field("test_time", "duration", aliases("Total Time", "Test Time", "总时间")),
            Field(
                "timestamp",
                "timestamp",
                aliases(
                    "Date",
                    "Realtime",
                    "Real Time",
                    "Absolute Time",
                    "Timestamp",
                    "DateTime",
                    "System Time",
                    "绝对时间",
                    "系统时间",
                    "日期",
                ),
                required=True,
            ),
            Field(
                "voltage",
                "number",
                aliases("Voltage", "Volt", "电压"),
                required=True,
                quantity="voltage",
            ),
            Field(
                "current",
                "number",
                aliases("Current", "Cur", "电流"),
                required=True,
                quantity="current",
            ),
            Field("capacity", "number", aliases("Capacity", "Cap", "容量"), quantity="capacity"),
            Field(
                "charge_capacity",
                "number",
                aliases("Chg. Cap.", "Capacitance_Chg", "Cap_Chg", "Charge_Capacity", "充电容量"),
                quantity="capacity",
            ),
            Field(
                "discharge_capacity",
                "number",
                aliases(
                    "DChg. Cap.", "Capacitance_DChg", "Cap_DChg", "Discharge_Capacity", "放电容量"
                ),
                quantity="capacity",
            ),
            Field("energy", "number", aliases("Energy", "能量"), quantity="energy"),
            Field(
                "charge_energy",
                "number",
                aliases("Chg. Energy", "Engy_Chg", "Charge_Energy", "充电能量"),
                quantity="energy",
            ),
            Field(
                "discharge_energy",
                "number",
                aliases("DChg. Energy", "Engy_DChg", "Discharge_Energy", "放电能量"),
                quantity="energy",
            ),
            Field(
                "temperature",
                "number",
                aliases(
                    "T1",
                    "Aux. Temp.",
                    "Auxiliary Temperature",
                    "Temperature",
                    "Temp",
                    "温度",
                    Alias(r"auxtemp\d+", pattern=True),
                    Alias(r"t\d+", pattern=True),
                ),
                quantity="temperature",
                default_unit="°C",
            ),
            Field("barcode", "text", aliases("Barcode", "Bar Code", "条码")),
        ),
        one_of=(("capacity", "charge_capacity"),),
        known=_KNOWN,
        capacity_counter="step",
        step_kinds="type",
        metadata_identity={"Barcode": "barcode", "Channel": "channel", "Device": "equipment"},
        data_sheet=lambda names: _data_sheet(names),
        workbook_metadata=lambda book, data: _workbook_metadata(book, data),
        binary_table=lambda data, name, profile: _nda_table(data, name, profile),
    )
)


def _data_sheet(names: list[str]) -> str | None:
    for wanted in ("record", "detail", "记录", "详细"):
        for n in names:
            low = n.casefold()
            if low.startswith(wanted) and not low.startswith(("detailvol", "detailtemp")):
                return n
    return None


_LABELS = {
    "barcode": "Barcode",
    "条码": "Barcode",
    "channel": "Channel",
    "通道": "Channel",
    "device": "Device",
    "deviceid": "Device",
    "unit": "Unit",
    "starttime": "Start Time",
    "stepfilename": "Step File",
    "remarks": "Remarks",
    "creator": "Creator",
}


def _workbook_metadata(book, data_sheet: str) -> dict[str, str]:
    """Label/value pairs from the info sheets (a label cell followed by its value)."""
    out: dict[str, str] = {}
    for name in book.sheetnames:
        if name == data_sheet or name.casefold() not in ("info", "test", "unit", "概要", "信息"):
            continue
        for number, row in enumerate(book[name].iter_rows(values_only=True), start=1):
            cells = list(row)
            for i, cell in enumerate(cells[:-1]):
                label = _LABELS.get(header_key(str(cell))) if isinstance(cell, str) else None
                value = cells[i + 1]
                if label and value is not None and str(value).strip() and label not in out:
                    out[label] = str(value).strip()
            if number >= 40:
                break
    return out


# --- .nda / .ndax ----------------------------------------------------------------------------

_NDA_HEADER = [
    "Index",
    "Cycle",
    "Step Count",
    "Step Index",
    "Status",
    "Time(s)",
    "Voltage(V)",
    "Current(mA)",
    "Charge_Capacity(mAh)",
    "Discharge_Capacity(mAh)",
    "Charge_Energy(mWh)",
    "Discharge_Energy(mWh)",
    "Timestamp",
]
_NDA_SOURCE = [
    "Index",
    "Cycle",
    "Step",
    "Step_Index",
    "Status",
    "Time",
    "Voltage",
    "Current(mA)",
    "Charge_Capacity(mAh)",
    "Discharge_Capacity(mAh)",
    "Charge_Energy(mWh)",
    "Discharge_Energy(mWh)",
    "Timestamp",
]


def _nda_table(data: bytes, name: str, profile: CyclerProfile) -> Table:
    """A Neware binary file through ``NewareNDA.read`` (an optional dependency, imported
    only here). Row numbers are the records' own index."""
    if data.startswith(b"NEWARE"):
        suffix = ".nda"
    elif data.startswith(b"PK\x03\x04"):
        suffix = ".ndax"
    else:
        head = data[:200].decode("utf-8", errors="replace").strip().splitlines()
        shown = repr(head[0][:60]) if head else "nothing"
        raise CyclerFileError(
            f"{name} is not a Neware .nda/.ndax file (it starts with {shown}); profile "
            f"{profile.name!r} reads the binary files, use 'neware_csv' or 'neware_xlsx' for "
            "BTSDA exports.",
            code="wrong_format",
        )
    try:
        import NewareNDA
    except ImportError as exc:
        raise CyclerFileError(
            "Reading Neware .nda/.ndax files needs the optional NewareNDA package "
            f"(NewareNDA=={NEWARE_NDA_VERSION}); install it, or export the channel to CSV or "
            "XLSX from BTSDA and use the neware_csv or neware_xlsx profile.",
            code="unsupported",
        ) from exc
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"channel{suffix}"
        path.write_bytes(data)
        logger = logging.getLogger("newarenda")
        level = logger.level
        try:
            with warnings.catch_warnings():
                # The package's own pandas deprecations are not the reader's to act on.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                frame = NewareNDA.read(str(path), software_cycle_number=False, log_level="CRITICAL")
        except (
            ValueError,
            EOFError,
            NotImplementedError,
            KeyError,
            IndexError,
            struct.error,
            zipfile.BadZipFile,
            OSError,
        ) as exc:
            raise CyclerFileError(
                f"{name} is not a readable Neware {suffix} file: {str(exc).rstrip('.!')}.",
                code="wrong_format",
            ) from exc
        finally:
            logger.setLevel(level)
    header = list(_NDA_HEADER)
    source = list(_NDA_SOURCE)
    for column in frame.columns:
        if str(column).startswith("T") and str(column)[1:].isdigit():
            header.append(f"{column}(°C)")
            source.append(column)
    missing = [c for c in source if c not in frame.columns]
    if missing:
        raise CyclerFileError(
            f"{name}: NewareNDA returned no {', '.join(missing)} column(s).",
            code="missing_column",
        )
    frame = frame[source]
    rows = list(frame.itertuples(index=False, name=None))
    numbers = [int(i) for i in frame["Index"]]
    return Table(header=header, header_row=0, rows=rows, row_numbers=numbers)
