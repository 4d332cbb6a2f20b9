"""API routes of thermal risk, under ``/api/v1/risk/``.

Command routes come before the router's so ``models/<id>/approve/`` is never read as a
detail route.
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

app_name = "risk-api"

router = SimpleRouter()
router.register("scores", views.ScoreViewSet, basename="score")
router.register("field-returns", views.FieldReturnViewSet, basename="field-return")
router.register("models", views.ModelViewSet, basename="model")
router.register("retrain-runs", views.RetrainRunViewSet, basename="retrain-run")

urlpatterns = [
    path("models/<int:model>/approve/", views.ModelApproveView.as_view(), name="model-approve"),
    path("models/<int:model>/activate/", views.ModelActivateView.as_view(), name="model-activate"),
    path("models/<int:model>/retire/", views.ModelRetireView.as_view(), name="model-retire"),
    path("retrain/", views.RetrainStartView.as_view(), name="retrain"),
    *router.urls,
]
