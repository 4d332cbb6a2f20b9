"""The roles, as groups with permissions.

* operator: records process data (units, links, visits, measurements, ingest envelopes);
  places holds; views SPC charts, limits and alarms.
* quality_engineer: all of operator, plus releases holds, edits the control plan, replays
  or discards dead letters, and sends line-stop / hold commands to stations; configures
  SPC charts, proposes, approves and rejects control limits, acknowledges SPC alarms;
  registers, approves and activates vision models, reviews vision defects.
* mrb_member: views everything, places and releases holds (disposition), sends station
  commands, acknowledges SPC alarms, reviews vision defects.
* auditor: view permission on every Celltrace model and nothing else (read-only).
* integration: API-only accounts of plant systems; the token's scope decides writes.

Roles live in the top app of the dependency chain because they span every app's models.
``roles_sync`` is idempotent; the data migration ``0002_roles`` calls it, and so can
anything that needs the roles restored (e.g. after a test flushes the database).
"""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions

APPS = [
    "qms",
    "ingest",
    "files",
    "opcua",
    "sparkplug",
    "genealogy",
    "spc",
    "inspection",
    "formation",
    "risk",
    "compliance",
]

ROLES: dict[str, dict[str, list[str]]] = {
    "operator": {
        "genealogy": ["add_unit", "add_link", "change_link", "add_stationvisit", "add_measurement"],
        "compliance": ["add_hold"],
        "ingest": ["add_ingestmessage"],
        "files": ["add_importedfile"],
        "formation": ["add_cyclerfileimport"],
    },
    "quality_engineer": {
        "qms": [
            "add_characteristic",
            "change_characteristic",
            "add_equipment",
            "change_equipment",
        ],
        "genealogy": [
            "add_unit",
            "change_unit",
            "add_link",
            "change_link",
            "add_stationvisit",
            "add_measurement",
        ],
        "compliance": ["add_hold", "change_hold"],
        "ingest": ["add_ingestmessage", "change_deadletter", "add_stationcommand"],
        "files": ["add_importedfile", "add_fileimportprofile", "change_fileimportprofile"],
        "spc": [
            "change_chartconfig",
            "add_controllimits",
            "approve_controllimits",
            "change_spcalarm",
        ],
        "inspection": [
            "add_inspectionmodel",
            "approve_inspectionmodel",
            "change_inspectionstation",
            "add_defectreview",
            "change_coilflag",
        ],
        "formation": [
            "add_cyclerfileimport",
            "add_cyclerimportprofile",
            "change_cyclerimportprofile",
            "add_gradingruleset",
            "change_gradingruleset",
        ],
        "risk": ["add_riskmodel", "approve_riskmodel", "add_fieldreturn", "change_fieldreturn"],
    },
    "mrb_member": {
        "compliance": ["add_hold", "change_hold"],
        "genealogy": ["change_unit"],
        "ingest": ["add_stationcommand"],
        "spc": ["change_spcalarm"],
        "inspection": ["add_defectreview", "change_coilflag"],
        "risk": ["add_fieldreturn"],
    },
    "auditor": {},
    "integration": {},
}


def roles_sync(apps=global_apps) -> None:
    """Create or update every role group with exactly its permissions."""
    for app_label in APPS:
        create_permissions(global_apps.get_app_config(app_label), apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    views = list(
        Permission.objects.filter(content_type__app_label__in=APPS, codename__startswith="view_")
    )
    for role, grants in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = list(views)
        for app_label, codenames in grants.items():
            perms += list(
                Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
            )
        group.permissions.set(perms)
