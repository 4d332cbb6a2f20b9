"""Celery application: named queues, task routes and the database beat schedule.

Eager (in-process) when ``CELERY_BROKER_URL`` is unset. With a broker, each queue gets its
own workers so a burst of one kind of work (a vision backlog, a report) never delays the
reactions that put cells on hold::

    celery -A qms worker -Q ingest,default -n ingest@%h      # reactions to committed batches
    celery -A qms worker -Q spc -n spc@%h
    celery -A qms worker -Q vision -n vision@%h
    celery -A qms worker -Q risk -n risk@%h
    celery -A qms worker -Q reports -n reports@%h -c 1
    celery -A qms beat                                       # one beat per deployment

A worker started without ``-Q`` consumes every queue (what the embedded tests do).
Beat reads its schedule from the database (django-celery-beat); the defaults are installed
by the migration ``qms/0003_default_beat_schedule`` and can be changed in the admin.
"""

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "qms.settings")

#: The queue of anything not routed below (``settings.CELERY_TASK_DEFAULT_QUEUE``).
DEFAULT_QUEUE = "default"

#: Named queues, one worker pool each in production.
#: ingest: reactions to a committed ingest batch (station progress, out-of-spec holds);
#: spc, vision, risk: their apps' evaluations; reports: scheduled summaries and digests.
QUEUES = ("ingest", "spc", "vision", "risk", "reports", DEFAULT_QUEUE)

#: Task name (or glob on the task name) -> queue. Exact names win over globs; globs are
#: tried in this order. Tasks not matched go to ``DEFAULT_QUEUE``.
TASK_ROUTES = {
    # reactions to what an ingest batch committed
    "compliance.tasks.out_of_spec_hold_task": {"queue": "ingest"},
    "compliance.tasks.spc_alarm_*": {"queue": "spc"},
    "compliance.tasks.vision_hold_task": {"queue": "vision"},
    "compliance.tasks.vision_count_charts_task": {"queue": "spc"},
    "compliance.tasks.formation_hold_task": {"queue": "ingest"},
    "compliance.tasks.risk_hold_task": {"queue": "risk"},
    "compliance.tasks.cycler_alarm_hold_task": {"queue": "ingest"},
    "formation.tasks.*": {"queue": "ingest"},
    "genealogy.tasks.*": {"queue": "ingest"},
    # scheduled ingest reports (shift summary, dead-letter digest)
    "qms.ingest.tasks.*": {"queue": "reports"},
    # the apps that own a queue
    "spc.tasks.*": {"queue": "spc"},
    "inspection.tasks.*": {"queue": "vision"},
    "risk.tasks.*": {"queue": "risk"},
    "*_report_task": {"queue": "reports"},
}

app = Celery("celltrace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=tuple(
        Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
    ),
    task_default_queue=DEFAULT_QUEUE,
    task_default_exchange=DEFAULT_QUEUE,
    task_default_routing_key=DEFAULT_QUEUE,
    task_routes=(TASK_ROUTES,),
    beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler",
)
app.autodiscover_tasks()
