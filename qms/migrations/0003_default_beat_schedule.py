"""The default Celery beat schedule (django-celery-beat, read by ``celery -A qms beat``).

* Ingest shift summary at each shift change, 06:00, 14:00 and 22:00 UTC.
* Dead-letter digest every day at 07:00 UTC.

Idempotent: an entry that exists already (by name) is left as it is, so a schedule changed
in the admin survives re-running migrations. Reversing removes the entries by name.
"""

from django.db import migrations

from qms.beat import schedule_install, schedule_remove

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


def install(apps, schema_editor):
    schedule_install(apps, DEFAULT_SCHEDULE)


def remove(apps, schema_editor):
    schedule_remove(apps, DEFAULT_SCHEDULE)


class Migration(migrations.Migration):
    dependencies = [
        ("qms", "0002_historicalstation_command_transport_and_more"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(install, remove)]
