"""Files a reader must refuse as a whole, with a reason that names the column or field and
the row. A refusal returns nothing: the read raises before any record exists."""

import dataclasses
import io
import zipfile

import pytest

from formation.cyclers import PROFILES, CyclerFileError, cycler_file_read
from tests.formation.cyclers.fixtures import make_samples as ms

NEWARE_KW = {"profile": "neware_csv", "barcode": "NMC21700-2403-00871"}


def neware_text() -> str:
    return ms.text_of(ms.NEWARE_FILE, "utf-8-sig")


def neware_lines() -> list[str]:
    return neware_text().split("\r\n")


def refused(data, **kwargs) -> CyclerFileError:
    with pytest.raises(CyclerFileError) as err:
        cycler_file_read(data, **kwargs)
    return err.value


def with_column(lines: list[str], index: int, edit) -> bytes:
    """The Neware fixture with column ``index`` of every data line passed through ``edit``."""
    out = [lines[0]]
    for line in lines[1:]:
        if line:
            cells = line.split(",")
            cells[index] = edit(cells[index])
            line = ",".join(cells)
        out.append(line)
    return "\r\n".join(out).encode()


# --- empty and truncated ------------------------------------------------------------------


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_empty_file_is_refused_by_every_profile(profile):
    err = refused(b"", profile=profile, name="channel-07.csv")

    assert (err.code, err.field) == ("empty", "file")
    assert err.message == "channel-07.csv is empty (0 bytes)."


def test_blank_lines_only_are_empty():
    err = refused(b"\r\n\r\n  \r\n", **NEWARE_KW)

    assert err.code == "empty"


def test_header_without_data_rows_is_empty():
    header = neware_lines()[0]

    err = refused((header + "\r\n").encode(), name="ch3.csv", **NEWARE_KW)

    assert err.code == "empty"
    assert err.message == "ch3.csv has a header (row 1) but no data rows."


def test_truncated_last_line_names_the_missing_cell():
    text = neware_text().rstrip("\r\n")
    cut = text[: text.rindex(",2.4981,")]  # the export stopped mid-row

    err = refused(cut.encode(), **NEWARE_KW)

    assert (err.field, err.row, err.code) == ("voltage", 71, "not_a_number")
    assert err.message == "Column 'Voltage(V)' is empty at row 71."


# --- wrong layout or kind of file ---------------------------------------------------------


def test_maccor_export_given_to_the_neware_profile():
    err = refused(ms.MACCOR_FILE, **NEWARE_KW)

    assert (err.code, err.row) == ("wrong_format", 2)
    assert err.message == (
        "maccor_lf105_031.txt looks like a Maccor text export (header at row 2), not a Neware "
        "BTS export as profile 'neware_csv' expects; read it with 'maccor_txt'."
    )


def test_neware_export_given_to_the_arbin_profile():
    err = refused(ms.NEWARE_FILE, profile="arbin_csv", barcode="X")

    assert err.code == "wrong_format"
    assert "looks like a Neware BTS export" in err.message
    assert "'neware_csv' or 'neware_xlsx' or 'neware_nda'" in err.message


def test_cabinet_tray_file_given_to_the_maccor_profile():
    err = refused(ms.CABINET_FILE, profile="maccor_txt")

    assert err.code == "wrong_format"
    assert "looks like a formation-cabinet tray export (header at row 1)" in err.message


def test_arbin_export_given_to_the_cabinet_profile():
    err = refused(ms.ARBIN_FILE, profile="cabinet_csv", tray="T1")

    assert err.code == "wrong_format"
    assert "looks like a Arbin MITS export" in err.message


def test_unrelated_csv_names_the_missing_columns():
    data = b"Barcode;Weight [g];Result\r\nLF105A24031200417;1980.4;OK\r\n"

    err = refused(data, **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("missing_column", "data_point", 1)
    assert err.message.startswith(
        "<bytes>: required column(s) missing for a Neware BTS export: data_point (e.g. "
        "'DataPoint'); step_index (e.g. 'Step Index')"
    )
    assert "Best header candidate (row 1) has: 'Barcode;Weight [g];Result'." in err.message


def test_workbook_given_to_a_csv_profile_points_to_the_xlsx_profile():
    workbook = ms.neware_xlsx(ms.nmc_formation(), barcode="NMC21700-2403-00871")

    err = refused(workbook, name="ch3.xlsx", **NEWARE_KW)

    assert err.code == "wrong_format"
    assert err.message == (
        "ch3.xlsx is an XLSX workbook, not the CSV text that profile 'neware_csv' reads; read "
        "it with 'neware_xlsx'."
    )


def test_csv_given_to_the_xlsx_profile_says_what_it_is():
    err = refused(ms.NEWARE_FILE, profile="neware_xlsx", barcode="X")

    assert err.code == "wrong_format"
    assert err.message == (
        "neware_21700_ch82-1-3.csv is Neware BTS export text, not an XLSX workbook as profile "
        "'neware_xlsx' expects."
    )


def test_arbin_res_database_is_not_a_csv():
    res = b"\x00\x01\x00\x00Standard Jet DB\x00" + bytes(2048)

    err = refused(res, profile="arbin_csv", name="FORM_21700_Channel_6.res", barcode="X")

    assert err.code == "wrong_format"
    assert "is an MS Access database (an Arbin .res file?)" in err.message


def test_zip_that_is_not_a_workbook():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "export")

    err = refused(buf.getvalue(), profile="arbin_xlsx", barcode="X")

    assert err.code == "wrong_format"
    assert "is a ZIP archive" in err.message


def test_worksheet_named_by_the_profile_must_exist():
    workbook = ms.neware_xlsx(ms.nmc_formation(), barcode="NMC21700-2403-00871")
    profile = dataclasses.replace(PROFILES["neware_xlsx"], sheet_name="Detail_82_1_3")

    err = refused(workbook, profile=profile)

    assert err.field == "sheet_name"
    assert err.message == "<bytes> has no worksheet 'Detail_82_1_3'; it has 'test', 'record'."


# --- columns and units --------------------------------------------------------------------


def test_missing_required_column():
    lines = neware_lines()
    data = with_column(
        [lines[0].replace("Voltage(V)", "Aux Voltage(V)"), *lines[1:]], 0, lambda c: c
    )

    err = refused(data, **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("missing_column", "voltage", 1)
    assert "voltage (e.g. 'Voltage')" in err.message


def test_unknown_unit_string():
    lines = neware_lines()
    lines[0] = lines[0].replace("Current(mA)", "Current(mAmp)")

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("unit", "current", 1)
    assert err.message == (
        "Column 'Current(mAmp)': unknown current unit 'mAmp'; expected one of A, mA, µA."
    )


def test_quantity_without_a_unit_in_the_header():
    lines = neware_lines()
    lines[0] = lines[0].replace("Voltage(V)", "Voltage")

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field) == ("unit", "voltage")
    assert err.message == "Column 'Voltage' has no unit; the header must say it, e.g. 'Voltage(V)'."


def test_millivolts_under_a_volt_header():
    data = with_column(neware_lines(), 7, lambda c: f"{float(c) * 1000:.1f}")

    err = refused(data, **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("unit", "voltage", 2)
    assert err.message == (
        "Column 'Voltage(V)' gives 3199.8 V at row 2, outside -0.5 to 6 V for a cell: check the "
        "unit in the header."
    )


def test_volts_under_a_millivolt_header():
    lines = neware_lines()
    lines[0] = lines[0].replace("Voltage(V)", "Voltage(mV)")

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field) == ("unit", "voltage")
    assert err.message == (
        "Column 'Voltage(mV)' never exceeds 4.201 mV: the values look like volts."
    )


def test_kelvin_is_converted_and_kelvin_read_as_celsius_is_refused():
    lines = neware_lines()
    kelvin = with_column(
        [lines[0].replace("T1(℃)", "T1(K)"), *lines[1:]], 18, lambda c: f"{float(c) + 273.15:.2f}"
    )
    wrong = with_column(lines, 18, lambda c: f"{float(c) + 273.15:.2f}")

    result = cycler_file_read(kelvin, **NEWARE_KW)
    err = refused(wrong, **NEWARE_KW)

    assert result.units["temperature"] == "K"
    assert result.cells[0].steps[0].temperature_start_c == pytest.approx(25.0, abs=1e-9)
    assert (err.code, err.field, err.row) == ("unit", "temperature", 2)


def test_same_column_twice_is_refused():
    lines = neware_lines()
    lines[0] = lines[0].replace("Power(W)", "Voltage(V)")

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("duplicate", "voltage", 1)
    assert err.message == "Column 'Voltage(V)' appears twice in the header."


def test_strict_neware_profile_reports_unknown_columns():
    profile = dataclasses.replace(PROFILES["neware_csv"], name="bts8-strict", strict=True)
    lines = neware_lines()
    lines[0] = lines[0].replace("Power(W)", "Operator")

    err = refused("\r\n".join(lines).encode(), profile=profile, barcode="X")
    relaxed = cycler_file_read("\r\n".join(lines).encode(), profile="neware_csv", barcode="X")

    assert (err.code, err.row) == ("unknown_column", 1)
    assert err.message == (
        "<bytes>: column(s) 'Operator' are not part of a Neware BTS export, and profile "
        "'bts8-strict' is strict."
    )
    assert "Operator" in relaxed.ignored_columns


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("nan", "has 'nan', not a number"),
        ("", "is empty"),
        ("n/a", "has 'n/a', not a number"),
        ("inf", "has 'inf', not a number"),
    ],
)
def test_bad_value_in_a_required_array(value, what):
    lines = neware_lines()
    cells = lines[30].split(",")
    cells[6] = value  # Current(mA) of data point 30
    lines[30] = ",".join(cells)

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("not_a_number", "current", 31)
    assert err.message == f"Column 'Current(mA)' {what} at row 31."


def test_step_number_with_a_fraction():
    lines = neware_lines()
    lines[5] = lines[5].replace("5,1,2,CC Chg", "5,1,2.5,CC Chg")

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.field, err.row) == ("step_index", 6)
    assert err.message == "Column 'Step Index' has '2.5' at row 6, not a whole number."


def test_garbled_clock_string():
    lines = neware_lines()
    lines[12] = lines[12].replace(",00:10:00.000,", ",00:1O:00.000,")

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.field, err.row, err.code) == ("step_time", 13, "not_a_number")
    assert err.message == (
        "Column 'Time' has '00:1O:00.000' at row 13, not a duration (hh:mm:ss, or seconds)."
    )


def test_unreadable_timestamp_in_the_middle_of_a_step():
    lines = neware_lines()
    lines[20] = lines[20].replace("2024-03-12 09:40:00", "2024-03-12 9h40")

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.field, err.row, err.code) == ("timestamp", 21, "not_a_number")
    assert err.message == "Column 'Date' has '2024-03-12 9h40' at row 21, not a date and time."


def test_time_that_does_not_exist_in_the_profile_zone():
    text = neware_text().replace("2024-03-12 08:", "2024-03-31 02:")  # clocks go forward

    err = refused(text.encode(), timezone="Europe/Berlin", **NEWARE_KW)

    assert (err.field, err.row) == ("timestamp", 2)
    assert err.message == (
        "Column 'Date' has '2024-03-31 02:15:00' at row 2, not a date and time "
        "(2024-03-31 02:15:00 does not exist in Europe/Berlin)."
    )


# --- order and duplicates -----------------------------------------------------------------


def test_duplicate_data_point():
    lines = neware_lines()
    lines.insert(25, lines[24])

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("duplicate", "data_point", 26)
    assert err.message == "Duplicate data point: 'DataPoint' 24 is at rows 25 and 26."


def test_data_points_out_of_order():
    lines = neware_lines()
    lines[24], lines[25] = lines[25], lines[24]

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("time_order", "data_point", 26)


def test_step_time_going_backwards_within_a_step():
    lines = neware_lines()
    lines[15] = lines[15].replace(",00:25:00.000,", ",00:02:00.000,", 1)

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("time_order", "step_time", 16)
    assert err.message == (
        "Time goes backwards within step 3 at row 16 ('Time': 1200 s then 120 s)."
    )


def test_test_time_going_backwards():
    lines = neware_lines()
    cells = lines[30].split(",")
    cells[5] = "00:35:00.000"  # Total Time jumps back two hours
    lines[30] = ",".join(cells)

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("time_order", "test_time", 31)


def test_step_starting_before_the_previous_one_ended():
    lines = neware_lines()
    for k in range(44, 71):  # the discharge, stamped an hour early
        lines[k] = (
            lines[k].replace("2024-03-12 1", "2024-03-12 0", 1)
            if "2024-03-12 1" in (lines[k])
            else lines[k]
        )

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("time_order", "timestamp", 45)
    assert "starts at 2024-03-12 01:26:18 UTC, before the previous step ended" in err.message


# --- encoding -----------------------------------------------------------------------------


def test_utf16_export_with_a_byte_order_mark_is_read():
    data = neware_text().encode("utf-16")

    result = cycler_file_read(data, **NEWARE_KW)

    assert result.n_steps == 5


def test_stray_quote_swallowing_the_rest_of_the_file():
    lines = neware_lines()
    lines[30] = lines[30].replace(",CCCV Chg,", ',"CCCV Chg,')

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert (err.code, err.field, err.row) == ("not_a_number", "voltage", 31)
    assert err.message == "Column 'Voltage(V)' is empty at row 31."


# --- profile and arguments ----------------------------------------------------------------


def test_unknown_profile_name():
    err = refused(ms.NEWARE_FILE, profile="bitrode_csv")

    assert (err.field, err.code) == ("profile", "invalid")
    assert err.message.startswith("Unknown cycler profile 'bitrode_csv'; one of cabinet_csv,")


def test_unknown_time_zone():
    err = refused(ms.NEWARE_FILE, timezone="China Standard Time", **NEWARE_KW)

    assert err.field == "timezone"
    assert "use an IANA name such as Asia/Shanghai" in err.message


def test_unknown_sign_convention():
    profile = dataclasses.replace(PROFILES["neware_csv"], sign_convention="negative_charge")

    err = refused(ms.NEWARE_FILE, profile=profile, barcode="X")

    assert err.field == "sign_convention"


def test_missing_file_path():
    err = refused("/nonexistent/ch3.csv", **NEWARE_KW)

    assert (err.code, err.field) == ("io", "file")
    assert err.message == "ch3.csv: cannot be read: No such file or directory."


def test_error_as_dict_for_dead_letters():
    lines = neware_lines()
    cells = lines[45].split(",")
    cells[7] = "x.1234"  # Voltage(V) of data point 45
    lines[45] = ",".join(cells)

    err = refused("\r\n".join(lines).encode(), **NEWARE_KW)

    assert err.as_dict() == {
        "code": "not_a_number",
        "detail": "Column 'Voltage(V)' has 'x.1234', not a number at row 46.",
        "field": "voltage",
        "row": 46,
    }
