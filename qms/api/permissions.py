"""Who may call what.

* Integrations (token): read scope may only read; read-write scope may also write.
* People (session): must be logged in; auditors are read-only everywhere; a write needs the
  model permissions the view names in ``required_perms`` (e.g.
  ``("genealogy.add_measurement",)``). A write view that names none is closed to people:
  forgetting the declaration refuses rather than opens.
"""

from rest_framework import permissions

from qms.models import Integration

AUDITOR_GROUP = "auditor"


def is_auditor(user) -> bool:
    return user.groups.filter(name=AUDITOR_GROUP).exists()


class ScopedAccess(permissions.BasePermission):
    message = "This token or account is read-only."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        if isinstance(request.auth, Integration):
            if request.auth.can_write:
                return True
            self.message = f"Integration {request.auth.name!r} has a read-only token."
            return False
        if is_auditor(user):
            self.message = "Auditors have read-only access."
            return False
        required = tuple(getattr(view, "required_perms", ()))
        if not required:
            self.message = "This operation is not open to personal accounts."
            return False
        if user.has_perms(required):
            return True
        self.message = f"Your role lacks the permission for this: {', '.join(required)}."
        return False
