"""The role groups are synced after every app whose permissions they grant is migrated, so a
fresh database gives each role all of its permissions (the quality engineer can put grading
rules in force on the day the plant is installed, not after some later sync)."""

from __future__ import annotations

import inspect

from django.db.migrations import operations
from django.db.migrations.loader import MigrationLoader

from compliance.roles import APPS, ROLES


def _syncs_roles(migration) -> bool:
    return "roles_sync" in inspect.getsource(inspect.getmodule(migration))


def _adds_permissions(migration) -> bool:
    """A migration that creates a model or changes a model's permissions."""
    for op in migration.operations:
        if isinstance(op, operations.CreateModel):
            return True
        if isinstance(op, operations.AlterModelOptions) and "permissions" in op.options:
            return True
    return False


def test_the_last_role_sync_runs_after_every_migration_that_adds_permissions():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    graph = loader.graph
    syncs = [
        key
        for key, migration in loader.disk_migrations.items()
        if key[0] == "compliance" and _syncs_roles(migration)
    ]
    assert syncs, "no compliance migration syncs the roles"
    last_sync = max(syncs, key=lambda key: len(graph.forwards_plan(key)))
    before = set(graph.forwards_plan(last_sync))
    missing = sorted(
        key
        for key, migration in loader.disk_migrations.items()
        if key[0] in APPS and _adds_permissions(migration) and key not in before
    )
    assert missing == [], f"{last_sync} runs before {missing}: their permissions would be lost"


def test_every_role_grants_only_apps_the_sync_covers():
    assert {app for grants in ROLES.values() for app in grants} <= set(APPS)
