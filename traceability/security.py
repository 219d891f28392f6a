"""What Django and DRF leave to the project: the Permissions-Policy header, the audit of refused requests,
the API's throttles (settings.py says which rates apply) and the pages' password re-entry throttle."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from rest_framework.request import Request
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle

from traceability import audit
from traceability.models import AuditEvent

ANONYMOUS_DENIALS_EVERY = 60  # seconds: at most one recorded refusal of an anonymous address per period


class PermissionsPolicyMiddleware:
    """Sends ``Permissions-Policy`` built from ``settings.PERMISSIONS_POLICY`` (feature: allowed origins)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.header = ", ".join(
            f"{feature}=({' '.join(origins)})" for feature, origins in settings.PERMISSIONS_POLICY.items()
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.header:
            response.headers.setdefault("Permissions-Policy", self.header)
        return response


class AccessDeniedAuditMiddleware:
    """Records the 401s and 403s the site answers (pages, admin, API, CSRF failures) as ``access.denied``.

    One place for all of them, whichever layer refused: a view's PermissionDenied, DRF's
    NotAuthenticated, AuthenticationFailed or PermissionDenied, or the CSRF check. Every refusal
    of a signed-in user is kept; of callers not signed in, the first from an address in each
    minute (``ANONYMOUS_DENIALS_EVERY``): that shows the probe, while a flood of unauthenticated
    requests (refused before DRF's throttles run) cannot grow a table nobody may delete from.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code in (401, 403) and self._worth_recording(request):
            reason = getattr(response, "data", None)
            audit.record(
                AuditEvent.Kind.ACCESS_DENIED,
                request=request,
                method=request.method,
                path=request.path,
                status=response.status_code,
                reason=str(reason.get("detail", "")) if isinstance(reason, dict) else "",
            )
        return response

    @staticmethod
    def _worth_recording(request: HttpRequest) -> bool:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return True
        key = f"audit-denied:{audit.client_address(request)}"
        return bool(cache.add(key, True, timeout=ANONYMOUS_DENIALS_EVERY))


# API throttles ---------------------------------------------------------------------------

# Loggers post readings often, many behind one gateway's address, and each message carries its device's
# signature: the ingest endpoint counts against a scope of its own ("ingest", API_INGEST_THROTTLE_RATE),
# named by its URL so that the device protocol's view stays free of web concerns.
OWN_SCOPES = {"ingest-readings": "ingest"}


class AnonThrottle(AnonRateThrottle):
    """Callers not signed in, per client address (``NUM_PROXIES`` says which one that is)."""

    def allow_request(self, request: Request, view: Any) -> bool:
        match = getattr(request, "resolver_match", None)
        own = OWN_SCOPES.get(match.url_name or "") if match is not None else None
        if own is not None:
            self.scope = own
            self.rate = self.get_rate()
            self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)


class UserThrottle(UserRateThrottle):
    """Signed-in callers, per user; anonymous ones are ``AnonThrottle``'s alone."""

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        return super().get_cache_key(request, view)


class PasswordRecheckThrottle(SimpleRateThrottle):
    """A signed-in user re-entering their password (to issue a recall), at the rate of scope ``password``
    (``AUTH_THROTTLE_RATE``).

    Counted where the API's recall issuing counts (``ScopedRateThrottle``, scope ``password``, keyed by the
    user's id): guesses on the page and through the API share one allowance, and nothing else uses it (the
    token endpoint's scope ``auth`` is keyed by user too, so revoking tokens would have spent it).
    """

    scope = "password"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


def password_recheck_wait(request: HttpRequest) -> int | None:
    """Counts one password re-entry by the request's signed-in user: None if allowed, else seconds to wait."""
    throttle = PasswordRecheckThrottle()
    if throttle.allow_request(request, None):  # type: ignore[arg-type]  # it reads only .user and .META
        return None
    return math.ceil(throttle.wait() or 1)
