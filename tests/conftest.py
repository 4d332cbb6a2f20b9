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


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Users are made per test; the production hasher's cost is not what is tested here."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def file_stores(settings, tmp_path):
    """Model files and evidence images a test writes go to its own folder, not ``var/``."""
    settings.QMS_MODEL_STORE = tmp_path / "model-store"
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def plant(db):
    from tests.factories import build_plant

    return build_plant()


@pytest.fixture
def celery_eager():
    """Run Celery tasks in-process for this test, even where a real broker is configured
    (the broker path has its own tests with a real worker)."""
    from qms.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous
