"""Web routes of vision inspection (pages under ``/inspection/``): the overview, a result, the
review queue, a coil's defect map, the model registry, and the commands the pages post
(acknowledge a flag, review a defect, approve / activate / retire a model)."""

from django.urls import path

from . import views

app_name = "inspection"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("results/<int:pk>/", views.result_page, name="result"),
    path("review/", views.review, name="review"),
    path("defects/<int:pk>/review/", views.defect_review, name="defect-review"),
    path("flags/<int:pk>/acknowledge/", views.flag_acknowledge, name="flag-acknowledge"),
    path("coils/<str:serial>/", views.coil_page, name="coil"),
    path("models/", views.models_page, name="models"),
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
