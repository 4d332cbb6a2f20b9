"""Give the roles their risk permissions: view scores, field returns, models and retraining
runs (all roles); register, approve and activate risk models and record field returns
(quality engineer); record field returns (MRB). See ``compliance.roles``."""

from django.db import migrations

from compliance.roles import roles_sync


def sync_roles(apps, schema_editor):
    roles_sync(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0009_hold_source_formation"),
        ("risk", "0001_initial"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
