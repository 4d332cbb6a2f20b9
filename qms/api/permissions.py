"""Who may call what.

* Integrations (token): read scope may only read; read-write scope may also write.
* People (session): must be logged in; auditors are read-only everywhere; writes need the
  model permission that the service concerns (checked by the view via ``required_perms``).
"""

from rest_framework import permissions

from qms.models import Integration

AUDITOR_GROUP = "auditor"


class ScopedAccess(permissions.BasePermission):
    message = "This token or account is read-only."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        if isinstance(request.auth, Integration):
            return request.auth.can_write
        if user.groups.filter(name=AUDITOR_GROUP).exists():
            return False
        required = getattr(view, "required_perms", ())
        return user.has_perms(required)
