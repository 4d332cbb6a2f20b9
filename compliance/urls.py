"""Web pages: trace (the digital thread with holds), and what follows."""

app_name = "compliance"

urlpatterns: list = []
