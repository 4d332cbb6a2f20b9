"""Root URL configuration."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

api_v1 = [
    path("plant/", include("qms.api.urls")),
    path("", include("qms.ingest.api_urls")),
    path("", include("qms.files.api_urls")),
    path("", include("genealogy.api.urls")),
    path("", include("compliance.api.urls")),
    path("spc/", include("spc.api.urls")),
    path("inspection/", include("inspection.api.urls")),
    path("formation/", include("formation.api.urls")),
    path("risk/", include("risk.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include(api_v1)),
    path("", include("qms.ingest.urls")),
    path("", include("compliance.urls")),
    path("spc/", include("spc.urls")),
    path("inspection/", include("inspection.urls")),
    path("risk/", include("risk.urls")),
]
