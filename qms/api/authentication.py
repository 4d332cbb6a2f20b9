"""Token authentication for integrations: ``Authorization: Token <key>``.

The key is looked up by its SHA-256; the request runs as the integration's own user, so
history rows name the integration.
"""

from django.utils import timezone
from rest_framework import authentication, exceptions

from qms.models import Integration


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
        if integration.last_used_at is None or (now - integration.last_used_at).seconds > 60:
            Integration.objects.filter(pk=integration.pk).update(last_used_at=now)
        return integration.user, integration
