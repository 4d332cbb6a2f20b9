"""API routes of formation, under ``/api/v1/formation/``.

Command and curve routes come before the router's, so ``files/import/`` is never read as a
file id and ``steps/<id>/curve/`` stays its own resource."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

app_name = "formation-api"

router = SimpleRouter()
router.register("runs", views.RunViewSet, basename="run")
router.register("steps", views.StepViewSet, basename="step")
router.register("dcir", views.DcirViewSet, basename="dcir")
router.register("aging-readings", views.AgingViewSet, basename="aging")
router.register("features", views.FeaturesViewSet, basename="features")
router.register("grades", views.GradeViewSet, basename="grade")
router.register("rule-sets", views.RuleSetViewSet, basename="rule-set")
router.register("tray-loads", views.TrayLoadViewSet, basename="tray-load")
router.register("profiles", views.ImportProfileViewSet, basename="profile")
router.register("files", views.FileImportViewSet, basename="file")
router.register("channels", views.ChannelStatusViewSet, basename="channel")
router.register("alarms", views.CyclerAlarmViewSet, basename="alarm")

urlpatterns = [
    path("files/import/", views.FileUploadView.as_view(), name="file-import"),
    path("steps/<int:step>/curve/", views.StepCurveView.as_view(), name="step-curve"),
    *router.urls,
]
