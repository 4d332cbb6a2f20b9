"""API routes for plant topology and the control plan (``/api/v1/plant/...``)."""

from rest_framework.routers import SimpleRouter

from . import views

router = SimpleRouter()
router.register("sites", views.SiteViewSet, basename="site")
router.register("lines", views.LineViewSet, basename="line")
router.register("stations", views.StationViewSet, basename="station")
router.register("equipment", views.EquipmentViewSet, basename="equipment")
router.register("characteristics", views.CharacteristicViewSet, basename="characteristic")

urlpatterns = router.urls
