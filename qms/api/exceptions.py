"""Map domain errors to HTTP answers that name the field.

A :class:`qms.exceptions.DomainError` becomes ``{"code", "detail", "field"}`` with its HTTP
status (400 invalid, 404 not found, 409 refused). Everything else (serializer validation,
authentication, permission) keeps DRF's default shape: validation errors are keyed by the
field they concern.
"""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from qms.exceptions import DomainError


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response(exc.as_dict(), status=exc.http_status)
    return drf_exception_handler(exc, context)
