"""One place that turns domain errors into HTTP answers; never a 500 for bad input."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(error, DjangoValidationError):
        detail = error.message_dict if hasattr(error, "error_dict") else {"non_field_errors": error.messages}
        error = exceptions.ValidationError(detail)
    elif isinstance(error, IntegrityError):
        # Only a concurrent writer can get here: services check uniqueness first.
        return Response(
            {"detail": "This conflicts with a change made at the same moment; read the object again and retry."},
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(error, context)
