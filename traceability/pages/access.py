"""What every signed-in page needs: the member, their organisation, whether they may write, form errors."""

from __future__ import annotations

from typing import cast

from django import forms
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest

from traceability.models import Organisation


def organisation(request: HttpRequest) -> Organisation:
    """The signed-in user's organisation; a 404 for a user who belongs to none."""
    membership = getattr(request.user, "membership", None)
    if membership is None:
        raise Http404
    return cast(Organisation, membership.organisation)


def can_write(request: HttpRequest) -> bool:
    return bool(request.user.membership.can_write)  # type: ignore[union-attr]


def actor(request: HttpRequest) -> User:
    """The signed-in user; ``login_required`` and the access helpers have refused anyone else."""
    return cast(User, request.user)


def form_errors(form: forms.Form, error: ValidationError) -> None:
    """A service's errors, each next to the field it names (the others above the form)."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field, field_messages in error.message_dict.items():
        form.add_error(field if field in form.fields else None, field_messages)
