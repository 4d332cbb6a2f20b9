"""Trace and recall-scope endpoints (read-only; ``ScopedAccess``: login or token).

* ``GET /api/v1/trace/backward/?serial=`` everything upstream of a unit.
* ``GET /api/v1/trace/forward/?serial=[&start_m=&end_m=]`` or
  ``?station=&start=&end=[&equipment=]`` everything downstream.
* ``GET /api/v1/recall-scope/?...`` the same inputs -> counts, VIN/pack/module/cell lists
  and the segment vs coil vs lot comparison; ``?format=csv`` (streamed) or ``?format=xlsx``.

Refusals name the field: unknown serial, station or equipment -> 404; malformed GS1, wrong
check digit, an incomplete metre range or window -> 400.
"""

from __future__ import annotations

from django.http import FileResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from genealogy import exports, queries
from qms.api.serializers import DomainErrorSerializer
from qms.exceptions import InvalidInput

from .trace_serializers import (
    RecallScopeSerializer,
    TraceSerializer,
    recall_scope_data,
    trace_data,
    trace_input,
)

SERIAL = OpenApiParameter(
    "serial",
    str,
    description="Serial of the unit to trace from (VIN, pack, module, cell, slit coil, coil, "
    "mix batch, material lot); GS1 element strings are accepted.",
    examples=[
        OpenApiExample("VIN", value="WVGZZZE2ZSP000101"),
        OpenApiExample("GS1 cell", value="(01)09521234543213(21)P126110000002"),
    ],
)
AS_OF = OpenApiParameter(
    "as_of",
    OpenApiTypes.DATETIME,
    description="Genealogy in force at this time (links removed by later rework included).",
)
FORWARD_PARAMS = [
    OpenApiParameter(
        "start_m",
        float,
        description="Coil segment start metre, in the coil's own metres (with end_m).",
    ),
    OpenApiParameter("end_m", float, description="Coil segment end metre (exclusive)."),
    OpenApiParameter(
        "station",
        str,
        description="Instead of a serial: station id or 'line/station' code; units that "
        "started a visit there (or were measured there) in [start, end).",
    ),
    OpenApiParameter("equipment", str, description="Equipment id or code at the station."),
    OpenApiParameter("start", OpenApiTypes.DATETIME, description="Window start."),
    OpenApiParameter("end", OpenApiTypes.DATETIME, description="Window end (exclusive)."),
]
ERRORS = {400: DomainErrorSerializer, 404: DomainErrorSerializer}


class TraceBackwardView(APIView):
    @extend_schema(
        operation_id="trace_backward",
        summary="Trace a unit backward",
        description="Every upstream unit down to the exact coil segments (in slit-coil and "
        "mother-coil metres), mix batches and material lots, with the links among them.",
        parameters=[SERIAL, AS_OF],
        responses={200: TraceSerializer, **ERRORS},
        tags=["trace"],
    )
    def get(self, request):
        for name in ("start_m", "end_m", "station", "start", "end", "equipment"):
            if request.query_params.get(name):
                raise InvalidInput(f"{name} applies to a forward trace.", field=name)
        inp = trace_input(request.query_params, allow_window=False)
        trace = queries.trace_backward(inp.unit, as_of=inp.as_of)
        return Response(trace_data(trace))


class TraceForwardView(APIView):
    @extend_schema(
        operation_id="trace_forward",
        summary="Trace forward from a unit, a coil segment or a station window",
        description="Every downstream cell, module, pack and vehicle. From a coil segment "
        "only the cells whose consumed metres overlap it.",
        parameters=[SERIAL, *FORWARD_PARAMS, AS_OF],
        responses={200: TraceSerializer, **ERRORS},
        tags=["trace"],
    )
    def get(self, request):
        inp = trace_input(request.query_params)
        if inp.unit is not None:
            trace = queries.trace_forward(
                inp.unit, start_m=inp.start_m, end_m=inp.end_m, as_of=inp.as_of
            )
        else:
            trace = queries.trace_forward_window(
                station=inp.station,
                equipment=inp.equipment,
                start=inp.start,
                end=inp.end,
                as_of=inp.as_of,
            )
        return Response(trace_data(trace))


class CSVRenderer(BaseRenderer):
    """Selects ``?format=csv``; the view answers with a streamed CSV itself."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        raise NotImplementedError("recall-scope CSV is streamed by the view")


class XLSXRenderer(BaseRenderer):
    """Selects ``?format=xlsx``; the view answers with the workbook file itself."""

    media_type = exports.XLSX_CONTENT_TYPE
    format = "xlsx"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        raise NotImplementedError("recall-scope XLSX is written by the view")


class RecallScopeView(APIView):
    renderer_classes = [JSONRenderer, BrowsableAPIRenderer, CSVRenderer, XLSXRenderer]

    @extend_schema(
        operation_id="recall_scope",
        summary="Recall scope",
        description="Cells, modules, packs and vehicles (VINs) a recall of this input must "
        "cover, and the scope the same defect would have at whole-coil and at lot level. "
        "`format=csv` streams the lists; `format=xlsx` gives a workbook with a summary "
        "sheet and one sheet per kind.",
        parameters=[
            SERIAL,
            *FORWARD_PARAMS,
            AS_OF,
            OpenApiParameter(
                "format", str, enum=["json", "csv", "xlsx"], description="Answer format."
            ),
        ],
        responses={
            (200, "application/json"): RecallScopeSerializer,
            (200, "text/csv"): OpenApiTypes.STR,
            (200, exports.XLSX_CONTENT_TYPE): OpenApiTypes.BINARY,
            # Refusals are JSON whatever format was asked for (see finalize_response).
            (400, "application/json"): DomainErrorSerializer,
            (404, "application/json"): DomainErrorSerializer,
        },
        tags=["trace"],
    )
    def get(self, request):
        inp = trace_input(request.query_params)
        fmt = request.accepted_renderer.format
        if fmt in ("csv", "xlsx"):
            # Counts now; the lists stream from a cursor while the file is written.
            scope = queries.recall_scope(**inp.scope_kwargs(), with_lists=False)
            now = timezone.now()
            name = exports.filename(scope, fmt, generated_at=now)
            if fmt == "csv":
                response = StreamingHttpResponse(
                    exports.recall_scope_csv(scope, generated_at=now),
                    content_type=exports.CSV_CONTENT_TYPE,
                )
                response["Content-Disposition"] = f'attachment; filename="{name}"'
                return response
            return FileResponse(
                exports.recall_scope_xlsx(scope, generated_at=now),
                as_attachment=True,
                filename=name,
                content_type=exports.XLSX_CONTENT_TYPE,
            )
        scope = queries.recall_scope(**inp.scope_kwargs())
        return Response(recall_scope_data(scope))

    def finalize_response(self, request, response, *args, **kwargs):
        # Refusals are JSON ({code, detail, field}) whatever format was asked for.
        renderer = getattr(request, "accepted_renderer", None)
        if isinstance(response, Response) and isinstance(renderer, CSVRenderer | XLSXRenderer):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    def perform_content_negotiation(self, request, force=False):
        fmt = request.query_params.get("format")
        if not force and fmt and fmt not in {r.format for r in self.get_renderers()}:
            raise InvalidInput(f"Unknown format {fmt!r}: use json, csv or xlsx.", field="format")
        return super().perform_content_negotiation(request, force)
