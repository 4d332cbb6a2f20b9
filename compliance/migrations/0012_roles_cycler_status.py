"""Give every role the view permissions of formation's live channel status and cycler
alarm episodes. See ``compliance.roles``."""

from django.db import migrations

from compliance.roles import roles_sync


def sync_roles(apps, schema_editor):
    roles_sync(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0011_roles_after_every_app"),
        ("formation", "0002_channel_status_and_alarms"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
