"""API routes for plant topology and the control plan (``/api/v1/plant/...``)."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()

urlpatterns = router.urls
