"""The admin tests use the same small production run as the API tests."""

from tests.api.conftest import actor, fast_password_hashing, hold, run

__all__ = ["actor", "fast_password_hashing", "hold", "run"]
