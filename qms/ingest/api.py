"""REST bulk ingest: ``POST /api/v1/ingest/`` with up to 10,000 envelopes.

The same path as every other transport: each envelope becomes one
:class:`~qms.ingest.services.RawMessage` (its bytes are the JSON of that element, which is
what the dead-letter store keeps) and the whole call is one :func:`ingest_raw` batch, so one
database transaction. The answer lists every message with accepted / duplicate / rejected,
the reason and the field, in the order given; a rejected message never fails the others.
A repeat of the same call is safe: every message comes back as a duplicate.
"""

from __future__ import annotations

import json

from django.db import models
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from qms.api.parsers import BulkJSONParser, PayloadTooLarge
from qms.api.schema import NamedChoiceField
from qms.api.serializers import DomainErrorSerializer
from qms.exceptions import InvalidInput
from qms.models import Integration

from .envelope import SCHEMA_ID
from .models import Transport
from .services import ACCEPTED, DUPLICATE, REJECTED, RawMessage, ingest_raw

#: Most envelopes one call may carry.
MAX_MESSAGES = 10_000
#: Body cap: 10,000 envelopes of 20 measurements are about 20 MB of JSON.
INGEST_MAX_BYTES = 32 * 1024 * 1024


class IngestOutcome(models.TextChoices):
    ACCEPTED = ACCEPTED, "Accepted (applied now)"
    DUPLICATE = DUPLICATE, "Duplicate (applied before; not applied again)"
    REJECTED = REJECTED, "Rejected (kept in the dead-letter store)"


class IngestJSONParser(BulkJSONParser):
    """The bulk parser with a larger cap, and ``NaN``/``Infinity`` let through to the
    envelope validation: a station that sends one NaN gets that one message rejected (and
    dead-lettered) instead of losing the whole call to a parse error."""

    max_bytes = INGEST_MAX_BYTES

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        request = parser_context.get("request")
        too_large = PayloadTooLarge(
            f"Request body exceeds the {self.max_bytes}-byte limit of ingest calls; split it."
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
        try:
            return json.loads(raw.decode(parser_context.get("encoding", "utf-8")))
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc


ENVELOPE_SCHEMA = {
    "type": "object",
    "description": (
        "One envelope, as defined by the JSON Schema `qms/ingest/schema/envelope-v1.schema.json`"
        " (payload per kind there). Give either `unit` or `units`."
    ),
    "required": [
        "message_id",
        "schema",
        "source",
        "sent_at",
        "site",
        "line",
        "station",
        "kind",
        "payload",
    ],
    "properties": {
        "message_id": {"type": "string", "maxLength": 128},
        "schema": {"type": "string", "enum": [SCHEMA_ID]},
        "source": {"type": "string", "maxLength": 120},
        "sent_at": {"type": "string", "format": "date-time"},
        "site": {"type": "string"},
        "line": {"type": "string"},
        "station": {"type": "string"},
        "equipment": {"type": "string", "nullable": True},
        "kind": {"type": "string"},
        "unit": {"type": "string"},
        "units": {"type": "array", "items": {"type": "string"}},
        "payload": {"type": "object", "additionalProperties": True},
    },
}


@extend_schema_field(ENVELOPE_SCHEMA)
class EnvelopeField(serializers.JSONField):
    """An envelope, passed on as it came (validated by the ingest, message by message)."""


class IngestRequestSerializer(serializers.Serializer):
    messages = serializers.ListField(
        child=EnvelopeField(),
        max_length=MAX_MESSAGES,
        help_text=f"Up to {MAX_MESSAGES} envelopes; a bare JSON array is accepted too.",
    )


class IngestResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the message in the request.")
    message_id = serializers.CharField(help_text="Empty when the message had none readable.")
    status = NamedChoiceField(IngestOutcome)
    reason = serializers.CharField(help_text="Why it was rejected (or why a duplicate).")
    field = serializers.CharField(
        allow_null=True, help_text="The envelope field concerned, e.g. payload.measurements[3]."
    )
    dead_letter_id = serializers.IntegerField(
        allow_null=True, help_text="The dead-letter entry of a rejected message."
    )


class IngestAnswerSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicate = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = IngestResultSerializer(many=True)


def _elements(data: object) -> list:
    """The envelopes of a request body: ``{"messages": [...]}`` or a bare list."""
    if isinstance(data, dict):
        extra = sorted(set(data) - {"messages"})
        if extra:
            raise InvalidInput(f"Unknown key(s) {', '.join(extra)}.", field=extra[0])
        data = data.get("messages")
        if data is None:
            raise InvalidInput("'messages' is required.", field="messages", code="required")
    if not isinstance(data, list):
        raise InvalidInput("'messages' must be a list of envelopes.", field="messages")
    if not data:
        raise InvalidInput("No messages given.", field="messages", code="required")
    if len(data) > MAX_MESSAGES:
        raise InvalidInput(
            f"At most {MAX_MESSAGES} messages per call; {len(data)} given. Split the batch.",
            field="messages",
            code="too_many",
        )
    return data


def request_origin(request: Request) -> str:
    """Who posted: the integration's name for a token, else the person's username."""
    if isinstance(request.auth, Integration):
        return request.auth.name
    return request.user.get_username()


@extend_schema(
    summary="Ingest up to 10,000 envelopes; answers per message",
    description=(
        "Applies each envelope exactly once (its `message_id` is unique): `accepted` now, "
        "`duplicate` when it was applied before (not applied again), `rejected` with the "
        "reason and the field when it cannot be applied; rejected messages are kept in the "
        "dead-letter store, where they can be replayed after the master data is fixed. "
        "One call is one transaction; messages are applied in `sent_at` order and answered "
        'in the order given. The body is `{"messages": [...]}` or a bare array.'
    ),
    request=IngestRequestSerializer,
    responses={
        200: IngestAnswerSerializer,
        400: OpenApiResponse(DomainErrorSerializer, description="Not a list of envelopes."),
        403: OpenApiResponse(description="Read-only token, auditor, or role without it."),
        413: OpenApiResponse(description=f"Body over {INGEST_MAX_BYTES} bytes."),
    },
    examples=[
        OpenApiExample(
            "Fill result of a 21700 cell",
            request_only=True,
            value={
                "messages": [
                    {
                        "message_id": "FILL-01:000001",
                        "schema": SCHEMA_ID,
                        "source": "FILL-01 PLC",
                        "sent_at": "2026-11-27T06:15:02Z",
                        "site": "gf1",
                        "line": "l2-cyl",
                        "station": "fill",
                        "equipment": "cw-1",
                        "kind": "process_result",
                        "unit": "C22648000001",
                        "payload": {
                            "unit_kind": "cell",
                            "result": "ok",
                            "measurements": [
                                {
                                    "characteristic": "fill-mass",
                                    "value": 5.02,
                                    "unit": "g",
                                }
                            ],
                        },
                    }
                ]
            },
        )
    ],
)
class IngestView(APIView):
    parser_classes = [IngestJSONParser]
    required_perms = ("ingest.add_ingestmessage",)

    def post(self, request: Request) -> Response:
        elements = _elements(request.data)
        origin = request_origin(request)
        received_at = timezone.now()
        messages = [
            RawMessage(
                payload=json.dumps(el, ensure_ascii=False, separators=(",", ":")).encode(),
                transport=Transport.REST,
                origin=origin,
                received_at=received_at,
            )
            for el in elements
        ]
        outcomes = ingest_raw(messages, actor=request.user)
        results = []
        totals = dict.fromkeys(IngestOutcome.values, 0)
        for index, (el, out) in enumerate(zip(elements, outcomes, strict=True)):
            totals[out.status] += 1
            given_id = el.get("message_id") if isinstance(el, dict) else None
            results.append(
                {
                    "index": index,
                    "message_id": out.message_id or (given_id if isinstance(given_id, str) else ""),
                    "status": out.status,
                    "reason": out.reason,
                    "field": out.field,
                    "dead_letter_id": out.dead_letter_id,
                }
            )
        return Response({**totals, "results": results})
