"""The weekly thermal-risk retraining on Celery beat (django-celery-beat).

Every Monday at 02:00 UTC ``risk.tasks.retrain_task`` trains a challenger on every field
return labelled so far and stores its comparison with the active model and the plant
baseline (a :class:`risk.models.RetrainRun`); promotion stays a quality engineer's decision.
Idempotent like the other default entries (``qms.beat``): a schedule changed in the admin
survives re-running migrations; reversing removes the entry.
"""

from django.db import migrations

from qms.beat import schedule_install, schedule_remove

SCHEDULE = {
    "Thermal-risk retraining": (
        "risk.tasks.retrain_task",
        {"minute": "0", "hour": "2", "day_of_week": "1"},
        "Weekly: a challenger trained on every field-return label so far, compared with the "
        "active model and the baseline on a time-ordered hold-out, with input drift (PSI). "
        "Needs a quality engineer's approval to go live.",
    ),
}


def install(apps, schema_editor):
    schedule_install(apps, SCHEDULE)


def remove(apps, schema_editor):
    schedule_remove(apps, SCHEDULE)


class Migration(migrations.Migration):
    dependencies = [
        ("risk", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, remove)]
