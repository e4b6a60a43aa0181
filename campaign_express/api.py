"""API plumbing shared by every app: errors as JSON with per-field messages."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from campaign_express.errors import DomainError


def exception_handler(error: Exception, context: dict) -> Response | None:
    """DRF's handler, plus the domain error and Django's ValidationError from services.

    A body is always a JSON object: field name to a list of messages, or ``detail``.
    """
    if isinstance(error, DomainError):
        body = error.as_dict()
        body["code"] = error.code
        return Response(body, status=error.status)
    if isinstance(error, DjangoValidationError):
        if hasattr(error, "error_dict"):
            body = {("non_field_errors" if field == "__all__" else field): messages
                    for field, messages in error.message_dict.items()}
        else:
            body = {"non_field_errors": error.messages}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(error, PermissionDenied):
        return Response({"detail": str(error) or "Permission denied."},
                        status=status.HTTP_403_FORBIDDEN)
    return drf_exception_handler(error, context)
