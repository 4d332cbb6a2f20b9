"""Give the roles their inspection permissions: view results, defects and models (all
roles); register, approve and activate vision models, configure cameras (quality engineer);
review defects and acknowledge vision flags (quality engineer, MRB). See
``compliance.roles``."""

from django.db import migrations

from compliance.roles import roles_sync


def sync_roles(apps, schema_editor):
    roles_sync(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0007_alarm_decisions"),
        ("inspection", "0001_initial"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
