"""API routes for units, measurements, trace and recall scope."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

router = DefaultRouter()

urlpatterns = [
    path("", include("genealogy.api.trace_urls")),
    *router.urls,
]
