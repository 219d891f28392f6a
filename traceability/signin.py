"""Signing in, with a lock-out after repeated failures (per account and per client address).

Failures are counted in the cache (Redis with ``CACHE_URL``, so every web
process shares the counts) for ``LOGIN_LOCKOUT_SECONDS`` from the first one.
While an account or an address is locked, the password is not even checked:
the answer is the same 429 for a real and an unknown username.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _

from traceability import audit

logger = logging.getLogger(__name__)


def _keys(request: HttpRequest) -> list[tuple[str, int]]:
    """(cache key, limit) for the account named in the request and for the client address."""
    username = str(request.POST.get("username", "")).strip().casefold()[:150]
    address = audit.client_address(request) or ""
    return [
        (f"signin-failures:account:{username}", settings.LOGIN_FAILURES_PER_ACCOUNT),
        (f"signin-failures:address:{address}", settings.LOGIN_FAILURES_PER_ADDRESS),
    ]


def locked(request: HttpRequest) -> bool:
    counts = cache.get_many([key for key, _limit in _keys(request)])
    return any(counts.get(key, 0) >= limit for key, limit in _keys(request))


def failure_count(request: HttpRequest) -> None:
    for key, _limit in _keys(request):
        cache.add(key, 0, timeout=settings.LOGIN_LOCKOUT_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=settings.LOGIN_LOCKOUT_SECONDS)


class ThrottledLoginView(LoginView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if locked(request):
            logger.warning("sign-in refused: locked out (address %s)", request.META.get("REMOTE_ADDR", ""))
            minutes = -(-settings.LOGIN_LOCKOUT_SECONDS // 60)
            context = self.get_context_data(
                form=self.get_form_class()(request),
                locked_out=_(
                    "Too many failed sign-ins for this account or from this address. Try again in %(minutes)d minutes."
                )
                % {"minutes": minutes},
            )
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        failure_count(self.request)
        return super().form_invalid(form)

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        account_key, _limit = _keys(self.request)[0]
        cache.delete(account_key)
        return super().form_valid(form)
