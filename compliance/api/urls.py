"""API routes for holds and the station interlock."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()

urlpatterns = router.urls
