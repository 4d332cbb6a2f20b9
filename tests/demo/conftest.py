"""Fixtures for the demo plant tests."""

import pytest


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Seeding creates six users; the production hasher would make each test seconds slower."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
