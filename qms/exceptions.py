"""Domain errors raised by services and mapped to HTTP answers by the API.

Each names the ``field`` it concerns (where there is one) so a station, an integration or a
person can see what to fix. Services raise them before writing anything, or inside the
transaction so that nothing is half-written.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class. ``code`` is a stable machine-readable slug."""

    code = "invalid"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code

    def as_dict(self) -> dict:
        out = {"code": self.code, "detail": self.message}
        if self.field:
            out["field"] = self.field
        return out


class InvalidInput(DomainError):
    """The input itself is malformed (bad GS1 string, wrong check digit, NaN, ...)."""

    code = "invalid"
    http_status = 400


class NotFound(DomainError):
    """A referenced object (serial, station, characteristic) does not exist."""

    code = "not_found"
    http_status = 404


class Refused(DomainError):
    """Well-formed, but a business rule forbids it (unit on hold, overlapping segment,
    cycle in the genealogy, slot occupied)."""

    code = "refused"
    http_status = 409
