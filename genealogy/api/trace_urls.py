"""API routes for trace and recall scope (under ``/api/v1/``)."""

from django.urls import path

from .trace_views import RecallScopeView, TraceBackwardView, TraceForwardView

urlpatterns = [
    path("trace/backward/", TraceBackwardView.as_view(), name="trace-backward"),
    path("trace/forward/", TraceForwardView.as_view(), name="trace-forward"),
    path("recall-scope/", RecallScopeView.as_view(), name="recall-scope"),
]
