"""Installing default Celery beat entries from data migrations (django-celery-beat).

Each migration gives ``{name: (task, {"minute": ..., "hour": ...}, description)}`` (and
``"day_of_week"`` for a weekly entry). An entry
that exists already (by name) is left as it is, so a schedule changed in the admin survives
re-running migrations; removing deletes the entries by name and their unused crontabs.
"""

from django.utils import timezone


def _crontab_fields(fields: dict) -> dict:
    return {
        "minute": fields["minute"],
        "hour": fields["hour"],
        "day_of_week": fields.get("day_of_week", "*"),
        "day_of_month": "*",
        "month_of_year": "*",
        "timezone": "UTC",
    }


def schedule_install(apps, schedule: dict) -> None:
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    changed = False
    for name, (task, fields, description) in schedule.items():
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


def schedule_remove(apps, schedule: dict) -> None:
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTask.objects.filter(name__in=list(schedule)).delete()
    for _, fields, _ in schedule.values():
        CrontabSchedule.objects.filter(
            **_crontab_fields(fields), periodictask__isnull=True
        ).delete()
    PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})
