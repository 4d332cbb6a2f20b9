"""API routes for trace and recall scope."""

urlpatterns: list = []
