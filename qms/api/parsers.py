"""A JSON parser for bulk endpoints, with a body cap sized for bulk ingest.

``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB by default) is sized for forms; a call carrying
20,000 measurements is about 5 MB. Bulk views use :class:`BulkJSONParser`, which reads the
body itself up to :attr:`BulkJSONParser.max_bytes` and answers 413 beyond it. Like DRF's
strict JSON parser it rejects ``NaN`` and ``Infinity``.
"""

from __future__ import annotations

import json

from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser

#: Largest body a bulk endpoint accepts.
BULK_MAX_BYTES = 16 * 1024 * 1024


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


def _reject_constant(name: str):
    raise ParseError(f"JSON parse error - {name} is not a number here.")


class BulkJSONParser(BaseParser):
    media_type = "application/json"
    max_bytes = BULK_MAX_BYTES

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        request = parser_context.get("request")
        too_large = PayloadTooLarge(
            f"Request body exceeds the {self.max_bytes}-byte limit of bulk calls; split it."
        )
        if request is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > self.max_bytes:
                raise too_large
        raw = stream.read(self.max_bytes + 1) if stream is not None else b""
        if len(raw) > self.max_bytes:
            raise too_large
        encoding = parser_context.get("encoding", "utf-8")
        try:
            return json.loads(raw.decode(encoding), parse_constant=_reject_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
