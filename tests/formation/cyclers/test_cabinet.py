"""Formation-cabinet tray CSV: a tray of three 105 Ah LFP prismatic cells through rest,
0.05C pre-charge, 0.2C CCCV to 3.65 V, rest and 0.2C discharge (mV, mA, mAh, mWh, day-first
local time in the cabinet's zone)."""

from datetime import UTC, datetime

import numpy as np
import pytest

from formation.cyclers import (
    CyclerFileError,
    SignConvention,
    StepType,
    cycler_file_read,
)
from tests.formation.cyclers.fixtures import make_samples as ms

SHANGHAI = "Asia/Shanghai"


def read(data=None, **kwargs):
    kwargs.setdefault("timezone", SHANGHAI)
    return cycler_file_read(
        ms.CABINET_FILE if data is None else data, profile="cabinet_csv", **kwargs
    )


def test_tray_file_becomes_one_run_per_position():
    result = read()

    assert result.profile == "cabinet_csv"
    assert result.source_format == "cabinet_csv"
    assert result.source_name == "cabinet_tray_T0417.csv"
    assert result.n_rows == 171
    assert result.source_sign_convention == SignConvention.CHARGE_POSITIVE
    assert result.units == {
        "voltage": "mV",
        "current": "mA",
        "temperature": "°C",
        "step_time": "s",
        "capacity": "mAh",
        "energy": "mWh",
    }
    assert result.columns["temperature"] == "Temperature(℃)"
    assert result.ignored_columns == ("End Flag",)
    assert [(c.barcode, c.position, c.channel, c.tray, c.equipment) for c in result.cells] == [
        ("LF105A24031200417", "1", "3-1-01", "T0417", "FC-03"),
        ("LF105A24031200418", "2", "3-1-02", "T0417", "FC-03"),
        ("LF105A24031200419", "3", "3-1-03", "T0417", "FC-03"),
    ]
    for cell in result.cells:
        assert [s.step_type for s in cell.steps] == [
            StepType.REST,
            StepType.CC_CHARGE,
            StepType.CCCV_CHARGE,
            StepType.REST,
            StepType.DISCHARGE,
        ]
        assert [s.sequence for s in cell.steps] == [1, 2, 3, 4, 5]
    assert result.n_steps == 15


def test_steps_are_in_si_units_with_charge_positive_current():
    cell = read().cells[0]
    rest, pre, cccv, rest2, dis = cell.steps

    assert pre.source_step_type == "CC_Chg"
    assert pre.capacity_ah == pytest.approx(5.25, abs=1e-12)
    assert pre.energy_wh == pytest.approx(15.9454, abs=1e-9)
    assert pre.duration_s == 3600.0
    assert pre.cv_time_s == 0.0
    assert pre.tail_current_a is None
    assert pre.curve.time_s.tolist() == [0.0, 900.0, 1800.0, 2700.0, 3600.0]
    assert pre.curve.current_a.tolist() == [5.25] * 5  # 5250 mA

    assert cccv.capacity_ah == pytest.approx(113.5831, abs=1e-9)  # 113583.1 mAh
    assert cccv.energy_wh == pytest.approx(384.411, abs=1e-9)
    assert cccv.duration_s == 20445.0
    assert cccv.end_voltage_v == pytest.approx(3.65, abs=1e-12)
    assert cccv.tail_current_a == pytest.approx(5.248, abs=1e-12)
    # The first sample at 3.65 V is logged at 18900 s: 20445 - 18900 s at the limit.
    assert cccv.cv_time_s == 1545.0
    assert cccv.temperature_start_c == 25.2
    assert cccv.temperature_max_c == 28.3
    assert cccv.temperature_rise_c == pytest.approx(3.1, abs=1e-9)
    assert cccv.end_reason == "Current"
    assert (cccv.first_row, cccv.last_row) == (21, 94)

    assert rest2.capacity_ah == 0.0
    assert rest2.start_voltage_v == pytest.approx(3.6475, abs=1e-12)
    assert rest2.end_voltage_v == pytest.approx(3.6268, abs=1e-12)

    assert dis.step_type == StepType.DISCHARGE
    assert dis.capacity_ah == pytest.approx(112.2917, abs=1e-9)
    assert dis.end_current_a == -21.0  # -21000 mA in the file
    assert (dis.curve.current_a < 0).all()
    assert (np.diff(dis.curve.capacity_ah) >= 0).all()
    assert dis.end_voltage_v == pytest.approx(2.495, abs=1e-12)
    assert dis.end_reason == "Voltage"
    assert dis.cv_time_s is None
    assert rest.end_reason == "Time"


def test_local_times_become_utc():
    cell = read().cells[1]

    assert cell.started_at == datetime(2024, 3, 12, 0, 15, tzinfo=UTC)  # 08:15 in Shanghai
    assert cell.steps[2].ended_at == datetime(2024, 3, 12, 7, 2, 55, tzinfo=UTC)
    assert cell.ended_at == datetime(2024, 3, 12, 12, 51, 10, tzinfo=UTC)
    assert read(timezone="Europe/Berlin").cells[1].started_at == datetime(
        2024, 3, 12, 7, 15, tzinfo=UTC
    )


def test_curves_are_read_only_float_arrays():
    step = read().cells[2].steps[2]

    for arr in (
        step.curve.time_s,
        step.curve.voltage_v,
        step.curve.current_a,
        step.curve.capacity_ah,
        step.curve.temperature_c,
    ):
        assert arr.dtype == np.float64
        assert arr.shape == (24,)
        assert not arr.flags.writeable
    assert step.curve.test_time_s is None
    with pytest.raises(ValueError):
        step.curve.voltage_v[0] = 0.0


def test_snake_case_header_with_unit_suffixes_reads_the_same():
    text = ms.text_of(ms.CABINET_FILE)
    snake = ms.replace_once(
        text,
        "Cabinet,Tray,Channel,Position,Barcode,Step,Step Name,Step Time(s),DateTime,Voltage(mV),"
        "Current(mA),Capacity(mAh),Energy(mWh),Temperature(℃),Stop Condition,End Flag",
        "cabinet_id,tray_id,power_channel,tray_position,barcode,step_no,step_name,step_time_s,"
        "record_time,voltage_mv,current_ma,capacity_mah,energy_mwh,temperature_c,"
        "stop_condition,end_flag",
    )

    a, b = read(), read(snake.encode())

    assert b.units == a.units
    for ca, cb in zip(a.cells, b.cells, strict=True):
        assert (cb.barcode, cb.position, cb.channel) == (ca.barcode, ca.position, ca.channel)
        assert [s.capacity_ah for s in cb.steps] == [s.capacity_ah for s in ca.steps]
        assert [s.cv_time_s for s in cb.steps] == [s.cv_time_s for s in ca.steps]


def test_magnitude_current_is_signed_from_the_step_name():
    text = ms.text_of(ms.CABINET_FILE).replace(",-21000,", ",21000,")

    result = read(text.encode())

    assert result.source_sign_convention == SignConvention.MAGNITUDE_WITH_STATE
    dis = result.cells[0].steps[4]
    assert dis.end_current_a == -21.0
    assert dis.capacity_ah == pytest.approx(112.2917, abs=1e-9)


def test_discharge_positive_export_is_negated():
    lines = ms.text_of(ms.CABINET_FILE).splitlines()
    flipped = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[10] = str(-int(cells[10])) if cells[10] != "0" else "0"
        flipped.append(",".join(cells))

    result = read(("\r\n".join(flipped) + "\r\n").encode())

    assert result.source_sign_convention == SignConvention.DISCHARGE_POSITIVE
    steps = result.cells[0].steps
    assert steps[2].curve.current_a[0] == 21.0
    assert steps[4].end_current_a == -21.0


def test_generic_charge_name_is_split_into_cc_and_cccv_from_the_curve():
    text = (
        ms.text_of(ms.CABINET_FILE)
        .replace(",CC_Chg,", ",Charge,")
        .replace(",CCCV_Chg,", ",Charge,")
    )

    steps = read(text.encode()).cells[0].steps

    assert [s.step_type for s in steps[1:3]] == [StepType.CC_CHARGE, StepType.CCCV_CHARGE]
    assert [s.source_step_type for s in steps[1:3]] == ["Charge", "Charge"]
    assert steps[2].cv_time_s == 1545.0


def test_tray_given_with_the_file_when_the_export_has_no_tray_column():
    lines = ms.text_of(ms.CABINET_FILE).splitlines()
    no_tray = "\r\n".join(
        ",".join(c for i, c in enumerate(line.split(",")) if i != 1) for line in lines
    )

    result = read(no_tray.encode(), tray="T0417")

    assert {c.tray for c in result.cells} == {"T0417"}
    with pytest.raises(CyclerFileError) as err:
        read(no_tray.encode())
    assert err.value.field == "tray"
    assert err.value.code == "identity"


# --- refusals ------------------------------------------------------------------------------


def test_unknown_column_is_refused_by_the_strict_profile():
    text = ms.text_of(ms.CABINET_FILE)
    lines = text.splitlines()
    extra = [lines[0] + ",Operator Note"] + [line + ",ok" for line in lines[1:]]

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(extra).encode())

    assert err.value.code == "unknown_column"
    assert "'Operator Note'" in err.value.message
    assert "strict" in err.value.message
    assert err.value.row == 1


def test_two_trays_in_one_file_are_refused():
    text = ms.text_of(ms.CABINET_FILE)
    lines = text.splitlines()
    lines[-1] = lines[-1].replace(",T0417,", ",T0418,")

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(lines).encode())

    assert err.value.field == "tray"
    assert err.value.message.endswith("holds tray T0417, T0418: one file is one tray.")


def test_empty_barcode_is_refused_with_its_row():
    text = ms.text_of(ms.CABINET_FILE)
    lines = text.splitlines()
    assert "LF105A24031200418" in lines[41]
    lines[41] = lines[41].replace("LF105A24031200418", "")

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(lines).encode())

    assert (err.value.field, err.value.row, err.value.code) == ("barcode", 42, "identity")


def test_a_barcode_at_two_positions_is_refused():
    lines = ms.text_of(ms.CABINET_FILE).splitlines()
    swapped = [line.replace("LF105A24031200418", "LF105A24031200417") for line in lines]

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(swapped).encode())

    assert err.value.field == "barcode"
    assert err.value.message == (
        "Barcode LF105A24031200417 is at two places in <bytes>: channel 3-1-01 position 1 and "
        "channel 3-1-02 position 2."
    )


def test_repeated_sample_is_a_duplicate_data_point():
    lines = ms.text_of(ms.CABINET_FILE).splitlines()
    lines.insert(31, lines[30])  # the cabinet wrote one sample twice

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(lines).encode())

    assert (err.value.code, err.value.row) == ("duplicate", 32)
    assert "two samples at" in err.value.message


def test_mixed_sign_conventions_are_refused():
    text = ms.text_of(ms.CABINET_FILE)
    lines = text.splitlines()
    # Position 3 discharges with positive current while 1 and 2 discharge negative.
    lines = [
        line.replace(",-21000,", ",21000,") if ",3,LF105A24031200419," in line else line
        for line in lines
    ]

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(lines).encode())

    assert err.value.code == "sign"
    assert "discharge steps with + current" in err.value.message
    assert "discharge steps with - current" in err.value.message


def test_two_barcodes_at_one_position_are_refused():
    lines = ms.text_of(ms.CABINET_FILE).splitlines()
    k = next(i for i, line in enumerate(lines) if ",LF105A24031200418,3," in line)
    lines[k] = lines[k].replace("LF105A24031200418", "LF105A24031200499")

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(lines).encode())

    assert err.value.field == "barcode"
    assert err.value.message == (
        "channel 3-1-02 position 2 holds two barcodes in <bytes>: LF105A24031200418 and "
        "LF105A24031200499."
    )


def test_record_numbers_counted_per_channel_are_not_duplicates():
    lines = ms.text_of(ms.CABINET_FILE).splitlines()
    counters: dict[str, int] = {}
    out = [lines[0] + ",Record ID"]
    for line in lines[1:]:
        channel = line.split(",")[2]
        counters[channel] = counters.get(channel, 0) + 1
        out.append(f"{line},{counters[channel]}")

    result = read("\r\n".join(out).encode())
    out.insert(12, out[11])  # one record written twice
    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(out).encode())

    assert result.columns["data_point"] == "Record ID"
    assert [c.n_points for c in result.cells] == [57, 57, 57]
    assert (err.value.code, err.value.field, err.value.row) == ("duplicate", "data_point", 13)
