"""API views of thermal risk: scores (list, filter, one with its features), field returns
(list, filter, record), the model registry (list, approve, activate, retire) and retraining
runs (list, start one).

Reads list or show; each command validates its own input, calls exactly one
:mod:`risk.services` function and answers with what was written. A refused command writes
nothing and answers ``{code, detail, field}``.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from genealogy.api.views import ERRORS
from qms.exceptions import NotFound

from .. import queries, services
from . import serializers
from .filters import FieldReturnFilterSet, ModelFilterSet, ScoreFilterSet


@extend_schema_view(
    list=extend_schema(
        summary="Thermal-risk scores of cells (newest first)",
        description="Every score given: the calibrated risk, its parts, the plant baseline "
        "beside it, the reasons in words, the model version and whether the cell was "
        "quarantined. `quarantined=true` lists the cells held for risk.",
    ),
    retrieve=extend_schema(summary="One score with the feature values it was computed from"),
)
class ScoreViewSet(viewsets.ReadOnlyModelViewSet):
    filterset_class = ScoreFilterSet

    def get_queryset(self):
        return queries.score_list()

    def get_serializer_class(self):
        if self.action == "retrieve":
            return serializers.ScoreDetailSerializer
        return serializers.ScoreSerializer


@extend_schema_view(
    list=extend_schema(summary="Field returns (newest first)"),
    retrieve=extend_schema(summary="One field return"),
    create=extend_schema(
        summary="Record a field return",
        description="With `cell_serial`: a cell-level return labelling that cell (weight 1). "
        "Otherwise a pack-level return (the pack by `pack_serial`, or found from the VIN) "
        "labelling each of the pack's n cells with weight 1/n.",
        request=serializers.FieldReturnInputSerializer,
        responses={201: serializers.FieldReturnSerializer, **ERRORS},
    ),
)
class FieldReturnViewSet(
    viewsets.mixins.CreateModelMixin,
    viewsets.ReadOnlyModelViewSet,
):
    serializer_class = serializers.FieldReturnSerializer
    filterset_class = FieldReturnFilterSet
    required_perms = ("risk.add_fieldreturn",)

    def get_queryset(self):
        return queries.field_return_list().distinct()

    def create(self, request: Request, *args, **kwargs) -> Response:
        given = serializers.FieldReturnInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        record = services.field_return_record(actor=request.user, **given.validated_data)
        shown = queries.field_return_list().get(pk=record.pk)
        return Response(
            serializers.FieldReturnSerializer(shown).data, status=status.HTTP_201_CREATED
        )


@extend_schema_view(
    list=extend_schema(summary="Risk models: versions, states, metrics, quarantine rules"),
    retrieve=extend_schema(summary="One risk model"),
)
class ModelViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = serializers.RiskModelSerializer
    filterset_class = ModelFilterSet

    def get_queryset(self):
        return queries.model_list()


def _model_command(service, summary: str, description: str):
    @extend_schema(
        summary=summary,
        description=description,
        parameters=[
            OpenApiParameter(
                "model", OpenApiTypes.INT, OpenApiParameter.PATH, description="Risk model id."
            )
        ],
        request=serializers.RiskModelDecisionSerializer,
        responses={200: serializers.RiskModelSerializer, **ERRORS},
    )
    class _View(APIView):
        required_perms = ("risk.approve_riskmodel",)

        def post(self, request: Request, model: int) -> Response:
            found = queries.model_list().filter(pk=model).first()
            if found is None:
                raise NotFound(f"No risk model {model}.", field="model")
            given = serializers.RiskModelDecisionSerializer(data=request.data)
            given.is_valid(raise_exception=True)
            done = service(model=found, actor=request.user, reason=given.validated_data["reason"])
            return Response(serializers.RiskModelSerializer(done).data)

    _View.__name__ = _View.__qualname__ = f"Model{service.__name__.split('_')[-1].title()}View"
    return _View


ModelApproveView = _model_command(
    services.model_approve,
    "Approve a validated risk model (quality engineer)",
    "Only a validated model (checksum and manifest passed) can be approved; read its "
    "retraining comparison first.",
)
ModelActivateView = _model_command(
    services.model_activate,
    "Activate an approved risk model (retires the active one of the same name)",
    "The stored file's checksum is checked again first; a mismatch is refused and the active "
    "model stays. A retired model approved before can be activated again (rollback).",
)
ModelRetireView = _model_command(
    services.model_retire,
    "Retire a risk model that is not active",
    "An active model is retired by activating its replacement.",
)


@extend_schema_view(
    list=extend_schema(summary="Retraining runs with their challenger comparison"),
    retrieve=extend_schema(summary="One retraining run"),
)
class RetrainRunViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = serializers.RetrainRunSerializer

    def get_queryset(self):
        return queries.retrain_list()


class RetrainStartView(APIView):
    """Start a retraining now (the weekly one runs on beat)."""

    required_perms = ("risk.approve_riskmodel",)

    @extend_schema(
        summary="Retrain now: a challenger on every label so far, compared on the hold-out",
        request=None,
        responses={202: OpenApiTypes.OBJECT, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        from ..tasks import retrain_task

        result = retrain_task.delay(requested_by_id=request.user.pk)
        return Response({"task_id": result.id}, status=status.HTTP_202_ACCEPTED)


__all__ = [
    "FieldReturnViewSet",
    "ModelActivateView",
    "ModelApproveView",
    "ModelRetireView",
    "ModelViewSet",
    "RetrainRunViewSet",
    "RetrainStartView",
    "ScoreViewSet",
]
