"""Celery wiring: named queues, task routes, and the default beat schedule that the
``qms/0003_default_beat_schedule`` migration installs in the database."""

import importlib

import pytest
from django.apps import apps as django_apps
from django_celery_beat.models import CrontabSchedule, PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from qms.celery import app

schedule_migration = importlib.import_module("qms.migrations.0003_default_beat_schedule")

SHIFT_SUMMARY = "qms.ingest.tasks.ingest_shift_summary_task"
DIGEST = "qms.ingest.tasks.dead_letter_digest_task"
RETRY = "qms.ingest.tasks.dead_letter_retry_task"
RETRAIN = "risk.tasks.retrain_task"


def test_named_queues_and_beat_from_the_database():
    assert sorted(app.amqp.queues) == ["default", "ingest", "reports", "risk", "spc", "vision"]
    assert app.conf.task_default_queue == "default"
    assert app.conf.beat_scheduler == "django_celery_beat.schedulers:DatabaseScheduler"
    assert app.conf.task_acks_late is True


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("genealogy.tasks.unit_progress_update_task", "ingest"),
        ("compliance.tasks.out_of_spec_hold_task", "ingest"),
        (SHIFT_SUMMARY, "reports"),
        (DIGEST, "reports"),
        ("spc.tasks.spc_evaluate_task", "spc"),
        ("inspection.tasks.inspect_image_task", "vision"),
        ("risk.tasks.risk_score_task", "risk"),
        ("compliance.tasks.risk_hold_task", "risk"),
        ("compliance.tasks.audit_pack_report_task", "reports"),
        ("compliance.tasks.hold_aging_task", "default"),
    ],
)
def test_tasks_are_routed_to_their_queue(task, queue):
    route = app.amqp.router.route({}, task)
    assert (route["queue"].name, route["queue"].routing_key) == (queue, queue)


def test_the_routed_tasks_exist():
    app.loader.import_default_modules()
    for name in (
        "genealogy.tasks.unit_progress_update_task",
        "compliance.tasks.out_of_spec_hold_task",
        SHIFT_SUMMARY,
        DIGEST,
    ):
        task = app.tasks[name]
        assert task.acks_late is True
        assert task.max_retries >= 5


def _crontab(task: PeriodicTask) -> tuple:
    c = task.crontab
    return (
        c.minute,
        c.hour,
        c.day_of_week,
        c.day_of_month,
        c.month_of_year,
        str(c.timezone),
    )


@pytest.mark.django_db
def test_the_migration_installed_the_default_schedule():
    tasks = {t.name: t for t in PeriodicTask.objects.select_related("crontab")}
    assert sorted(tasks) == [
        "Dead-letter digest",
        "Dead-letter retry",
        "Ingest shift summary",
        "Thermal-risk retraining",
    ]
    retrain = tasks["Thermal-risk retraining"]
    assert (retrain.task, retrain.enabled) == (RETRAIN, True)
    assert _crontab(retrain) == ("0", "2", "1", "*", "*", "UTC")  # Mondays, 02:00 UTC
    assert retrain.crontab.schedule.day_of_week == {1}
    retry = tasks["Dead-letter retry"]
    assert (retry.task, retry.enabled) == (RETRY, True)
    assert _crontab(retry) == ("*", "*", "*", "*", "*", "UTC")
    summary, digest = tasks["Ingest shift summary"], tasks["Dead-letter digest"]
    assert (summary.task, summary.enabled, summary.kwargs) == (SHIFT_SUMMARY, True, "{}")
    assert _crontab(summary) == ("0", "6,14,22", "*", "*", "*", "UTC")
    assert (digest.task, digest.enabled) == (DIGEST, True)
    assert _crontab(digest) == ("0", "7", "*", "*", "*", "UTC")
    assert (summary.crontab.schedule.hour, summary.crontab.schedule.minute) == ({6, 14, 22}, {0})
    assert digest.crontab.schedule.hour == {7}

    # Beat's own entries (the scheduler leaves out crontabs far from the current hour when it
    # loads, so build them as it does, task by task, whatever the time of the test).
    entries = {t.name: ModelEntry(t, app=app) for t in PeriodicTask.objects.filter(enabled=True)}
    assert {name: e.task for name, e in entries.items()} == {
        "Ingest shift summary": SHIFT_SUMMARY,
        "Dead-letter digest": DIGEST,
        "Dead-letter retry": RETRY,
        "Thermal-risk retraining": RETRAIN,
    }
    assert app.amqp.router.route({}, RETRAIN)["queue"].name == "risk"
    # Beat sends with no queue of its own: the routes put both on "reports".
    assert entries["Ingest shift summary"].options.get("queue") is None


@pytest.mark.django_db
def test_installing_again_keeps_changes_and_reversing_removes_it():
    summary = PeriodicTask.objects.get(name="Ingest shift summary")
    summary.enabled = False  # changed in the admin
    summary.save()

    schedule_migration.install(django_apps, None)
    assert PeriodicTask.objects.count() == 4
    assert CrontabSchedule.objects.count() == 4
    assert PeriodicTask.objects.get(name="Ingest shift summary").enabled is False

    schedule_migration.remove(django_apps, None)
    assert sorted(PeriodicTask.objects.values_list("name", flat=True)) == [
        "Dead-letter retry",
        "Thermal-risk retraining",
    ]
    assert CrontabSchedule.objects.count() == 2

    schedule_migration.install(django_apps, None)
    assert sorted(PeriodicTask.objects.values_list("name", "task")) == [
        ("Dead-letter digest", DIGEST),
        ("Dead-letter retry", RETRY),
        ("Ingest shift summary", SHIFT_SUMMARY),
        ("Thermal-risk retraining", RETRAIN),
    ]
