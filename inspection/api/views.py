"""API views of vision inspection: cameras, results, defects, the review queue's verdicts,
coil flags, evidence images and the model registry (register, approve, activate, retire).

Reads list or show; each command validates its own input, calls exactly one
:mod:`inspection.services` function and answers with what was written. A refused command
writes nothing and answers ``{code, detail, field}``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from genealogy.api.views import ERRORS
from qms.exceptions import NotFound

from .. import queries, services
from ..models import Evidence
from . import serializers
from .filters import DefectFilterSet, FlagFilterSet, ModelFilterSet, ResultFilterSet


def _path_param(name: str, what: str) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.INT, OpenApiParameter.PATH, description=what)


@extend_schema_view(
    list=extend_schema(summary="Line-scan cameras: optics, budgets, rules, the models they run"),
    retrieve=extend_schema(summary="One camera"),
)
class CameraViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = serializers.CameraSerializer

    def get_queryset(self):
        return queries.camera_list()


@extend_schema_view(
    list=extend_schema(
        summary="Inspection results, one per frame (newest first)",
        description="Every frame a vision worker judged, or could not judge (`uninspected`: "
        "a gap, an encoder mismatch, drift, ...), with the coil metres it covered and the "
        "model version and threshold set that judged it.",
    ),
    retrieve=extend_schema(summary="One frame's result with its defects"),
)
class ResultViewSet(viewsets.ReadOnlyModelViewSet):
    filterset_class = ResultFilterSet

    def get_queryset(self):
        qs = queries.result_list()
        if self.action == "retrieve":
            qs = qs.prefetch_related("defects__crop")
        return qs

    def get_serializer_class(self):
        if self.action == "retrieve":
            return serializers.ResultDetailSerializer
        return serializers.ResultSerializer


@extend_schema_view(
    list=extend_schema(
        summary="Defects (newest first); `review_state=pending` is the review queue",
    ),
    retrieve=extend_schema(summary="One defect with all class probabilities"),
)
class DefectViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = serializers.DefectSerializer
    filterset_class = DefectFilterSet

    def get_queryset(self):
        return queries.defect_list()


@extend_schema_view(
    post=extend_schema(
        summary="A reviewer's verdict on a defect (kept as a training label)",
        description="`confirm` or `reclassify` (with the true `label`): the defect's coil "
        "metres become a hold and the cells made from them are held; `false_call`: the flag "
        "is closed, nothing is held.",
        parameters=[_path_param("defect", "Defect id.")],
        request=serializers.DefectReviewInputSerializer,
        responses={201: serializers.DefectReviewSerializer, **ERRORS},
    )
)
class DefectReviewView(APIView):
    required_perms = ("inspection.add_defectreview",)

    def post(self, request: Request, defect: int) -> Response:
        found = queries.defect_list().filter(pk=defect).first()
        if found is None:
            raise NotFound(f"No defect {defect}.", field="defect")
        given = serializers.DefectReviewInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        review = services.defect_review(defect=found, actor=request.user, **given.validated_data)
        return Response(
            serializers.DefectReviewSerializer(review).data, status=status.HTTP_201_CREATED
        )


@extend_schema_view(
    list=extend_schema(
        summary="Coil metres vision flagged (defects to hold or review, uninspected stretches)",
    ),
    retrieve=extend_schema(summary="One flag"),
)
class FlagViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = serializers.FlagSerializer
    filterset_class = FlagFilterSet

    def get_queryset(self):
        return queries.flag_list().order_by("-created_at")


@extend_schema_view(
    post=extend_schema(
        summary="Acknowledge a vision flag (an uninspected stretch, say); holds stay",
        parameters=[_path_param("flag", "Flag id.")],
        request=serializers.FlagAcknowledgeInputSerializer,
        responses={200: serializers.FlagSerializer, **ERRORS},
    )
)
class FlagAcknowledgeView(APIView):
    required_perms = ("inspection.change_coilflag",)

    def post(self, request: Request, flag: int) -> Response:
        found = queries.flag_list().filter(pk=flag).first()
        if found is None:
            raise NotFound(f"No flag {flag}.", field="flag")
        given = serializers.FlagAcknowledgeInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        services.flag_acknowledge(flag=found, actor=request.user, **given.validated_data)
        return Response(serializers.FlagSerializer(queries.flag_list().get(pk=flag)).data)


@extend_schema(
    summary="An evidence image (defect crop or full frame), PNG, by its sha256",
    parameters=[
        OpenApiParameter("sha256", OpenApiTypes.STR, OpenApiParameter.PATH, description="SHA-256")
    ],
    responses={(200, "image/png"): OpenApiTypes.BINARY, 404: ERRORS[404]},
)
class EvidenceView(APIView):
    def get(self, request: Request, sha256: str) -> FileResponse:
        evidence = Evidence.objects.filter(sha256=sha256).first()
        if evidence is None:
            raise Http404
        return FileResponse(evidence.image.open("rb"), content_type="image/png")


@extend_schema_view(
    list=extend_schema(summary="Vision models: versions, states, metrics, golden results"),
    retrieve=extend_schema(summary="One vision model with its manifest figures"),
)
class ModelViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = serializers.VisionModelSerializer
    filterset_class = ModelFilterSet

    def get_queryset(self):
        return queries.model_list()


@extend_schema(
    summary="Register a trained vision model (ONNX + manifest + golden set)",
    description="The file's sha256 is checked against the manifest and the golden set is "
    "run with onnxruntime; a corrupted or mismatched file is refused (400, nothing "
    "registered) and the active model keeps running. A registered model is `validated`; a "
    "quality engineer approves and activates it.",
    request={"multipart/form-data": serializers.ModelRegisterInputSerializer},
    responses={201: serializers.VisionModelSerializer, **ERRORS},
)
class ModelRegisterView(APIView):
    parser_classes = [MultiPartParser]
    required_perms = ("inspection.add_inspectionmodel",)

    def post(self, request: Request) -> Response:
        given = serializers.ModelRegisterInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        data = given.validated_data
        with tempfile.TemporaryDirectory(prefix="celltrace-model-") as tmp:
            paths = {}
            for key, name in (("file", "model.onnx"), ("manifest", "manifest.json")):
                paths[key] = Path(tmp) / name
                with paths[key].open("wb") as out:
                    for chunk in data[key].chunks():
                        out.write(chunk)
            paths["golden"] = Path(tmp) / "golden.npz"
            with paths["golden"].open("wb") as out:
                for chunk in data["golden"].chunks():
                    out.write(chunk)
            model = services.model_register(
                manifest_path=paths["manifest"],
                onnx_path=paths["file"],
                golden_path=paths["golden"],
                actor=request.user,
                notes=data["notes"],
            )
        return Response(
            serializers.VisionModelSerializer(model).data, status=status.HTTP_201_CREATED
        )


def _model_command(service, summary: str, description: str):
    @extend_schema(
        summary=summary,
        description=description,
        parameters=[_path_param("model", "Vision model id.")],
        request=serializers.VisionModelDecisionSerializer,
        responses={200: serializers.VisionModelSerializer, **ERRORS},
    )
    class _View(APIView):
        required_perms = ("inspection.approve_inspectionmodel",)

        def post(self, request: Request, model: int) -> Response:
            found = queries.model_list().filter(pk=model).first()
            if found is None:
                raise NotFound(f"No vision model {model}.", field="model")
            given = serializers.VisionModelDecisionSerializer(data=request.data)
            given.is_valid(raise_exception=True)
            done = service(model=found, actor=request.user, reason=given.validated_data["reason"])
            return Response(serializers.VisionModelSerializer(done).data)

    _View.__name__ = _View.__qualname__ = f"Model{service.__name__.split('_')[-1].title()}View"
    return _View


ModelApproveView = _model_command(
    services.model_approve,
    "Approve a validated vision model (quality engineer)",
    "Only a validated model (checksum and golden set passed) can be approved.",
)
ModelActivateView = _model_command(
    services.model_activate,
    "Activate an approved vision model (retires the active one of the same name)",
    "The stored file's checksum is checked again first; the cameras that ran the previous "
    "model run this one. A retired model approved before can be activated again (rollback).",
)
ModelRetireView = _model_command(
    services.model_retire,
    "Retire a vision model",
    "An active model that cameras run cannot be retired: activate its replacement.",
)

__all__ = [
    "CameraViewSet",
    "DefectReviewView",
    "DefectViewSet",
    "EvidenceView",
    "FlagAcknowledgeView",
    "FlagViewSet",
    "ModelActivateView",
    "ModelApproveView",
    "ModelRegisterView",
    "ModelRetireView",
    "ModelViewSet",
    "ResultViewSet",
]
