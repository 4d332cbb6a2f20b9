"""Maccor text export of a 105 Ah LFP prismatic formation: tab-separated, a metadata line
above the header, current as a magnitude with a C/D/R state, Amp-hr counting per direction,
month-first DPt Time with AM/PM, cp1252."""

from datetime import UTC, datetime

import numpy as np
import pytest

from formation.cyclers import CyclerFileError, SignConvention, StepType, cycler_file_read
from tests.formation.cyclers.fixtures import make_samples as ms

BERLIN = "Europe/Berlin"


def read(data=None, **kwargs):
    kwargs.setdefault("timezone", BERLIN)
    return cycler_file_read(
        ms.MACCOR_FILE if data is None else data, profile="maccor_txt", **kwargs
    )


def maccor_text() -> str:
    return ms.text_of(ms.MACCOR_FILE, "cp1252")


def test_header_line_metadata_and_barcode():
    result = read()

    assert result.metadata == {
        "Today's Date": "03/12/2024 10:56:35 PM",
        "Date of Test": "03/12/2024 08:15:00 AM",
        "Filename": "C:\\Data\\FORM-L3\\LF105A24031200420.031",
        "Procedure": "FORM-LF105-v3.000",
        "Comment/Barcode": "LF105A24031200420",
        "barcode": "LF105A24031200420",
    }
    assert result.cells[0].barcode == "LF105A24031200420"
    assert result.n_rows == 83
    assert result.ignored_columns == ()
    assert result.units == {
        "voltage": "V",
        "current": "A",
        "temperature": "°C",
        "step_time": "hh:mm:ss",
        "test_time": "hh:mm:ss",
        "capacity": "Ah",
        "energy": "Wh",
    }


def test_state_signs_the_current_and_names_the_steps():
    result = read()
    steps = result.cells[0].steps

    assert result.source_sign_convention == SignConvention.MAGNITUDE_WITH_STATE
    assert [(s.step_index, s.source_step_type, s.step_type) for s in steps] == [
        (1, "R", StepType.REST),
        (2, "C", StepType.CC_CHARGE),
        (3, "C", StepType.CCCV_CHARGE),
        (4, "R", StepType.REST),
        (5, "D", StepType.DISCHARGE),
    ]
    assert (steps[2].curve.current_a > 0).all()
    assert steps[4].curve.current_a.tolist() == [-21.0] * 34  # Amps 21.000000 with state D
    assert [s.end_reason for s in steps] == ["129", "129", "131", "129", "133"]


def test_amp_hour_counter_is_split_per_step():
    steps = read().cells[0].steps

    assert steps[1].capacity_ah == 5.25
    # Amp-hr runs on from the CC step's 5.25 Ah to 118.833064 Ah.
    assert steps[2].capacity_ah == pytest.approx(113.583064, abs=1e-9)
    assert steps[2].curve.capacity_ah[0] == 0.0
    assert steps[2].energy_wh == pytest.approx(400.356364 - 15.945392, abs=1e-9)
    assert steps[3].capacity_ah == 0.0  # the rest shows the held counter
    assert steps[4].capacity_ah == 112.291667  # restarted for the discharge
    assert (np.diff(steps[4].curve.capacity_ah) > 0).all()


def test_clock_times_cv_and_utc():
    steps = read().cells[0].steps
    cccv = steps[2]

    assert cccv.duration_s == 20445.0  # 0d 05:40:45.00
    assert cccv.cv_time_s == 20445.0 - 19200.0  # first 3.65 V sample at 05:20:00
    assert cccv.tail_current_a == 5.24784
    assert cccv.curve.test_time_s[-1] == 24645.0  # 0d 06:50:45.00
    assert steps[0].started_at == datetime(2024, 3, 12, 7, 15, tzinfo=UTC)  # 8:15 AM CET
    assert cccv.ended_at == datetime(2024, 3, 12, 14, 5, 45, tzinfo=UTC)  # 3:05:45 PM


def test_seconds_columns_variant():
    text = maccor_text()
    lines = text.split("\r\n")
    header = lines[1].split("\t")
    header[3:5] = ["Test (Sec)", "Step (Sec)"]
    out = [lines[0], "\t".join(header)]
    for line in lines[2:]:
        if not line:
            continue
        cells = line.split("\t")
        for k in (3, 4):
            days, clock = cells[k].split("d ")
            h, m, s = clock.split(":")
            cells[k] = f"{int(days) * 86400 + int(h) * 3600 + int(m) * 60 + float(s):.2f}"
        out.append("\t".join(cells))

    result = read("\r\n".join(out).encode("cp1252"))

    assert result.units["test_time"] == "s"
    assert result.columns["step_time"] == "Step (Sec)"
    assert result.columns["step_index"] == "Step"
    assert [(s.step_type, s.duration_s, s.cv_time_s) for s in result.cells[0].steps] == [
        (s.step_type, s.duration_s, s.cv_time_s) for s in read().cells[0].steps
    ]


def test_a_free_text_comment_is_not_a_barcode():
    text = maccor_text().replace(
        "Comment/Barcode:\tLF105A24031200420", "Comment/Barcode:\tline 3 rack 12 formation"
    )

    with pytest.raises(CyclerFileError) as err:
        read(text.encode("cp1252"))
    result = read(text.encode("cp1252"), barcode="LF105A24031200420")

    assert err.value.field == "barcode"
    assert result.metadata["Comment/Barcode"] == "line 3 rack 12 formation"
    assert "barcode" not in result.metadata
    assert result.cells[0].barcode == "LF105A24031200420"


def test_negative_current_contradicts_magnitude_with_state():
    lines = maccor_text().split("\r\n")
    cells = lines[60].split("\t")
    cells[7] = "-" + cells[7]
    lines[60] = "\t".join(cells)

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(lines).encode("cp1252"))

    assert (err.value.field, err.value.code, err.value.row) == ("current", "sign", 61)
    assert err.value.message == (
        "Column 'Amps' has -21 A at row 61, but profile 'maccor_txt' reads current as a "
        "magnitude with the direction from the state or step type."
    )


def test_unknown_state_letter_is_refused():
    lines = maccor_text().split("\r\n")
    lines[20] = lines[20].replace("\tC\t", "\tS\t")

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(lines).encode("cp1252"))

    assert (err.value.field, err.value.code, err.value.row) == ("state", "step_type", 21)
    assert "Unknown state 'S' at row 21" in err.value.message
