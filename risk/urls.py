"""Web routes of thermal risk (pages under ``/risk/``): the risk page, a cell's page, the
field-return form, and the commands the risk page posts (approve / activate / retire a
model, retrain now)."""

from django.urls import path

from . import views

app_name = "risk"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("cells/<str:serial>/", views.cell_page, name="cell"),
    path("returns/new/", views.field_return_new, name="return-new"),
    path("retrain/", views.retrain_start, name="retrain"),
    path(
        "models/<int:pk>/approve/",
        views.model_command,
        {"action": "approve"},
        name="model-approve",
    ),
    path(
        "models/<int:pk>/activate/",
        views.model_command,
        {"action": "activate"},
        name="model-activate",
    ),
    path("models/<int:pk>/retire/", views.model_command, {"action": "retire"}, name="model-retire"),
]
