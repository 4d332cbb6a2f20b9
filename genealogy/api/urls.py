"""API routes for units, measurements, the genealogy commands, trace and recall scope.

Command routes come before the router's so ``units/create/`` is never read as a serial.
"""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("units", views.UnitViewSet, basename="unit")
router.register("measurements", views.MeasurementViewSet, basename="measurement")

urlpatterns = [
    path("", include("genealogy.api.trace_urls")),
    path("units/create/", views.UnitCreateView.as_view(), name="unit-create"),
    path("units/create-bulk/", views.UnitsCreateBulkView.as_view(), name="unit-create-bulk"),
    path(
        "links/consume-coil-segment/",
        views.CoilSegmentConsumeView.as_view(),
        name="link-consume-coil-segment",
    ),
    path("links/slit/", views.CoilSlitView.as_view(), name="link-slit"),
    path("links/consume-lot/", views.LotConsumeView.as_view(), name="link-consume-lot"),
    path("links/assemble/", views.AssembleView.as_view(), name="link-assemble"),
    path("links/replace-cell/", views.CellReplaceView.as_view(), name="link-replace-cell"),
    path(
        "measurements/record/",
        views.MeasurementsRecordView.as_view(),
        name="measurement-record",
    ),
    path("visits/record/", views.VisitRecordView.as_view(), name="visit-record"),
    *router.urls,
]
