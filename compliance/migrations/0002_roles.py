"""Create the roles as groups with their permissions (see ``compliance.roles``)."""

from django.db import migrations

from compliance.roles import ROLES, roles_sync


def create_roles(apps, schema_editor):
    roles_sync(apps)


def drop_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("compliance", "0001_initial"),
        ("genealogy", "0001_initial"),
        ("qms", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, drop_roles)]
