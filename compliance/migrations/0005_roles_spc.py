"""Give the roles their SPC permissions: view charts, limits and alarms (all roles);
configure charts, propose, approve and reject control limits (quality engineer);
acknowledge alarms (quality engineer, MRB). See ``compliance.roles``."""

from django.db import migrations

from compliance.roles import roles_sync


def sync_roles(apps, schema_editor):
    roles_sync(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0004_roles_ingest"),
        ("spc", "0001_initial"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
