"""Web routes of ingest: ``/metrics`` and the ingest status page."""

from django.urls import path

from . import views

app_name = "ingest"

urlpatterns = [
    path("metrics", views.metrics, name="metrics"),
    path("ingest/", views.status, name="status"),
]
