"""Shared fixtures: a small realistic plant, users per role, API clients."""

import os

import pytest
from django.conf import settings


def require_service(name: str, present: bool) -> None:
    """Skip a test whose service is not configured; fail instead under QMS_REQUIRE_SERVICES."""
    if present:
        return
    if settings.QMS_REQUIRE_SERVICES or os.environ.get("QMS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{name} is required (QMS_REQUIRE_SERVICES=1) but not configured.")
    pytest.skip(f"{name} not configured")


@pytest.fixture
def plant(db):
    from tests.factories import build_plant

    return build_plant()
