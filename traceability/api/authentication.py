from __future__ import annotations

from typing import Any

from django.http import HttpRequest
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


def token_user(request: HttpRequest) -> Any | None:
    """The user of the request's ``Authorization: Token`` outside DRF's views (None without one), looked up
    once per request however many ask (the Digital Link's throttle, then the view); a bad token raises
    ``AuthenticationFailed`` each time it is asked."""
    if not hasattr(request, "_token_user"):
        try:
            authenticated = TokenAuthentication().authenticate(request)  # type: ignore[arg-type]  # reads headers
        except exceptions.AuthenticationFailed as refused:
            request._token_user = refused  # type: ignore[attr-defined]
        else:
            request._token_user = authenticated[0] if authenticated is not None else None  # type: ignore[attr-defined]
    if isinstance(request._token_user, exceptions.AuthenticationFailed):  # type: ignore[attr-defined]
        raise request._token_user  # type: ignore[attr-defined]
    return request._token_user  # type: ignore[attr-defined]
