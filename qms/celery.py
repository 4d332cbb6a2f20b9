"""Celery application. Eager (in-process) when ``CELERY_BROKER_URL`` is unset."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")

app = Celery("celltrace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
