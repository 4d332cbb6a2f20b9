"""Arbin MITS exports of a 5 Ah NMC 21700 cell: rest, 0.5C CCCV to 4.2 V, rest, a 10 s 1C
DCIR discharge pulse logged every second, rest, 0.5C discharge. No step type column; the
capacity and energy counters are cumulative within the cycle."""

from datetime import UTC, datetime

import pytest

from formation.cyclers import CyclerFileError, SignConvention, StepType, cycler_file_read
from tests.formation.cyclers.fixtures import make_samples as ms

BARCODE = "NMC21700-2403-01544"
DETROIT = "America/Detroit"


def read(data=None, profile="arbin_csv", **kwargs):
    kwargs.setdefault("barcode", BARCODE)
    kwargs.setdefault("timezone", DETROIT)
    return cycler_file_read(ms.ARBIN_FILE if data is None else data, profile=profile, **kwargs)


def test_step_kinds_are_inferred_from_the_current():
    result = read()

    assert result.source_sign_convention == SignConvention.CHARGE_POSITIVE
    assert result.n_rows == 66
    assert result.units == {
        "voltage": "V",
        "current": "A",
        "temperature": "°C",
        "step_time": "s",
        "test_time": "s",
        "charge_capacity": "Ah",
        "discharge_capacity": "Ah",
        "charge_energy": "Wh",
        "discharge_energy": "Wh",
    }
    assert result.columns["temperature"] == "Aux_Temperature_1(C)"
    steps = result.cells[0].steps
    assert [(s.step_index, s.step_type, s.curve.n_points) for s in steps] == [
        (1, StepType.REST, 2),
        (2, StepType.CCCV_CHARGE, 20),
        (3, StepType.REST, 3),
        (4, StepType.PULSE, 11),
        (5, StepType.REST, 3),
        (6, StepType.DISCHARGE, 27),
    ]
    assert {s.source_step_type for s in steps} == {""}


def test_cumulative_counters_become_per_step_amounts():
    steps = read().cells[0].steps
    cccv, rest, pulse, dis = steps[1], steps[2], steps[3], steps[5]

    assert cccv.capacity_ah == 3.09389  # Charge_Capacity runs from 0 to 3.093890 Ah
    assert cccv.energy_wh == 12.369313
    assert rest.capacity_ah == 0.0  # the counters stand still
    assert pulse.capacity_ah == 0.013889  # Discharge_Capacity 0 -> 0.013889 Ah
    assert pulse.energy_wh == 0.056883
    # Discharge_Capacity ends at 5.316667 Ah, of which 0.013889 Ah came from the pulse.
    assert dis.capacity_ah == pytest.approx(5.302778, abs=1e-12)
    assert dis.curve.capacity_ah[0] == 0.0
    assert dis.energy_wh == pytest.approx(19.395353 - 0.056883, abs=1e-12)


def test_pulse_and_cv_results():
    steps = read().cells[0].steps
    cccv, pulse = steps[1], steps[3]

    assert pulse.duration_s == 10.0
    assert pulse.curve.time_s.tolist() == [float(t) for t in range(11)]
    assert pulse.end_current_a == -5.0
    assert pulse.start_voltage_v == 4.097823
    assert pulse.cv_time_s is None
    assert cccv.duration_s == 5632.0
    assert cccv.cv_time_s == 5632.0 - 4200.0  # 4.200160 V first logged at 4200 s
    assert cccv.tail_current_a == 0.249956
    assert cccv.curve.test_time_s[0] == 300.0


def test_month_first_local_time_becomes_utc():
    steps = read().cells[0].steps

    assert steps[0].started_at == datetime(2024, 3, 12, 12, 15, tzinfo=UTC)  # 08:15 EDT
    assert steps[3].started_at == datetime(2024, 3, 12, 14, 3, 52, tzinfo=UTC)
    assert steps[5].ended_at == datetime(2024, 3, 12, 16, 12, 18, tzinfo=UTC)


def test_xlsx_export_with_global_info_matches_the_csv():
    workbook = ms.arbin_xlsx(ms.nmc_with_pulse(), barcode=BARCODE, channel=6)

    result = cycler_file_read(workbook, profile="arbin_xlsx", timezone=DETROIT)

    assert result.metadata == {
        "Channel": "6",
        "Start DateTime": "03/12/2024 08:15:00",
        "Schedule File Name": "FORM_21700_v4.sdx",
        "Creator": "line2",
        "Barcode": BARCODE,
    }
    cell = result.cells[0]
    assert (cell.barcode, cell.channel) == (BARCODE, "6")
    expected = read().cells[0].steps
    assert [
        (s.step_type, s.capacity_ah, s.duration_s, s.cv_time_s, s.started_at) for s in cell.steps
    ] == [(s.step_type, s.capacity_ah, s.duration_s, s.cv_time_s, s.started_at) for s in expected]


def test_newer_spaced_column_names_are_read():
    text = ms.text_of(ms.ARBIN_FILE)
    header = text.split("\r\n", 1)[0]
    spaced = (
        header.replace("Data_Point", "Data Point")
        .replace("Date_Time", "Date Time")
        .replace("Test_Time(s)", "Test Time (s)")
        .replace("Step_Time(s)", "Step Time (s)")
        .replace("Cycle_Index", "Cycle Index")
        .replace("Step_Index", "Step Index")
        .replace("Charge_Capacity(Ah)", "Charge Capacity (Ah)")
        .replace("Discharge_Capacity(Ah)", "Discharge Capacity (Ah)")
        .replace("Aux_Temperature_1(C)", "Temperature (C)_1")
    )

    result = read(text.replace(header, spaced).encode())

    assert result.columns["temperature"] == "Temperature (C)_1"
    assert result.columns["test_time"] == "Test Time (s)"
    assert [s.capacity_ah for s in result.cells[0].steps] == [
        s.capacity_ah for s in read().cells[0].steps
    ]


def test_pulse_length_is_a_profile_setting():
    import dataclasses

    from formation.cyclers import PROFILES

    profile = dataclasses.replace(PROFILES["arbin_csv"], pulse_max_s=5.0)

    steps = read(profile=profile).cells[0].steps

    assert steps[3].step_type == StepType.DISCHARGE


def test_cumulative_counter_that_falls_within_a_step_is_refused():
    text = ms.text_of(ms.ARBIN_FILE)
    bad = ms.replace_once(text, ",2.885800,", ",2.085800,")

    with pytest.raises(CyclerFileError) as err:
        read(bad.encode())

    assert (err.value.field, err.value.row) == ("charge_capacity", 18)
    assert "'Charge_Capacity(Ah)' decreases within a step at row 18" in err.value.message


def test_current_in_milliamperes_labelled_amperes_is_out_of_range():
    lines = ms.text_of(ms.ARBIN_FILE).splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[6] = f"{float(cells[6]) * 1000:.3f}"  # mA values under Current(A)
        out.append(",".join(cells))

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(out).encode())

    assert (err.value.field, err.value.code, err.value.row) == ("current", "unit", 4)
    assert err.value.message == (
        "Column 'Current(A)' gives 2500 A at row 4, outside -2000 to 2000 A for a cell: check "
        "the unit in the header."
    )


def test_capacity_in_milliampere_hours_labelled_ampere_hours_is_caught():
    lines = ms.text_of(ms.ARBIN_FILE).splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        cells[9] = f"{float(cells[9]) * 1000:.3f}"  # mAh values under Charge_Capacity(Ah)
        out.append(",".join(cells))

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(out).encode())

    assert (err.value.field, err.value.code, err.value.row) == ("current", "unit", 4)
    assert err.value.message == (
        "Step 2 (rows 4-23): the current integrates to 3.08662 Ah but 'Charge_Capacity(Ah)' / "
        "'Discharge_Capacity(Ah)' counts 3093.89 Ah (a factor of 0.000998); check the units of "
        "'Current(A)' and the capacity column."
    )
