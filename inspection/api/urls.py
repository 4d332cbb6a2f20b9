"""API routes of vision inspection, under ``/api/v1/inspection/``.

Command routes come before the router's so ``defects/<id>/review/`` is never read as a
detail route.
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

app_name = "inspection-api"

router = SimpleRouter()
router.register("cameras", views.CameraViewSet, basename="camera")
router.register("results", views.ResultViewSet, basename="result")
router.register("defects", views.DefectViewSet, basename="defect")
router.register("flags", views.FlagViewSet, basename="flag")
router.register("models", views.ModelViewSet, basename="model")

urlpatterns = [
    path("defects/<int:defect>/review/", views.DefectReviewView.as_view(), name="defect-review"),
    path("flags/<int:flag>/acknowledge/", views.FlagAcknowledgeView.as_view(), name="flag-ack"),
    path("models/register/", views.ModelRegisterView.as_view(), name="model-register"),
    path("models/<int:model>/approve/", views.ModelApproveView.as_view(), name="model-approve"),
    path("models/<int:model>/activate/", views.ModelActivateView.as_view(), name="model-activate"),
    path("models/<int:model>/retire/", views.ModelRetireView.as_view(), name="model-retire"),
    path("evidence/<str:sha256>/", views.EvidenceView.as_view(), name="evidence"),
    *router.urls,
]
