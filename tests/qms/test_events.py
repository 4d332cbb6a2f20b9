"""The domain-event registry: delivery after commit only, and a listing of subscribers."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction

from qms import events


@events.event
class CoilInspected:
    """Test event: a coil was inspected."""

    coil_id: int


received: list[CoilInspected] = []


def remember(evt: CoilInspected) -> None:
    received.append(evt)


@pytest.fixture(autouse=True)
def subscriber():
    received.clear()
    events.subscribe(CoilInspected, remember, app_label="tests", description="remember it")
    yield
    events._registry.pop(CoilInspected, None)


@pytest.mark.django_db(transaction=True)
def test_event_is_delivered_after_commit_not_before():
    with transaction.atomic():
        events.publish(CoilInspected(coil_id=7))
        assert received == []
    assert received == [CoilInspected(coil_id=7)]


@pytest.mark.django_db(transaction=True)
def test_event_of_a_rolled_back_transaction_is_never_delivered():
    with pytest.raises(RuntimeError), transaction.atomic():
        events.publish(CoilInspected(coil_id=8))
        raise RuntimeError("station aborted")
    assert received == []


def test_subscribing_twice_registers_once():
    events.subscribe(CoilInspected, remember, app_label="tests", description="again")
    assert [s.handler for s in events.subscriptions() if s.event_type is CoilInspected] == [
        remember
    ]


def test_list_subscribers_names_event_app_handler_and_purpose():
    out = StringIO()
    call_command("list_subscribers", stdout=out)
    text = out.getvalue()
    assert "tests.qms.test_events.CoilInspected" in text
    assert "-> [tests] tests.qms.test_events.remember: remember it" in text
    # Declared events without subscribers are listed too, so gaps are visible.
    assert "genealogy.events.UnitsLinked" in text
