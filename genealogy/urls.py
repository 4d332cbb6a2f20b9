"""Web pages of the digital thread."""

app_name = "genealogy"

urlpatterns: list = []
