from django.apps import AppConfig


class FilesConfig(AppConfig):
    """File import: mapping profiles for CSV/XLSX exports, each file imported once."""

    name = "qms.files"
    label = "files"
    verbose_name = "File import"
