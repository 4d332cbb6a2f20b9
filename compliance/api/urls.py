"""API routes for holds, a unit's holds, the station interlock and station commands.

Command routes come before the router's so ``holds/place/`` is never read as a number.
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from . import commands, views

router = SimpleRouter()
router.register("holds", views.HoldViewSet, basename="hold")

urlpatterns = [
    path("holds/place/", views.HoldPlaceView.as_view(), name="hold-place"),
    path("holds/<str:number>/release/", views.HoldReleaseView.as_view(), name="hold-release"),
    path("holds/<str:number>/units/", views.HoldUnitListView.as_view(), name="hold-units"),
    path("units/<str:serial>/holds/", views.UnitHoldsView.as_view(), name="unit-holds"),
    path("interlock/", views.InterlockView.as_view(), name="interlock"),
    path(
        "spc/alarms/<int:alarm_id>/disposition/",
        views.SpcAlarmDispositionView.as_view(),
        name="spc-alarm-disposition",
    ),
    path(
        "spc/alarms/<int:alarm_id>/reactions/",
        views.SpcAlarmReactionsView.as_view(),
        name="spc-alarm-reactions",
    ),
    path(
        "stations/<path:station>/commands/",
        commands.StationCommandView.as_view(),
        name="station-commands",
    ),
    *router.urls,
]
