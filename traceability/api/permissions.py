from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request


class IsMember(BasePermission):
    """Signed in and working for an organisation; anonymous callers get nothing."""

    message = "Sign in as a member of an organisation."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and hasattr(user, "membership"))
