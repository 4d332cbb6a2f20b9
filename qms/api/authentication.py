"""Token authentication for integrations: ``Authorization: Token <key>``.

The key is looked up by its SHA-256; the request runs as the integration's own user, so
history rows name the integration. :func:`integration_create` issues a new integration and
returns its clear-text key, which is shown once and never stored.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from rest_framework import authentication, exceptions

from qms.choices import IntegrationScope
from qms.exceptions import InvalidInput, Refused
from qms.models import Integration

INTEGRATION_GROUP = "integration"

#: ``last_used_at`` is refreshed at most this often, so reads do not each cost a write.
LAST_USED_RESOLUTION_S = 60


class IntegrationTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Token"

    def authenticate_credentials(self, key: str):
        try:
            integration = Integration.objects.select_related("user").get(
                key_hash=Integration.hash_key(key)
            )
        except Integration.DoesNotExist as exc:
            raise exceptions.AuthenticationFailed("Invalid token.") from exc
        if not integration.is_active or not integration.user.is_active:
            raise exceptions.AuthenticationFailed("Integration disabled.")
        now = timezone.now()
        last = integration.last_used_at
        if last is None or (now - last).total_seconds() > LAST_USED_RESOLUTION_S:
            Integration.objects.filter(pk=integration.pk).update(last_used_at=now)
        return integration.user, integration


@transaction.atomic
def integration_save_new(integration: Integration, *, actor=None) -> str:
    """Save a new ``integration`` (name and scope set) with its own user in the
    ``integration`` group; return its clear-text key (only the SHA-256 is stored)."""
    name = (integration.name or "").strip()
    if not name:
        raise InvalidInput("An integration needs a name.", field="name")
    if integration.scope not in IntegrationScope.values:
        raise InvalidInput(f"Unknown scope {integration.scope!r}.", field="scope")
    if Integration.objects.filter(name=name).exists():
        raise Refused(f"An integration named {name!r} exists already.", field="name")
    username = f"int-{name}"[:150]
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        raise Refused(f"A user named {username!r} exists already.", field="name")
    user = user_model(username=username, first_name=name[:150])
    user.set_unusable_password()  # API only: no login to pages or admin
    user.save()
    user.groups.add(Group.objects.get(name=INTEGRATION_GROUP))
    key = Integration.generate_key()
    integration.name = name
    integration.user = user
    integration.set_key(key)
    integration._history_user = actor
    integration._change_reason = "created"
    integration.save()
    return key


def integration_create(*, name: str, scope: str, actor=None) -> tuple[Integration, str]:
    """Create an integration; returns it with its clear-text key (show it once)."""
    integration = Integration(name=name, scope=scope)
    key = integration_save_new(integration, actor=actor)
    return integration, key
