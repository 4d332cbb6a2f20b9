"""Formation-cabinet tray exports (CSV, one file per tray).

Production formation cabinets (tray-based, one power channel per tray position) export one
row per logged sample of every cell of the tray. The genealogy joins on tray + position +
barcode, so each row carries them. Two header styles are common and both are read:

* units in brackets: ``Tray, Channel, Position, Barcode, Step, Step Name, Step Time(s),
  DateTime, Voltage(V), Current(mA), Capacity(mAh), Energy(mWh), Temperature(℃),
  Stop Condition``;
* snake case with the unit as the last token: ``tray_id, power_channel, tray_position,
  barcode, step_no, step_name, test_time, record_time, voltage_mv, current_ma,
  capacity_mah, energy_mwh, temperature_c, end_flag, stop_condition, contact_impedance``.

Capacity and energy restart at every step. The step name says the step (``Rest``,
``CC_Chg``, ``CCCV_Chg``, ``CV_Chg``, ``CC_DChg``, ``OCV``, ``Pulse``; a plain
``Charge`` is split into CC/CV/CCCV from its curve). Cabinets differ in how they sign the
current, so the built-in profile decides from the file: discharge steps negative means
charge-positive, discharge steps positive with no negative value anywhere means magnitudes.
The profile is strict: a column it does not know is refused, not silently dropped.
"""

from __future__ import annotations

from .readers import Field, VendorSpec, aliases, spec_register
from .records import SignConvention

CABINET = spec_register(
    VendorSpec(
        vendor="cabinet",
        title="formation-cabinet tray export",
        fields=(
            Field(
                "equipment",
                "text",
                aliases("Cabinet", "Cabinet ID", "Cabinet No", "Device", "Device ID", "Equipment"),
            ),
            Field(
                "tray", "text", aliases("Tray", "Tray ID", "Tray No", "Tray Barcode", "Tray Code")
            ),
            Field("channel", "text", aliases("Channel", "Channel No", "Power Channel", "Chl")),
            Field(
                "position",
                "text",
                aliases("Position", "Tray Position", "Cell Position", "Pos", "Slot"),
            ),
            Field(
                "barcode",
                "text",
                aliases("Barcode", "Cell Barcode", "Cell ID", "Cell SN", "Cell Serial"),
                required=True,
            ),
            Field("data_point", "integer", aliases("Record ID", "Record", "Index", "Data Point")),
            Field("cycle_index", "integer", aliases("Cycle", "Cycle No", "Cycle Index")),
            Field(
                "step_index",
                "integer",
                aliases("Step", "Step No", "Step Index", "Step ID"),
                required=True,
            ),
            Field(
                "step_type",
                "text",
                aliases("Step Name", "Step Type", "Work Mode", "Mode"),
                required=True,
            ),
            Field("step_time", "duration", aliases("Step Time", "Time")),
            Field("test_time", "duration", aliases("Test Time", "Total Time")),
            Field(
                "timestamp",
                "timestamp",
                aliases(
                    "DateTime", "Date Time", "Timestamp", "Record Time", "Realtime", "System Time"
                ),
                required=True,
            ),
            Field("voltage", "number", aliases("Voltage"), required=True, quantity="voltage"),
            Field("current", "number", aliases("Current"), required=True, quantity="current"),
            Field("capacity", "number", aliases("Capacity"), required=True, quantity="capacity"),
            Field("energy", "number", aliases("Energy"), quantity="energy"),
            Field(
                "temperature",
                "number",
                aliases("Temperature", "Cell Temperature", "Temp"),
                quantity="temperature",
            ),
            Field(
                "end_reason",
                "text",
                aliases("Stop Condition", "End Reason", "End Condition", "Cut-off Condition"),
            ),
        ),
        one_of=(("channel", "position"), ("step_time", "test_time")),
        known=(r"endflag", r"contactimpedance", r"contactresistance", r"remark", r"operator"),
        capacity_counter="step",
        step_kinds="type",
        sign_convention=SignConvention.CHARGE_POSITIVE,
        multi_cell=True,
    )
)
