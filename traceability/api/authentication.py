from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions

from traceability.models import ApiToken


class TokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token <key>``, the key looked up by its SHA-256 digest (``ApiToken``).

    Loads the user's membership and organisation in the same query: every API view needs the caller's
    organisation. Records when the token was last used, at most once a minute (``ApiToken.mark_used``).
    """

    model = ApiToken

    def authenticate_credentials(self, key: str) -> tuple[Any, ApiToken]:
        try:
            token = ApiToken.objects.select_related("user__membership__organisation").get(
                digest=ApiToken.digest_of(key)
            )
        except ApiToken.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if token.expires_at is not None and timezone.now() >= token.expires_at:
            raise exceptions.AuthenticationFailed("Token expired: sign in again for a new one.")
        token.mark_used()
        return token.user, token
