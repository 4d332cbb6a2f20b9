"""Web pages: trace (the digital thread with holds), and what follows."""

from django.urls import path
from django.views.generic import RedirectView

from . import views

app_name = "compliance"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="compliance:trace"), name="home"),
    path("trace/", views.trace, name="trace"),
]
