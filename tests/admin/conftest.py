"""The admin tests reuse the API tests' plant data and users."""

from tests.api.conftest import actor, hold, run

__all__ = ["actor", "hold", "run"]
