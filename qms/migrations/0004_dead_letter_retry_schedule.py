"""Beat entry: every minute, retry the dead letters that name a unit not there yet.

Idempotent and reversible like ``0003_default_beat_schedule``.
"""

from django.db import migrations

from qms.beat import schedule_install, schedule_remove

SCHEDULE = {
    "Dead-letter retry": (
        "qms.ingest.tasks.dead_letter_retry_task",
        {"minute": "*", "hour": "*"},
        "Every minute: messages that named a unit not there yet are tried again until "
        "QMS_INGEST_RETRY_WINDOW_S after their first refusal.",
    ),
}


def install(apps, schema_editor):
    schedule_install(apps, SCHEDULE)


def remove(apps, schema_editor):
    schedule_remove(apps, SCHEDULE)


class Migration(migrations.Migration):
    dependencies = [
        ("qms", "0003_default_beat_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, remove)]
