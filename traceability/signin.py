"""Signing in, with a lock-out after repeated failures (per account and per client address).

One lock-out for every way in: the sign-in page (``ThrottledLoginView``), the admin's sign-in page
(``admin_login``, with ``AdminSignInForm``) and the API's token endpoint (which calls ``authenticate``). A
failure on any of them counts toward all of them.

Failures are counted in the cache (Redis with ``CACHE_URL``, so every web
process shares the counts) for ``LOGIN_LOCKOUT_SECONDS`` from the first one.
While an account or an address is locked, the password is not even checked:
the answer is the same 429 for a real and an unknown username, with
``Retry-After`` the whole lockout time (no count outlives it: a locked sign-in is not counted).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import admin, auth
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from rest_framework.request import Request

from traceability import audit

logger = logging.getLogger(__name__)
LOCKED_OUT = "locked_out"  # the code of the form error a locked sign-in gets


class LockedOut(Exception):
    """Too many failed sign-ins for the account or from the address: the password was not checked."""


def authenticate(request: HttpRequest | Request, *, username: str, password: str) -> User | None:
    """Django's ``authenticate`` behind the lock-out; raises ``LockedOut`` while the account or address is locked.

    A failure is counted for the account and the address; a success clears the account's count.
    """
    if locked(request, username):
        raise LockedOut
    return _checked(request, username, password)


def _checked(request: HttpRequest | Request | None, username: str, password: str) -> User | None:
    user = auth.authenticate(request, username=username, password=password)
    if user is None:
        failure_count(request, username)
    else:
        account_key, _limit = _keys(request, username)[0]
        cache.delete(account_key)
    return user


def _keys(request: HttpRequest | Request | None, username: str) -> list[tuple[str, int]]:
    """(cache key, limit) for the account named and for the client address."""
    account = username.strip().casefold()[:150]
    address = (audit.client_address(request) if request is not None else None) or ""
    return [
        (f"signin-failures:account:{account}", settings.LOGIN_FAILURES_PER_ACCOUNT),
        (f"signin-failures:address:{address}", settings.LOGIN_FAILURES_PER_ADDRESS),
    ]


def locked(request: HttpRequest | Request | None, username: str) -> bool:
    keys = _keys(request, username)
    counts = cache.get_many([key for key, _limit in keys])
    if any(counts.get(key, 0) >= limit for key, limit in keys):
        address = audit.client_address(request) if request is not None else None
        logger.warning("sign-in refused: locked out (address %s)", address)
        return True
    return False


def failure_count(request: HttpRequest | Request | None, username: str) -> None:
    for key, _limit in _keys(request, username):
        cache.add(key, 0, timeout=settings.LOGIN_LOCKOUT_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=settings.LOGIN_LOCKOUT_SECONDS)


def locked_out_message() -> str:
    minutes = -(-settings.LOGIN_LOCKOUT_SECONDS // 60)
    return _("Too many failed sign-ins for this account or from this address. Try again in %(minutes)d minutes.") % {
        "minutes": minutes
    }


def _too_many(response: HttpResponse) -> HttpResponse:
    response.status_code = 429
    response["Retry-After"] = str(settings.LOGIN_LOCKOUT_SECONDS)
    return response


# The pages -----------------------------------------------------------------------------------


class SignInForm(AuthenticationForm):
    """Django's sign-in form, behind the lock-out: while locked, the error ``LOCKED_OUT`` and no password check."""

    def clean(self) -> dict[str, Any]:
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if locked(self.request, username or ""):
            raise ValidationError(locked_out_message(), code=LOCKED_OUT)
        if username is not None and password:
            self.user_cache = _checked(self.request, username, password)
            if self.user_cache is None:
                raise self.get_invalid_login_error()
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class AdminSignInForm(SignInForm, AdminAuthenticationForm):
    """The admin's sign-in form (staff only), behind the lock-out; ``admin.py`` gives it to the admin site."""


def is_locked_out(form: AuthenticationForm) -> bool:
    return form.has_error(NON_FIELD_ERRORS, LOCKED_OUT)


class ThrottledLoginView(LoginView):
    authentication_form = SignInForm

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        if not is_locked_out(form):
            return super().form_invalid(form)
        # A blank form, so that the page is the same whichever username was typed.
        context = self.get_context_data(form=self.get_form_class()(self.request), locked_out=locked_out_message())
        return _too_many(self.render_to_response(context))


@login_not_required
def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin site's own sign-in page, with ``AdminSignInForm``: a 429 while the account or address is locked."""
    response = admin.site.login(request)
    form = (response.context_data or {}).get("form") if isinstance(response, TemplateResponse) else None
    if isinstance(form, AuthenticationForm) and is_locked_out(form):
        return _too_many(response)
    return response
