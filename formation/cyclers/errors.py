"""The one error a cycler file reader raises.

A reader either returns the whole file in canonical form or raises
:class:`CyclerFileError` before returning anything: there is no partial result. The error
names what to fix (``field``: a canonical field such as ``voltage`` or ``step_time``, or
``file`` for the file as a whole) and where (``row``: the line of a CSV/text file, the
worksheet row of an XLSX file, the record index of a Neware .nda file). The ingest handlers
that call the readers turn it into a dead letter with the raw bytes and this reason.
"""

from __future__ import annotations


class CyclerFileError(ValueError):
    """A cycler export that cannot become canonical formation records.

    ``code`` is a stable slug for the kind of refusal (``missing_column``, ``wrong_format``,
    ``unit``, ``not_a_number``, ``duplicate``, ``time_order``, ``encoding``, ``empty``,
    ``sign``, ``step_type``, ``unknown_column``, ``identity``, ``invalid``) so dead letters can be
    counted by cause.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str = "file",
        row: int | None = None,
        code: str = "invalid",
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.row = row
        self.code = code

    def __str__(self) -> str:
        return self.message

    def as_dict(self) -> dict:
        """The refusal as stored with a dead letter and shown by the API."""
        out: dict = {"code": self.code, "detail": self.message, "field": self.field}
        if self.row is not None:
            out["row"] = self.row
        return out
