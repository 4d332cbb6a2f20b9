"""Neware BTS exports of a 5 Ah NMC 21700 formation: rest, 0.1C pre-charge, 0.5C CCCV to
4.2 V (cut-off 0.25 A), rest, 0.5C discharge to 2.5 V."""

import dataclasses
import sys
from datetime import UTC, datetime

import numpy as np
import pytest

from formation.cyclers import (
    PROFILES,
    CyclerFileError,
    SignConvention,
    StepType,
    cycler_file_read,
)
from tests.formation.cyclers.fixtures import make_samples as ms

BARCODE = "NMC21700-2403-00871"


def read(data=None, profile="neware_csv", **kwargs):
    kwargs.setdefault("barcode", BARCODE)
    return cycler_file_read(ms.NEWARE_FILE if data is None else data, profile=profile, **kwargs)


def summary(result):
    return [
        (
            s.step_index,
            s.step_type,
            round(s.capacity_ah, 6),
            round(s.energy_wh, 5),
            s.duration_s,
            s.cv_time_s,
            s.started_at,
            s.ended_at,
        )
        for s in result.cells[0].steps
    ]


def test_bts8_csv_becomes_canonical_steps():
    result = read()

    assert result.source_format == "neware_csv"
    assert result.n_rows == 70
    assert result.source_sign_convention == SignConvention.CHARGE_POSITIVE
    assert result.units == {
        "voltage": "V",
        "current": "mA",
        "temperature": "°C",
        "step_time": "hh:mm:ss",
        "test_time": "hh:mm:ss",
        "capacity": "mAh",
        "energy": "mWh",
    }
    assert result.columns["capacity"] == "Capacity(mAh)"
    assert result.ignored_columns == ("Spec. Cap.(mAh/g)", "Spec. Energy(mWh/g)", "Power(W)")
    (cell,) = result.cells
    assert (cell.barcode, cell.channel, cell.tray, cell.position) == (BARCODE, None, None, None)
    assert [(s.step_index, s.step_type, s.source_step_type) for s in cell.steps] == [
        (1, StepType.REST, "Rest"),
        (2, StepType.CC_CHARGE, "CC Chg"),
        (3, StepType.CCCV_CHARGE, "CCCV Chg"),
        (4, StepType.REST, "Rest"),
        (5, StepType.DISCHARGE, "CC DChg"),
    ]
    assert all(s.cycle_index == 1 for s in cell.steps)


def test_units_signs_and_step_results():
    cell = read().cells[0]
    pre, cccv, dis = cell.steps[1], cell.steps[2], cell.steps[4]

    assert pre.capacity_ah == pytest.approx(0.25, abs=1e-12)  # 250.0000 mAh
    assert pre.curve.current_a.tolist() == [0.5] * 7  # 500.0 mA
    assert cccv.capacity_ah == pytest.approx(5.2565772, abs=1e-12)  # 5256.5772 mAh
    assert cccv.energy_wh == pytest.approx(20.316698, abs=1e-12)
    assert cccv.duration_s == 8778.0  # 02:26:18.000
    assert cccv.tail_current_a == pytest.approx(0.25, abs=1e-12)
    assert cccv.end_voltage_v == 4.2
    assert cccv.temperature_rise_c == pytest.approx(2.7, abs=1e-9)
    assert dis.capacity_ah == pytest.approx(5.3166667, abs=1e-12)
    assert dis.end_current_a == -2.5  # -2500.0 mA: Neware's discharge sign is kept
    assert dis.end_voltage_v == 2.4981
    assert dis.duration_s == 7656.0
    assert dis.curve.test_time_s[-1] == 19134.0  # Total Time 05:18:54.000
    assert dis.curve.capacity_ah[-1] == dis.capacity_ah
    assert dis.ended_at == datetime(2024, 3, 12, 13, 33, 54, tzinfo=UTC)


def test_cv_time_is_counted_from_the_first_sample_at_the_voltage_limit():
    cccv = read().cells[0].steps[2]
    t, v = cccv.curve.time_s, cccv.curve.voltage_v
    first = int(np.argmax(v >= 4.195))

    assert t[first] == 7200.0  # 02:00:00, the first logged 4.2000 V
    assert cccv.cv_time_s == 8778.0 - 7200.0


def test_current_in_amperes_gives_the_same_steps():
    amps = ms.neware_csv(ms.nmc_formation(), current_unit="A")

    a, b = read(), read(amps)

    assert b.units["current"] == "A"
    assert b.units["capacity"] == "Ah"
    assert b.units["energy"] == "Wh"
    for sa, sb in zip(a.cells[0].steps, b.cells[0].steps, strict=True):
        assert sb.step_type == sa.step_type
        assert sb.capacity_ah == pytest.approx(sa.capacity_ah, abs=1e-7)
        assert sb.energy_wh == pytest.approx(sa.energy_wh, abs=1e-7)
        assert sb.cv_time_s == sa.cv_time_s
        np.testing.assert_allclose(sb.curve.current_a, sa.curve.current_a, atol=1e-4)


def test_xlsx_export_matches_the_csv_and_carries_the_barcode():
    workbook = ms.neware_xlsx(ms.nmc_formation(), barcode=BARCODE)

    from_csv = read()
    from_xlsx = cycler_file_read(workbook, profile="neware_xlsx", name="82-1-3.xlsx")

    assert from_xlsx.source_format == "neware_xlsx"
    assert from_xlsx.metadata == {
        "Start Time": "2024-03-12 08:15:00",
        "Barcode": BARCODE,
        "Device": "BTS82-5V6A",
        "Channel": "82-1-3",
    }
    (cell,) = from_xlsx.cells
    assert (cell.barcode, cell.channel, cell.equipment) == (BARCODE, "82-1-3", "BTS82-5V6A")
    assert summary(from_xlsx) == summary(from_csv)


def test_chinese_localised_export_in_gb18030():
    text = ms.text_of(ms.NEWARE_FILE, "utf-8-sig")
    header, body = text.split("\r\n", 1)
    chinese = (
        "数据序号,循环号,工步号,工步类型,时间,总时间,电流(mA),电压(V),容量(mAh),"
        "Spec. Cap.(mAh/g),充电容量(mAh),放电容量(mAh),能量(mWh),Spec. Energy(mWh/g),"
        "充电能量(mWh),放电能量(mWh),日期,Power(W),温度(℃)"
    )
    assert len(chinese.split(",")) == len(header.split(","))
    body = (
        body.replace(",CCCV Chg,", ",恒流恒压充电,")
        .replace(",CC Chg,", ",恒流充电,")
        .replace(",CC DChg,", ",恒流放电,")
        .replace(",Rest,", ",搁置,")
    )
    profile = dataclasses.replace(PROFILES["neware_csv"], name="l2-neware-cn", encoding="gb18030")

    result = read((chinese + "\r\n" + body).encode("gb18030"), profile=profile)

    assert result.profile == "l2-neware-cn"
    assert result.columns["step_type"] == "工步类型"
    assert summary(result) == summary(read())
    assert result.cells[0].steps[2].source_step_type == "恒流恒压充电"


def test_decimal_comma_semicolon_export():
    header, body = ms.text_of(ms.NEWARE_FILE, "utf-8-sig").split("\r\n", 1)
    european = header.replace(",", ";") + "\r\n" + body.replace(",", ";").replace(".", ",")
    assert "00:05:00,000;" in european
    profile = dataclasses.replace(
        PROFILES["neware_csv"], name="bts8-de", delimiter=";", decimal_separator=","
    )

    result = read(european.encode("utf-8"), profile=profile)

    assert summary(result) == summary(read())


def test_decimal_comma_with_comma_delimiter_is_a_profile_error():
    profile = dataclasses.replace(PROFILES["neware_csv"], decimal_separator=",")

    with pytest.raises(CyclerFileError) as err:
        read(profile=profile)

    assert err.value.field == "delimiter"


def test_gb18030_file_read_as_utf8_is_an_encoding_refusal():
    text = ms.text_of(ms.NEWARE_FILE, "utf-8-sig").replace("T1(℃)", "温度(℃)")

    with pytest.raises(CyclerFileError) as err:
        read(text.encode("gb18030"))

    assert err.value.code == "encoding"
    assert err.value.row == 1
    assert "is not utf-8 text" in err.value.message
    assert "gb18030" in err.value.message


def test_barcode_must_come_with_a_file_that_has_none():
    with pytest.raises(CyclerFileError) as err:
        cycler_file_read(ms.NEWARE_FILE, profile="neware_csv")

    assert (err.value.field, err.value.code) == ("barcode", "identity")
    assert "give the barcode" in err.value.message


def test_a_given_barcode_that_contradicts_the_workbook_is_refused():
    workbook = ms.neware_xlsx(ms.nmc_formation(), barcode=BARCODE)

    with pytest.raises(CyclerFileError) as err:
        cycler_file_read(workbook, profile="neware_xlsx", barcode="NMC21700-2403-00999")

    assert err.value.field == "barcode"
    assert err.value.message == (
        "barcode 'NMC21700-2403-00999' was given but the file says 'NMC21700-2403-00871'."
    )


def test_discharge_step_with_positive_current_does_not_fit_neware():
    text = ms.text_of(ms.NEWARE_FILE, "utf-8-sig").replace(",-2500.0,", ",2500.0,")

    with pytest.raises(CyclerFileError) as err:
        read(text.encode())

    assert (err.value.field, err.value.code, err.value.row) == ("current", "sign", 45)
    assert "Discharge step 'CC DChg' at row 45" in err.value.message
    assert "charge_positive" in err.value.message


def test_unknown_step_type_is_refused():
    text = ms.text_of(ms.NEWARE_FILE, "utf-8-sig").replace(",1,4,Rest,", ",1,4,SIM,")

    with pytest.raises(CyclerFileError) as err:
        read(text.encode())

    assert (err.value.field, err.value.code, err.value.row) == ("step_type", "step_type", 42)
    assert "Unknown step type 'SIM'" in err.value.message


def test_step_type_changing_within_one_step_is_refused():
    lines = ms.text_of(ms.NEWARE_FILE, "utf-8-sig").splitlines()
    lines[20] = lines[20].replace(",CCCV Chg,", ",CC Chg,")

    with pytest.raises(CyclerFileError) as err:
        read("\r\n".join(lines).encode())

    assert (err.value.field, err.value.row) == ("step_type", 21)
    assert "changes from 'CCCV Chg' to 'CC Chg'" in err.value.message


# --- .nda / .ndax through the optional NewareNDA package -------------------------------------


def test_nda_file_reads_like_the_csv_export():
    pytest.importorskip("NewareNDA")
    nda = ms.neware_nda_v29(ms.nmc_formation())

    result = read(nda, profile="neware_nda", name="82-1-3.nda")

    assert result.source_format == "neware_nda"
    assert result.n_rows == 70
    assert result.units["current"] == "mA"
    assert result.units["step_time"] == "s"
    assert result.columns["temperature"] == "T1(°C)"
    assert [s.source_step_type for s in result.cells[0].steps] == [
        "Rest",
        "CC_Chg",
        "CCCV_Chg",
        "Rest",
        "CC_DChg",
    ]
    csv_steps = read().cells[0].steps
    for a, b in zip(result.cells[0].steps, csv_steps, strict=True):
        assert (a.step_type, a.duration_s, a.started_at, a.ended_at) == (
            b.step_type,
            b.duration_s,
            b.started_at,
            b.ended_at,
        )
        assert a.capacity_ah == pytest.approx(b.capacity_ah, rel=1e-6)  # float32 in the file
        assert a.cv_time_s == b.cv_time_s
        assert a.temperature_max_c == pytest.approx(b.temperature_max_c, abs=1e-5)


def test_nda_profile_without_the_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "NewareNDA", None)  # an absent optional dependency
    nda = ms.neware_nda_v29(ms.nmc_formation())

    with pytest.raises(CyclerFileError) as err:
        read(nda, profile="neware_nda")

    assert err.value.code == "unsupported"
    assert "NewareNDA==2026.6.11" in err.value.message


def test_csv_export_given_to_the_nda_profile_is_refused():
    with pytest.raises(CyclerFileError) as err:
        read(profile="neware_nda")

    assert err.value.code == "wrong_format"
    assert "is not a Neware .nda/.ndax file" in err.value.message


def test_damaged_nda_file_is_refused():
    pytest.importorskip("NewareNDA")
    nda = ms.neware_nda_v29(ms.nmc_formation())
    damaged = nda[:14] + bytes([31]) + nda[15:]  # a version the reader does not know

    with pytest.raises(CyclerFileError) as err:
        read(damaged, profile="neware_nda", name="82-1-3.nda")

    assert err.value.code == "wrong_format"
    assert err.value.message.startswith("82-1-3.nda is not a readable Neware .nda file:")
