"""Live cycler channel status and alarms (envelope kind ``cycler_status``) through the
ingest: the latest state per channel overwritten in place (an older status changes
nothing), alarm episodes raised and cleared, critical alarms published after commit, bad
input refused into the dead-letter store naming the field with nothing written, the read
API and admin, and one status through the real Mosquitto broker and ``ingest_mqtt``.

Data: the 16 simulated 105 Ah prismatic cells of tests/formation/conftest.py, cells 0-7 in
tray T0001 on cabinet fc-01 channels b1/p01..b1/p08, cells 8-15 in T0002 on fc-02. In the
first formation charge at 0.1 C a channel reads about 3.652 V, 10.5 A and 31.5 °C with
15.75 Ah charged after 1.5 h.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from formation.events import CyclerAlarmRaised
from formation.models import ChannelStatus, CyclerAlarm
from genealogy.choices import UnitKind
from genealogy.models import Unit
from qms import events as event_registry
from qms.choices import IntegrationScope
from qms.ingest.envelope import build
from qms.ingest.models import DeadLetter, DeadLetterStatus, IngestMessage
from qms.ingest.services import dead_letters_retry
from tests.factories import UserFactory, integration_create
from tests.formation.conftest import LINE, SITE, channel_of, send, tray_of
from tests.ingest.mqtt_support import (
    Publisher,
    WorkerProcess,
    encode,
    require_mosquitto,
    require_postgresql,
    session_clear,
    topic_of,
    wait_for,
)

pytestmark = pytest.mark.django_db

#: Alarms as a formation cabinet words them.
OVER_TEMPERATURE = {
    "code": "OT-CELL",
    "severity": "critical",
    "text": "Cell temperature 61.2 °C above the 60.0 °C limit",
}
TEMPERATURE_HIGH = {
    "code": "T-HIGH",
    "severity": "warning",
    "text": "Cell temperature 45.3 °C above the 45.0 °C warning level",
}
CONTACT = {
    "code": "CONTACT",
    "severity": "critical",
    "text": "Probe contact resistance 38 mΩ above 20 mΩ",
}
CV_SLOW = {"code": "CV-SLOW", "severity": "info", "text": "CV phase longer than 95th percentile"}


@pytest.fixture
def t0() -> datetime:
    """The first status of a test: an hour ago, on the second."""
    return (timezone.now() - timedelta(hours=1)).replace(microsecond=0)


def channel(sim, i: int, **changes) -> dict:
    """Cell ``i``'s channel in the first formation charge (CC at 0.1 C, 1.5 h in)."""
    _cabinet, name = channel_of(sim, i)
    tray, position = tray_of(sim, i)
    out = {
        "channel": name,
        "tray": tray,
        "position": position,
        "unit": str(sim.serial[i]),
        "state": "cc_charge",
        "step_index": 2,
        "step_elapsed_s": 5400.0,
        "voltage_v": round(3.652 + 0.0007 * (i % 8), 4),
        "current_a": 10.5,
        "temperature_c": 31.5,
        "capacity_ah": 15.75,
        "alarms": [],
    }
    out.update(changes)
    return out


def status(
    sim,
    at: datetime,
    channels: list[dict],
    *,
    equipment: str = "fc-01",
    message_id: str | None = None,
    sign: str = "charge_positive",
    units: list[str] | None = None,
    unit: str | None = None,
    sent_at: datetime | None = None,
) -> dict:
    """A cabinet's ``cycler_status`` envelope: the listed channels at ``at``; the envelope
    names the cells on them (``units``) unless told otherwise."""
    if unit is None and units is None:
        units = [c["unit"] for c in channels if "unit" in c]
    return build(
        kind="cycler_status",
        site=SITE,
        line=LINE,
        station="form",
        equipment=equipment,
        unit=unit,
        units=units,
        source=f"{equipment.upper()} cabinet",
        message_id=message_id or f"{equipment}:status:{at:%Y%m%dT%H%M%S}",
        sent_at=sent_at or at,
        payload={"reported_at": at.isoformat(), "sign_convention": sign, "channels": channels},
    )


def tray_status(sim, at: datetime, tray: int = 0, **changes) -> dict:
    """A whole tray's channels (eight cells) at ``at``."""
    first = 8 * tray
    return status(
        sim,
        at,
        [channel(sim, i, **changes) for i in range(first, first + 8)],
        equipment=f"fc-{tray + 1:02d}",
    )


def row(sim, i: int) -> ChannelStatus:
    cabinet, name = channel_of(sim, i)
    return ChannelStatus.objects.select_related("unit", "equipment").get(
        equipment__code=cabinet, channel=name
    )


def assert_nothing_written() -> None:
    assert (ChannelStatus.objects.count(), CyclerAlarm.objects.count()) == (0, 0)


@pytest.fixture
def raised_events():
    """CyclerAlarmRaised events as delivered (after commit)."""
    seen: list[CyclerAlarmRaised] = []

    def collect(evt: CyclerAlarmRaised) -> None:
        seen.append(evt)

    event_registry.subscribe(CyclerAlarmRaised, collect, app_label="tests", description="collect")
    yield seen
    from qms.events import _registry

    _registry[CyclerAlarmRaised] = [
        s for s in _registry[CyclerAlarmRaised] if s.handler is not collect
    ]


# --- stored --------------------------------------------------------------------------------------


def test_a_cabinets_status_is_stored_one_row_per_channel(sim, cells, t0):
    doc = tray_status(sim, t0)

    [outcome] = send(doc)

    assert outcome.status == "accepted"
    assert ChannelStatus.objects.count() == 8
    first = row(sim, 0)
    assert (first.equipment.code, first.channel, first.channel_key) == (
        "fc-01",
        "b1/p01",
        "fc-01:b1/p01",
    )
    assert (first.tray, first.position, first.unit) == ("T0001", "1", cells[0])
    assert (first.state, first.step_index, first.step_elapsed_s) == ("cc_charge", 2, 5400.0)
    assert (first.voltage_v, first.current_a, first.temperature_c, first.capacity_ah) == (
        3.652, 10.5, 31.5, 15.75,
    )  # fmt: skip
    assert first.reported_at == t0
    assert first.source_message_id == doc["message_id"]
    assert row(sim, 7).voltage_v == 3.6569
    assert list(
        ChannelStatus.objects.order_by("channel").values_list("unit__serial", flat=True)
    ) == [str(s) for s in sim.serial[:8]]
    assert CyclerAlarm.objects.count() == 0
    assert IngestMessage.objects.get(message_id=doc["message_id"]).kind == "cycler_status"


def test_discharge_positive_currents_are_stored_positive_when_charging(sim, cells, t0):
    charging = channel(sim, 0, current_a=-10.5)  # the cabinet reports charge as negative
    discharging = channel(sim, 1, state="discharge", current_a=21.0, voltage_v=3.41)
    resting = channel(sim, 2, state="rest", current_a=0.0, voltage_v=3.598)

    [outcome] = send(status(sim, t0, [charging, discharging, resting], sign="discharge_positive"))

    assert outcome.status == "accepted"
    assert (row(sim, 0).current_a, row(sim, 1).current_a, row(sim, 2).current_a) == (
        10.5, -21.0, 0.0,
    )  # fmt: skip


def test_an_empty_channel_and_a_one_channel_message_naming_its_cell_on_the_envelope(sim, cells, t0):
    empty = channel(sim, 0, state="idle", current_a=0.0, voltage_v=0.0, capacity_ah=None)
    del empty["unit"], empty["tray"], empty["position"]
    loaded = channel(sim, 1)
    single = channel(sim, 2)
    del single["unit"]

    outcomes = send(
        status(sim, t0, [empty, loaded]),
        status(sim, t0, [single], unit=str(sim.serial[2]), message_id="fc-01:p03:single"),
    )

    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert (row(sim, 0).unit, row(sim, 0).state, row(sim, 0).capacity_ah) == (None, "idle", None)
    assert row(sim, 1).unit == cells[1]
    assert row(sim, 2).unit == cells[2]


def test_a_partly_loaded_64_channel_tray_goes_in_as_one_bulk_write(
    sim, cells, t0, django_assert_max_num_queries
):
    """Eight cells in the first positions of a 64-position tray on fc-03; the cabinet flags
    every empty position (PostgreSQL writes the 64 channels and 56 alarms with COPY)."""
    no_cell = {"code": "NO-CELL", "severity": "info", "text": "No cell detected (open circuit)"}
    loaded = [channel(sim, i, tray="T0003") for i in range(8)]  # b1/p01..b1/p08
    empty = [
        {"channel": f"b1/p{n:02d}", "tray": "T0003", "position": str(n), "state": "idle",
         "voltage_v": 0.0, "current_a": 0.0, "temperature_c": 24.8, "alarms": [no_cell]}
        for n in range(9, 65)
    ]  # fmt: skip

    with django_assert_max_num_queries(30):  # with the ingest's first-use look-ups
        [outcome] = send(status(sim, t0, loaded + empty, equipment="fc-03"))

    assert outcome.status == "accepted"
    assert ChannelStatus.objects.filter(equipment__code="fc-03").count() == 64
    assert ChannelStatus.objects.filter(unit__isnull=True, state="idle").count() == 56
    assert CyclerAlarm.objects.filter(code="NO-CELL", cleared_at__isnull=True).count() == 56
    assert CyclerAlarm.objects.get(channel_status__channel="b1/p64").unit is None

    # Seven cells are unloaded (cell 0 stays, resting): the empty flags clear in one update.
    later = t0 + timedelta(seconds=5)
    unloaded = [
        {"channel": c["channel"], "state": "idle", "voltage_v": 0.0, "current_a": 0.0}
        for c in loaded[1:]
    ]
    resting = {**loaded[0], "state": "rest", "current_a": 0.0}
    quiet = [{**c, "alarms": []} for c in empty]
    with django_assert_max_num_queries(20):
        [outcome] = send(status(sim, later, [resting, *unloaded, *quiet], equipment="fc-03"))

    assert outcome.status == "accepted"
    assert CyclerAlarm.objects.filter(cleared_at=later).count() == 56
    assert ChannelStatus.objects.filter(reported_at=later, unit__isnull=True).count() == 63
    stays = ChannelStatus.objects.get(equipment__code="fc-03", channel="b1/p01")
    assert (stays.unit, stays.state, stays.current_a) == (cells[0], "rest", 0.0)


def test_a_later_status_overwrites_the_channel_and_an_older_one_changes_nothing(sim, cells, t0):
    send(tray_status(sim, t0))
    later = t0 + timedelta(seconds=5)
    cv = tray_status(sim, later, state="cv_charge", voltage_v=4.2, current_a=6.31, step_index=3,
                     step_elapsed_s=1.0, capacity_ah=0.0, temperature_c=33.0)  # fmt: skip

    [outcome] = send(cv)

    assert outcome.status == "accepted"
    assert ChannelStatus.objects.count() == 8  # updated in place, no row per status
    after = row(sim, 3)
    assert (after.state, after.voltage_v, after.current_a, after.step_index) == (
        "cv_charge", 4.2, 6.31, 3,
    )  # fmt: skip
    assert (after.reported_at, after.source_message_id) == (later, cv["message_id"])

    # MQTT redelivers an older status late (another message id): it is acknowledged,
    # and leaves the newer state alone. So does another status of the same instant.
    stale = tray_status(sim, t0 + timedelta(seconds=2), temperature_c=31.6)
    same_instant = tray_status(sim, later, temperature_c=40.0)
    same_instant["message_id"] = "fc-01:status:again"

    outcomes = send(stale)
    outcomes += send(same_instant)

    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert ChannelStatus.objects.filter(reported_at=later, temperature_c=33.0).count() == 8
    assert set(ChannelStatus.objects.values_list("source_message_id", flat=True)) == {
        cv["message_id"]
    }


def test_in_one_batch_a_status_sent_later_but_taken_earlier_is_stale(sim, cells, t0):
    """Messages of a batch are applied in ``sent_at`` order, as one by one; each channel
    keeps the status taken last (``reported_at``), not the one sent last."""
    newer = status(sim, t0 + timedelta(seconds=10), [channel(sim, 0, temperature_c=32.0)],
                   sent_at=t0 + timedelta(seconds=11))  # fmt: skip
    delayed = status(sim, t0 + timedelta(seconds=5), [channel(sim, 0, temperature_c=31.8),
                     channel(sim, 1)], sent_at=t0 + timedelta(seconds=12))  # fmt: skip

    outcomes = send(delayed, newer)

    assert [o.status for o in outcomes] == ["accepted", "accepted"]
    assert (row(sim, 0).temperature_c, row(sim, 0).reported_at) == (
        32.0,
        t0 + timedelta(seconds=10),
    )
    assert row(sim, 1).reported_at == t0 + timedelta(seconds=5)  # new channel: taken


@pytest.mark.services
@pytest.mark.timeout(60)
@pytest.mark.django_db(transaction=True)
def test_two_workers_apply_a_channels_statuses_one_after_the_other(sim, cells, t0):
    """A worker applying a status holds the channel rows until it commits; a second worker
    with an older status for the same channels waits, then finds the newer one and changes
    nothing (without the lock it would read the state before and overwrite the newer)."""
    require_postgresql()
    send(tray_status(sim, t0))
    later, earlier = t0 + timedelta(seconds=10), t0 + timedelta(seconds=5)
    done, outcomes = threading.Event(), []

    def second_worker() -> None:
        try:
            outcomes.extend(send(tray_status(sim, earlier, temperature_c=31.7)))
        finally:
            connection.close()
            done.set()

    with transaction.atomic():
        send(tray_status(sim, later, temperature_c=33.0))
        worker = threading.Thread(target=second_worker)
        worker.start()
        assert not done.wait(1.0)  # waiting for the rows this transaction holds
    assert done.wait(30)
    worker.join()

    assert [o.status for o in outcomes] == ["accepted"]
    assert ChannelStatus.objects.filter(reported_at=later, temperature_c=33.0).count() == 8


# --- alarm episodes ------------------------------------------------------------------------------


def test_an_alarm_is_raised_once_kept_while_reported_and_cleared_when_gone(sim, cells, t0):
    times = [t0 + timedelta(seconds=5 * k) for k in range(5)]
    warm = channel(sim, 4, temperature_c=45.3, alarms=[TEMPERATURE_HIGH])
    send(status(sim, times[0], [channel(sim, 4)]))

    send(status(sim, times[1], [warm]))
    send(status(sim, times[2], [{**warm, "temperature_c": 45.6}]))

    episode = CyclerAlarm.objects.get()
    assert (episode.code, episode.severity, episode.text) == (
        "T-HIGH", "warning", TEMPERATURE_HIGH["text"],
    )  # fmt: skip
    assert (episode.unit, episode.channel_status, episode.state) == (
        cells[4], row(sim, 4), "cc_charge",
    )  # fmt: skip
    assert (episode.temperature_c, episode.voltage_v, episode.step_index) == (45.3, 3.6548, 2)
    assert (episode.raised_at, episode.cleared_at) == (times[1], None)
    assert episode.raised_message_id == f"fc-01:status:{times[1]:%Y%m%dT%H%M%S}"

    send(status(sim, times[3], [channel(sim, 4, temperature_c=44.1)]))

    episode.refresh_from_db()
    assert episode.cleared_at == times[3]
    assert episode.cleared_message_id == f"fc-01:status:{times[3]:%Y%m%dT%H%M%S}"

    send(status(sim, times[4], [{**warm, "temperature_c": 45.2}]))

    assert CyclerAlarm.objects.count() == 2  # a new episode, the first stays closed
    second = CyclerAlarm.objects.get(cleared_at__isnull=True)
    assert (second.raised_at, second.temperature_c) == (times[4], 45.2)


def test_another_severity_or_another_cell_opens_a_new_episode(sim, cells, t0):
    warning = {"code": "TEMP", "severity": "warning", "text": "Cell 45.3 °C"}
    critical = {"code": "TEMP", "severity": "critical", "text": "Cell 60.4 °C"}
    send(status(sim, t0, [channel(sim, 5, temperature_c=45.3, alarms=[warning])]))

    send(status(sim, t0 + timedelta(seconds=5),
                [channel(sim, 5, temperature_c=60.4, alarms=[critical])]))  # fmt: skip

    first, second = CyclerAlarm.objects.order_by("id")
    assert (first.severity, first.cleared_at) == ("warning", t0 + timedelta(seconds=5))
    assert (second.severity, second.cleared_at, second.unit) == ("critical", None, cells[5])

    # Another tray on the channel: it still reports TEMP, now about cell 13.
    swapped = channel(sim, 13, channel="b1/p06", alarms=[critical])
    send(status(sim, t0 + timedelta(seconds=10), [swapped]))

    second.refresh_from_db()
    third = CyclerAlarm.objects.get(cleared_at__isnull=True)
    assert second.cleared_at == t0 + timedelta(seconds=10)
    assert (third.unit, third.channel_status) == (cells[13], row(sim, 5))
    assert row(sim, 5).unit == cells[13]


def test_a_critical_alarm_is_published_after_commit_with_its_cell_and_channel(
    sim, cells, t0, raised_events, django_capture_on_commit_callbacks
):
    hot = channel(sim, 6, temperature_c=61.2, alarms=[OVER_TEMPERATURE, TEMPERATURE_HIGH, CV_SLOW])
    with django_capture_on_commit_callbacks() as callbacks:
        [outcome] = send(status(sim, t0, [channel(sim, 5), hot]))
        assert raised_events == []  # nothing before the commit
    for callback in callbacks:
        callback()

    assert outcome.status == "accepted"
    assert CyclerAlarm.objects.count() == 3
    alarm = CyclerAlarm.objects.get(code="OT-CELL")
    [event] = raised_events
    assert event == CyclerAlarmRaised(
        alarm_id=alarm.pk,
        equipment_id=row(sim, 6).equipment_id,
        station_id=row(sim, 6).equipment.station_id,
        channel="b1/p07",
        channel_key="fc-01:b1/p07",
        code="OT-CELL",
        severity="critical",
        text=OVER_TEMPERATURE["text"],
        raised_at=t0,
        unit_id=cells[6].pk,
        step_index=2,
        temperature_c=61.2,
        voltage_v=3.6562,
    )

    # Still reported: no new episode, no new event. A contact fault on a neighbour: one more.
    with django_capture_on_commit_callbacks(execute=True):
        send(status(sim, t0 + timedelta(seconds=5), [channel(sim, 5, alarms=[CONTACT]), hot]))

    assert [e.code for e in raised_events] == ["OT-CELL", "CONTACT"]
    assert raised_events[1].unit_id == cells[5].pk
    assert CyclerAlarm.objects.count() == 4


def test_a_refused_status_publishes_nothing(
    sim, cells, t0, raised_events, django_capture_on_commit_callbacks
):
    hot = channel(sim, 6, voltage_v=3656.2, alarms=[OVER_TEMPERATURE])  # millivolts

    with django_capture_on_commit_callbacks(execute=True):
        [outcome] = send(status(sim, t0, [hot]))

    assert (outcome.status, outcome.field) == ("rejected", "payload.channels[0].voltage_v")
    assert raised_events == []
    assert_nothing_written()


def test_a_runaway_reading_is_stored_and_alarmed_even_without_the_cyclers_alarm(
    sim, cells, t0, raised_events, django_capture_on_commit_callbacks
):
    # A cell venting on its channel: hundreds of degrees, and the cabinet reports no alarm.
    runaway = channel(sim, 6, temperature_c=312.4, voltage_v=0.41, state="fault", current_a=0.0)
    with django_capture_on_commit_callbacks(execute=True):
        [outcome] = send(status(sim, t0, [channel(sim, 5), runaway]))

    assert outcome.status == "accepted"
    assert row(sim, 6).temperature_c == 312.4
    alarm = CyclerAlarm.objects.get()
    assert (alarm.code, alarm.severity, alarm.unit) == ("QMS-OVERTEMP", "critical", cells[6])
    assert "312.4 °C at or above Celltrace's 80 °C limit" in alarm.text
    [event] = raised_events
    assert (event.code, event.unit_id, event.temperature_c) == ("QMS-OVERTEMP", cells[6].pk, 312.4)

    # A cycler that trips its own critical alarm keeps its code; no second alarm from us.
    with django_capture_on_commit_callbacks(execute=True):
        send(
            status(
                sim,
                t0 + timedelta(seconds=5),
                [channel(sim, 7, temperature_c=85.0, alarms=[OVER_TEMPERATURE])],
            )
        )
    assert set(CyclerAlarm.objects.filter(unit=cells[7]).values_list("code", flat=True)) == {
        "OT-CELL"
    }


# --- refused -------------------------------------------------------------------------------------


def _ch(doc: dict, i: int = 0) -> dict:
    return doc["payload"]["channels"][i]


def _null_voltage(doc):
    _ch(doc)["voltage_v"] = None  # how JSON carries a NaN from a PLC


def _nan_text(doc):
    _ch(doc)["temperature_c"] = "NaN"


def _millivolts(doc):
    _ch(doc)["voltage_v"] = 3652.0


def _beyond_thermocouple(doc):
    _ch(doc)["temperature_c"] = 1500.0


def _below_range(doc):
    _ch(doc)["temperature_c"] = -55.0


def _milliamperes(doc):
    _ch(doc)["current_a"] = 10500.0


def _milliamp_hours(doc):
    _ch(doc)["capacity_ah"] = 15750.0


def _unknown_state(doc):
    _ch(doc)["state"] = "formation"


def _wrong_sign(doc):
    _ch(doc, 1)["current_a"] = -10.5


def _discharge_wrong_sign(doc):
    doc["payload"]["sign_convention"] = "discharge_positive"
    _ch(doc)["current_a"] = -10.5  # channel 0 charges: right
    _ch(doc, 1).update(state="discharge", current_a=-21.0)  # a discharge signed as a charge


def _unknown_severity(doc):
    _ch(doc)["alarms"] = [{"code": "OT-CELL", "severity": "fatal"}]


def _alarm_twice(doc):
    _ch(doc)["alarms"] = [TEMPERATURE_HIGH, {**TEMPERATURE_HIGH, "text": "again"}]


def _channel_twice(doc):
    _ch(doc, 1)["channel"] = _ch(doc)["channel"]


def _cell_on_two_channels(doc):
    _ch(doc, 1)["unit"] = _ch(doc)["unit"]
    doc["units"] = doc["units"][:1]


def _cell_not_listed(doc):
    doc["units"] = doc["units"][1:]


def _listed_cell_on_no_channel(doc):
    del _ch(doc, 1)["unit"]


def _future(doc):
    doc["payload"]["reported_at"] = (timezone.now() + timedelta(minutes=30)).isoformat()


def _no_equipment(doc):
    del doc["equipment"]


def _unknown_equipment(doc):
    doc["equipment"] = "fc-09"


def _equipment_of_another_station(doc):
    doc["equipment"] = "ocv-1"  # the aging scanner


def _no_sign_convention(doc):
    del doc["payload"]["sign_convention"]


def _negative_elapsed(doc):
    _ch(doc)["step_elapsed_s"] = -3.0


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        (_null_voltage, "payload.channels[0].voltage_v", "None is not of type 'number'"),
        (_nan_text, "payload.channels[0].temperature_c", "'NaN' is not of type 'number', 'null'"),
        (_millivolts, "payload.channels[0].voltage_v", "3652 V is outside -0.5..6 V: millivolts"),
        (
            _beyond_thermocouple,
            "payload.channels[0].temperature_c",
            "1500 °C is outside -40..1200 °C",
        ),
        (_below_range, "payload.channels[0].temperature_c", "-55 °C is outside -40..1200 °C"),
        (_milliamperes, "payload.channels[0].current_a", "milliamperes sent as amperes"),
        (_milliamp_hours, "payload.channels[0].capacity_ah", "milliampere-hours sent?"),
        (_unknown_state, "payload.channels[0].state", "'formation' is not one of"),
        (_wrong_sign, "payload.sign_convention", "is -10.5 A once normalised"),
        (_discharge_wrong_sign, "payload.sign_convention", "in discharge but its current"),
        (_unknown_severity, "payload.channels[0].alarms[0].severity", "'fatal' is not one of"),
        (_alarm_twice, "payload.channels[0].alarms[1].code", "T-HIGH is given twice"),
        (_channel_twice, "payload.channels[1].channel", "b1/p01 is given twice"),
        (_cell_on_two_channels, "payload.channels[1].unit", "is on channels[0] too"),
        (_cell_not_listed, "payload.channels[0].unit", "is not among the message's units"),
        (_listed_cell_on_no_channel, "units[1]", "is on none of the reported channels"),
        (_future, "payload.reported_at", "in the future"),
        (_no_equipment, "equipment", "names its cabinet or cycler in 'equipment'"),
        (_unknown_equipment, "equipment", "Unknown equipment 'fc-09'"),
        (_equipment_of_another_station, "equipment", "Unknown equipment 'ocv-1'"),
        (_no_sign_convention, "payload", "'sign_convention' is a required property"),
        (_negative_elapsed, "payload.channels[0].step_elapsed_s", "less than the minimum of 0"),
    ],
)
def test_a_bad_status_is_refused_naming_its_field_with_nothing_written(
    sim, cells, t0, change, field, reason
):
    doc = status(sim, t0, [channel(sim, 0, alarms=[CV_SLOW]), channel(sim, 1)])
    change(doc)

    [outcome] = send(doc)

    assert outcome.status == "rejected"
    assert outcome.field == field
    assert reason in outcome.reason, outcome.reason
    letter = DeadLetter.objects.get()
    assert (letter.field, letter.retry_until, letter.status) == (field, None, "open")
    assert json.loads(bytes(letter.raw)) == doc
    assert not IngestMessage.objects.filter(message_id=doc["message_id"]).exists()
    assert_nothing_written()


def test_a_nan_literal_is_refused_before_the_envelope_is_read(sim, cells, t0):
    doc = status(sim, t0, [channel(sim, 0, voltage_v=float("nan"))])

    [outcome] = send(doc)

    assert (outcome.status, outcome.reason) == (
        "rejected",
        "NaN is not a number a measurement can have.",
    )
    assert bytes(DeadLetter.objects.get().raw).count(b"NaN") == 1
    assert_nothing_written()


def test_a_module_on_a_channel_is_refused(sim, cells, t0, formation_plant):
    Unit.objects.create(kind=UnitKind.MODULE, serial="M1-000001", line=formation_plant.line)

    [outcome] = send(status(sim, t0, [channel(sim, 0, unit="M1-000001")]))

    assert (outcome.status, outcome.field) == ("rejected", "payload.channels[0].unit")
    assert outcome.reason == "M1-000001 is a module, not a cell."
    assert_nothing_written()


def test_a_cell_the_plant_never_made_waits_for_a_retry_like_a_formation_step(
    sim, cells, t0, formation_plant
):
    Unit.objects.filter(pk=cells[3].pk).update(serial="P1-RENAMED")  # not made yet

    [outcome] = send(tray_status(sim, t0))

    assert (outcome.status, outcome.field) == ("rejected", "payload.channels[3].unit")
    letter = DeadLetter.objects.get()
    assert letter.reason == f"Unknown cell '{sim.serial[3]}'."
    assert letter.retry_until is not None
    assert_nothing_written()

    Unit.objects.create(kind=UnitKind.CELL, serial=str(sim.serial[3]), line=formation_plant.line)
    retried = dead_letters_retry(now=timezone.now() + timedelta(seconds=30))

    assert [o.status for o in retried] == ["accepted"]
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.RESOLVED
    assert ChannelStatus.objects.count() == 8
    assert row(sim, 3).unit.serial == str(sim.serial[3])


# --- batches -------------------------------------------------------------------------------------


def _stream(sim, t0: datetime) -> list[dict]:
    """Two cabinets reporting every 5 s for a minute: fc-01 channel b1/p05 warms up into a
    warning then an over-temperature and cools down; fc-02 b1/p02 loses probe contact for
    20 s; one of fc-02's statuses arrives 12 s late."""
    docs = []
    for k in range(12):
        at = t0 + timedelta(seconds=5 * k)
        temp = 31.5 + (6.0 * k if k <= 5 else 30.0 - 8.0 * (k - 5))
        one = [channel(sim, i, capacity_ah=15.75 + 0.0146 * k) for i in range(8)]
        alarms = []
        if temp > 45.0:
            alarms.append(TEMPERATURE_HIGH)
        if temp > 60.0:
            alarms.append(OVER_TEMPERATURE)
        one[4].update(temperature_c=round(temp, 1), alarms=alarms)
        docs.append(status(sim, at, one))
        two = [channel(sim, i, state="rest", current_a=0.0) for i in range(8, 16)]
        if 3 <= k < 7:
            two[1]["alarms"] = [CONTACT]
        late = at + timedelta(seconds=12) if k == 4 else at
        docs.append(status(sim, at, two, equipment="fc-02", sent_at=late))
    return docs


def _snapshot() -> tuple[list, list]:
    statuses = list(
        ChannelStatus.objects.order_by("channel_key").values_list(
            "channel_key", "unit_id", "state", "voltage_v", "current_a", "temperature_c",
            "capacity_ah", "reported_at", "source_message_id",
        )
    )  # fmt: skip
    alarms = list(
        CyclerAlarm.objects.order_by("channel_status__channel_key", "raised_at").values_list(
            "channel_status__channel_key", "unit_id", "code", "severity", "temperature_c",
            "raised_at", "cleared_at", "raised_message_id", "cleared_message_id",
        )
    )  # fmt: skip
    return statuses, alarms


def test_a_batch_has_the_effect_of_its_messages_one_by_one_in_bounded_queries(
    sim, cells, t0, django_assert_max_num_queries
):
    docs = _stream(sim, t0)

    with django_assert_max_num_queries(30):  # 24 messages: no query per message or channel
        outcomes = send(*docs)

    assert [o.status for o in outcomes] == ["accepted"] * 24
    batch = _snapshot()
    statuses, alarms = batch
    assert len(statuses) == 16
    s = [t0 + timedelta(seconds=5 * k) for k in range(12)]
    assert [(a[0], a[2], a[3], a[5], a[6]) for a in alarms] == [
        ("fc-01:b1/p05", "T-HIGH", "warning", s[3], s[8]),  # 49.5 °C up, 37.5 °C down
        ("fc-01:b1/p05", "OT-CELL", "critical", s[5], s[6]),  # 61.5 °C
        # fc-02's 20 s status came after its 25 s and 30 s ones: stale, changed nothing
        ("fc-02:b1/p02", "CONTACT", "critical", s[3], s[7]),
    ]

    CyclerAlarm.objects.all().delete()
    ChannelStatus.objects.all().delete()
    IngestMessage.objects.all().delete()
    for doc in sorted(docs, key=lambda d: d["sent_at"]):
        send(doc)

    assert _snapshot() == batch

    # The next minute over the stored channels: updates and clears, in as few queries.
    with django_assert_max_num_queries(30):
        outcomes = send(*_stream(sim, t0 + timedelta(minutes=1)))

    assert [o.status for o in outcomes] == ["accepted"] * 24
    assert CyclerAlarm.objects.count() == 6
    assert ChannelStatus.objects.filter(reported_at=s[11] + timedelta(minutes=1)).count() == 16


def test_a_batch_applies_the_good_statuses_and_refuses_the_bad_alone(sim, cells, t0):
    bad = tray_status(sim, t0, tray=1)
    _millivolts(bad)

    outcomes = send(tray_status(sim, t0), bad, tray_status(sim, t0 + timedelta(seconds=5)))

    assert [o.status for o in outcomes] == ["accepted", "rejected", "accepted"]
    assert set(ChannelStatus.objects.values_list("equipment__code", flat=True)) == {"fc-01"}
    assert ChannelStatus.objects.filter(reported_at=t0 + timedelta(seconds=5)).count() == 8
    assert DeadLetter.objects.get().field == "payload.channels[0].voltage_v"


# --- API and admin -------------------------------------------------------------------------------


@pytest.fixture
def reported(sim, cells, t0):
    """Both cabinets report; fc-01 b1/p05 is over temperature (critical, open) after a
    warning that cleared, fc-02 b1/p02 has an open contact fault, fc-02 is resting."""
    hot = channel(sim, 4, temperature_c=61.2, alarms=[TEMPERATURE_HIGH])
    send(status(sim, t0, [channel(sim, i) if i != 4 else hot for i in range(8)]))
    later = t0 + timedelta(seconds=5)
    hot = channel(sim, 4, temperature_c=61.2, alarms=[OVER_TEMPERATURE])
    send(status(sim, later, [channel(sim, i) if i != 4 else hot for i in range(8)]))
    resting = [channel(sim, i, state="rest", current_a=0.0) for i in range(8, 16)]
    resting[1]["alarms"] = [CONTACT]
    send(status(sim, later, resting, equipment="fc-02"))
    return cells


def api_as(role: str = "auditor") -> APIClient:
    client = APIClient()
    client.force_authenticate(UserFactory(username=f"{role}-cycler", role=role))
    return client


def test_channels_list_filter_and_show(reported, sim, t0):
    api = api_as()
    url = reverse("formation-api:channel-list")

    everything = api.get(url, {"page_size": 100}).json()["results"]
    cabinet = api.get(url, {"equipment": "fc-02"}).json()["results"]
    resting = api.get(url, {"state": "rest"}).json()["results"]
    alarmed = api.get(url, {"in_alarm": "true"}).json()["results"]
    quiet = api.get(url, {"in_alarm": "false", "equipment": "fc-01"}).json()["results"]

    assert len(everything) == 16
    assert [c["channel_key"] for c in cabinet] == [f"fc-02:b1/p{n:02d}" for n in range(1, 9)]
    assert {c["channel_key"] for c in resting} == {c["channel_key"] for c in cabinet}
    assert [c["channel_key"] for c in alarmed] == ["fc-01:b1/p05", "fc-02:b1/p02"]
    assert len(quiet) == 7
    hot = alarmed[0]
    assert hot == {
        "id": hot["id"],
        "station": f"{SITE}/{LINE}/form",
        "equipment": "fc-01",
        "channel": "b1/p05",
        "channel_key": "fc-01:b1/p05",
        "tray": "T0001",
        "position": "5",
        "unit": str(sim.serial[4]),
        "state": "cc_charge",
        "step_index": 2,
        "step_elapsed_s": 5400.0,
        "voltage_v": 3.6548,
        "current_a": 10.5,
        "temperature_c": 61.2,
        "capacity_ah": 15.75,
        "reported_at": (t0 + timedelta(seconds=5)).isoformat().replace("+00:00", "Z"),
        "updated_at": hot["updated_at"],
        "source_message_id": f"fc-01:status:{t0 + timedelta(seconds=5):%Y%m%dT%H%M%S}",
        "in_alarm": True,
        "alarms": [
            {
                "id": CyclerAlarm.objects.get(code="OT-CELL").pk,
                "code": "OT-CELL",
                "severity": "critical",
                "text": OVER_TEMPERATURE["text"],
                "raised_at": (t0 + timedelta(seconds=5)).isoformat().replace("+00:00", "Z"),
            }
        ],
    }
    one = api.get(reverse("formation-api:channel-detail", args=[hot["id"]])).json()
    assert one == hot
    assert api.get(url, {"state": "boiling"}).status_code == 400


def test_channels_list_reads_in_a_fixed_number_of_queries(reported, django_assert_num_queries):
    api = api_as()
    url = reverse("formation-api:channel-list")

    with django_assert_num_queries(2):  # the channels, and the alarms active on them
        response = api.get(url, {"page_size": 100})

    assert len(response.json()["results"]) == 16


def test_alarms_list_filters(reported, sim, t0):
    api = api_as()
    url = reverse("formation-api:alarm-list")

    def codes(**params) -> list[str]:
        return [a["code"] for a in api.get(url, params).json()["results"]]

    assert codes() == ["CONTACT", "OT-CELL", "T-HIGH"]  # newest first, then the later id
    assert sorted(codes(status="open")) == ["CONTACT", "OT-CELL"]
    assert codes(status="cleared") == ["T-HIGH"]
    assert sorted(codes(severity="critical")) == ["CONTACT", "OT-CELL"]
    assert codes(severity="warning") == ["T-HIGH"]
    assert sorted(codes(unit=str(sim.serial[4]))) == ["OT-CELL", "T-HIGH"]
    assert codes(equipment="fc-02") == ["CONTACT"]
    assert codes(equipment="fc-03") == []
    assert api.get(url, {"status": "pending"}).status_code == 400

    [cleared] = api.get(url, {"status": "cleared"}).json()["results"]
    assert cleared == {
        "id": cleared["id"],
        "equipment": "fc-01",
        "channel": "b1/p05",
        "channel_key": "fc-01:b1/p05",
        "unit": str(sim.serial[4]),
        "code": "T-HIGH",
        "severity": "warning",
        "text": TEMPERATURE_HIGH["text"],
        "state": "cc_charge",
        "step_index": 2,
        "voltage_v": 3.6548,
        "temperature_c": 61.2,
        "raised_at": t0.isoformat().replace("+00:00", "Z"),
        "cleared_at": (t0 + timedelta(seconds=5)).isoformat().replace("+00:00", "Z"),
        "is_open": False,
        "raised_message_id": f"fc-01:status:{t0:%Y%m%dT%H%M%S}",
        "cleared_message_id": f"fc-01:status:{t0 + timedelta(seconds=5):%Y%m%dT%H%M%S}",
    }


def test_the_api_is_read_only(reported):
    _integration, key = integration_create("mes-cycler", IntegrationScope.READ_WRITE)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    one = ChannelStatus.objects.first()

    created = api.post(reverse("formation-api:channel-list"), {"channel": "b1/p09"})
    changed = api.patch(reverse("formation-api:channel-detail", args=[one.pk]), {"state": "idle"})
    removed = api.delete(
        reverse("formation-api:alarm-detail", args=[CyclerAlarm.objects.first().pk])
    )

    assert (created.status_code, changed.status_code, removed.status_code) == (405, 405, 405)
    assert (ChannelStatus.objects.count(), CyclerAlarm.objects.count()) == (16, 3)
    assert ChannelStatus.objects.get(pk=one.pk).state == one.state


def test_the_admin_lists_channels_and_alarms_read_only(reported, client):
    admin_user = UserFactory(username="admin-cycler", is_staff=True, is_superuser=True)
    client.force_login(admin_user)

    channels = client.get("/admin/formation/channelstatus/", {"q": "fc-01:b1/p05"})
    alarms = client.get("/admin/formation/cycleralarm/", {"status": "open"})
    one = client.get(f"/admin/formation/cycleralarm/{CyclerAlarm.objects.first().pk}/change/")

    assert channels.status_code == alarms.status_code == one.status_code == 200
    assert "fc-01:b1/p05" in channels.content.decode()
    page = alarms.content.decode()
    assert "OT-CELL" in page and "CONTACT" in page and "T-HIGH" not in page
    assert client.get("/admin/formation/channelstatus/add/").status_code == 403


# --- through the real broker ---------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.timeout(120)
@pytest.mark.django_db(transaction=True)
def test_a_status_published_on_the_cabinets_topic_ends_up_in_channel_status(sim, cells, tmp_path):
    url = require_mosquitto()
    require_postgresql()
    run = uuid.uuid4().hex[:8]
    at = (timezone.now() - timedelta(seconds=20)).replace(microsecond=0)
    hot = channel(sim, 4, temperature_c=61.2, alarms=[OVER_TEMPERATURE])
    doc = status(sim, at, [channel(sim, i) if i != 4 else hot for i in range(8)],
                 message_id=f"fc-01:status:{run}")  # fmt: skip
    worker = WorkerProcess(url=url, group=f"t-{run}", client_id=f"t-{run}-cyc", log_dir=tmp_path)
    worker.start()
    try:
        worker.wait_subscribed()
        publisher = Publisher(url)
        publisher.publish(topic_of(doc), encode(doc))
        publisher.wait_all()
        publisher.close()
        wait_for(
            lambda: ChannelStatus.objects.filter(source_message_id=doc["message_id"]).count() == 8,
            timeout_s=30,
            what="the cabinet's eight channels stored",
        )
        assert worker.stop() == 0
    finally:
        worker.stop()
        session_clear(url, worker.client_id)

    assert topic_of(doc) == "qms/gf1/l1-pri/form/cycler_status"
    message = IngestMessage.objects.get(message_id=doc["message_id"])
    assert (message.transport, message.origin) == ("mqtt", "qms/gf1/l1-pri/form/cycler_status")
    stored = row(sim, 4)
    assert (stored.unit, stored.state, stored.voltage_v, stored.current_a) == (
        cells[4], "cc_charge", 3.6548, 10.5,
    )  # fmt: skip
    assert (stored.temperature_c, stored.reported_at) == (61.2, at)
    alarm = CyclerAlarm.objects.get()
    assert (alarm.code, alarm.severity, alarm.unit, alarm.cleared_at) == (
        "OT-CELL", "critical", cells[4], None,
    )  # fmt: skip
    assert not DeadLetter.objects.filter(message_id=doc["message_id"]).exists()
