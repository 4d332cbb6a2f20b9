from django.apps import AppConfig


class SpcConfig(AppConfig):
    name = "spc"
    verbose_name = "Statistical process control"
