"""Map domain errors to HTTP answers that name the field."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from qms.exceptions import DomainError


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        return Response(exc.as_dict(), status=exc.http_status)
    return drf_exception_handler(exc, context)
