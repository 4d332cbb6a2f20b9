from django.apps import AppConfig


class GenealogyConfig(AppConfig):
    name = "genealogy"
    verbose_name = "Genealogy (digital thread)"
