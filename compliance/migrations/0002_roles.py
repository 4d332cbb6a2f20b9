"""Create the roles as groups with their permissions.

* operator: records process data (units, links, visits, measurements); places holds.
* quality_engineer: all of operator, plus releases holds and edits the control plan.
* mrb_member: views everything, places and releases holds (disposition).
* auditor: view permission on every Celltrace model and nothing else (read-only).
* integration: API-only accounts of plant systems; scope comes from the token.

Roles live in the top app of the dependency chain because they span every app's models.
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import migrations

APPS = ["qms", "genealogy", "compliance"]

ROLES = {
    "operator": {
        "genealogy": ["add_unit", "add_link", "change_link", "add_stationvisit", "add_measurement"],
        "compliance": ["add_hold"],
    },
    "quality_engineer": {
        "qms": [
            "add_characteristic", "change_characteristic", "add_equipment", "change_equipment",
        ],
        "genealogy": [
            "add_unit", "change_unit", "add_link", "change_link", "add_stationvisit",
            "add_measurement",
        ],
        "compliance": ["add_hold", "change_hold"],
    },
    "mrb_member": {"compliance": ["add_hold", "change_hold"], "genealogy": ["change_unit"]},
    "auditor": {},
    "integration": {},
}


def create_roles(apps, schema_editor):
    for app_label in APPS:
        create_permissions(global_apps.get_app_config(app_label), apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    views = Permission.objects.filter(
        content_type__app_label__in=APPS, codename__startswith="view_"
    )
    for role, grants in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = list(views)
        for app_label, codenames in grants.items():
            perms += list(
                Permission.objects.filter(content_type__app_label=app_label,
                                          codename__in=codenames)
            )
        group.permissions.set(perms)


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
