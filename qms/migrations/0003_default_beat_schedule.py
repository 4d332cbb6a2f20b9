"""The default Celery beat schedule (django-celery-beat, read by ``celery -A qms beat``).

* Ingest shift summary at each shift change, 06:00, 14:00 and 22:00 UTC.
* Dead-letter digest every day at 07:00 UTC.

Idempotent: an entry that exists already (by name) is left as it is, so a schedule changed
in the admin survives re-running migrations. Reversing removes the entries by name.
"""

from django.db import migrations
from django.utils import timezone

#: name -> (task, crontab fields, description)
DEFAULT_SCHEDULE = {
    "Ingest shift summary": (
        "qms.ingest.tasks.ingest_shift_summary_task",
        {"minute": "0", "hour": "6,14,22"},
        "Per transport and station: accepted, duplicate, rejected, lag and dead letters of "
        "the shift that just ended; mailed to QMS_REPORT_RECIPIENTS.",
    ),
    "Dead-letter digest": (
        "qms.ingest.tasks.dead_letter_digest_task",
        {"minute": "0", "hour": "7"},
        "Open dead letters grouped by transport and reason, oldest first; mailed to "
        "QMS_REPORT_RECIPIENTS.",
    ),
}


def _crontab_fields(fields: dict) -> dict:
    return {
        "minute": fields["minute"],
        "hour": fields["hour"],
        "day_of_week": "*",
        "day_of_month": "*",
        "month_of_year": "*",
        "timezone": "UTC",
    }


def install(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    changed = False
    for name, (task, fields, description) in DEFAULT_SCHEDULE.items():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        crontab = CrontabSchedule.objects.filter(**_crontab_fields(fields)).first()
        if crontab is None:
            crontab = CrontabSchedule.objects.create(**_crontab_fields(fields))
        PeriodicTask.objects.create(
            name=name,
            task=task,
            crontab=crontab,
            kwargs="{}",
            description=description,
            enabled=True,
        )
        changed = True
    if changed:  # a running beat reloads its schedule when this changes
        PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def remove(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTask.objects.filter(name__in=list(DEFAULT_SCHEDULE)).delete()
    for _, fields, _ in DEFAULT_SCHEDULE.values():
        CrontabSchedule.objects.filter(
            **_crontab_fields(fields), periodictask__isnull=True
        ).delete()
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


class Migration(migrations.Migration):
    dependencies = [
        ("qms", "0002_historicalstation_command_transport_and_more"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, remove)]
