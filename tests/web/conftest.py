"""Fixtures of the web page tests: one vehicle's thread and logged-in clients per role."""

import pytest

from tests.factories import UserFactory
from tests.web.thread import build_vehicle_thread


@pytest.fixture
def vehicle_thread(plant):
    return build_vehicle_thread(plant)


@pytest.fixture
def qe_client(client):
    user = UserFactory(username="qe-web", role="quality_engineer")
    client.force_login(user)
    return client


@pytest.fixture
def auditor_client(client):
    user = UserFactory(username="auditor-tuv", role="auditor")
    client.force_login(user)
    return client
