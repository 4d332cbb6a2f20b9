"""API routes of SPC, under ``/api/v1/spc/``.

Command routes come before the router's so ``alarms/<id>/acknowledge/`` is never read as a
detail route.
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("alarms", views.AlarmViewSet, basename="spc-alarm")

CHAR = "characteristics/<int:characteristic>"

urlpatterns = [
    path(f"{CHAR}/config/", views.ChartConfigView.as_view(), name="spc-config"),
    path(f"{CHAR}/limits/", views.LimitsListView.as_view(), name="spc-limits"),
    path(f"{CHAR}/limits/propose/", views.LimitsProposeView.as_view(), name="spc-limits-propose"),
    path(f"{CHAR}/chart/", views.ChartDataView.as_view(), name="spc-chart"),
    path(f"{CHAR}/state/", views.CharacteristicStateView.as_view(), name="spc-state"),
    path("limits/<int:limits>/", views.LimitsDetailView.as_view(), name="spc-limits-detail"),
    path(
        "limits/<int:limits>/approve/", views.LimitsApproveView.as_view(), name="spc-limits-approve"
    ),
    path("limits/<int:limits>/reject/", views.LimitsRejectView.as_view(), name="spc-limits-reject"),
    path(
        "alarms/<int:alarm>/acknowledge/",
        views.AlarmAcknowledgeView.as_view(),
        name="spc-alarm-acknowledge",
    ),
    path("alarms/<int:alarm>/close/", views.AlarmCloseView.as_view(), name="spc-alarm-close"),
    *router.urls,
]
