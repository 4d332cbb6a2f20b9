"""Give the roles their ingest and transport permissions: view on every transport's
configuration (all roles), post envelopes and upload files (operator, quality engineer),
replay or discard dead letters (quality engineer), send station commands (quality engineer,
MRB). See ``compliance.roles``."""

from django.db import migrations

from compliance.roles import roles_sync


def sync_roles(apps, schema_editor):
    roles_sync(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0003_hold_source_out_of_spec"),
        ("ingest", "0001_initial"),
        ("files", "0001_initial"),
        ("opcua", "0001_initial"),
        ("sparkplug", "0001_initial"),
        ("genealogy", "0002_unit_progress"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
