"""Web routes of SPC: the plant overview, a characteristic's page with its chart panel and
downloads, and the commands the page posts (acknowledge an alarm, approve limits)."""

from django.urls import path, re_path

from . import views

app_name = "spc"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("characteristics/<int:pk>/", views.characteristic_page, name="characteristic"),
    path("characteristics/<int:pk>/chart/", views.chart_panel, name="chart"),
    re_path(
        r"^characteristics/(?P<pk>[0-9]+)/chart\.(?P<fmt>svg|png|pdf)$",
        views.chart_download,
        name="chart-download",
    ),
    path("alarms/<int:pk>/acknowledge/", views.alarm_acknowledge, name="alarm-acknowledge"),
    path("limits/<int:pk>/approve/", views.limits_approve, name="limits-approve"),
]
