"""Sync the role groups once every app whose permissions they grant is migrated.

On a fresh database the earlier role migrations could run before formation's tables and
permissions existed (they did not depend on formation), so the quality engineer lacked
the formation permissions (grading rules, import profiles) until the next sync. This one
depends on the latest migration of every app in ``compliance.roles.APPS``. A later
migration that creates a model in one of those apps needs a role sync after it
(``tests/compliance/test_roles_migration.py`` checks). See ``compliance.roles``.
"""

from django.db import migrations

from compliance.roles import roles_sync


def sync_roles(apps, schema_editor):
    roles_sync(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0010_roles_risk"),
        ("qms", "0004_dead_letter_retry_schedule"),
        ("ingest", "0003_vision_transport"),
        ("files", "0001_initial"),
        ("opcua", "0001_initial"),
        ("sparkplug", "0001_initial"),
        ("genealogy", "0003_source_message_id_128"),
        ("spc", "0002_c_chart"),
        ("inspection", "0002_camera_flat_field"),
        ("formation", "0001_initial"),
        ("risk", "0001_initial"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
