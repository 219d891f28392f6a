"""The audit log: who signed in, who was refused, who issued, acknowledged or closed a recall, rotated the
ledger key or exported events. One function writes it, ``record``; nothing changes or deletes a row.

Rows are made append-only by database triggers (PostgreSQL and SQLite), as the ledger's tables are
(``ledger/triggers.py``): UPDATE and DELETE are refused by the database itself, so neither a bug nor
someone with the application's database account rewrites what happened. The triggers are installed by
migration ``0005_auditevent``.

Sign-ins are recorded from Django's ``user_logged_in`` and ``user_login_failed`` signals, so the pages,
the admin and the API token endpoint (which calls ``authenticate``) are all covered; refusals (401 and
403) by ``traceability.security.AccessDeniedAuditMiddleware``; the rest by one call at the place it
happens.
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import math
import re
from typing import Any

from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.serializers.json import DjangoJSONEncoder
from django.dispatch import receiver
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from ledger import triggers
from traceability.logs import current_request_id
from traceability.models import AuditEvent, Organisation

TABLES = ("traceability_auditevent",)
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")  # PostgreSQL's text holds no NUL, UTF-8 no lone surrogate


def record(
    kind: str,
    /,
    *,
    user: Any = None,
    organisation: Organisation | None = None,
    request: HttpRequest | Request | None = None,
    username: str | None = None,
    **detail: Any,
) -> AuditEvent:
    """Appends one audit event and returns it.

    ``user`` is a signed-in user (anonymous users count as none), by default the request's;
    ``organisation`` defaults to the user's. ``username`` is the name as typed, for a failed sign-in; it defaults to the
    user's. ``request`` gives the client address (as the API's throttles see it, honouring
    ``NUM_PROXIES``) and, with or without it, the current request id is kept. ``detail`` is
    stored as JSON (dates, decimals and UUIDs as strings), it and ``username`` made ``storable``: a
    NUL in a path or query is recorded, not a 500. Written in the caller's transaction: a recall
    that rolls back leaves no event.
    """
    if kind not in AuditEvent.Kind.values:
        raise ValueError(f"{kind!r} is not an audit event kind; use one of {', '.join(AuditEvent.Kind.values)}")
    if user is None and request is not None:
        user = getattr(request, "user", None)
    if user is not None and not user.is_authenticated:
        user = None
    if organisation is None and user is not None:
        membership = getattr(user, "membership", None)
        organisation = membership.organisation if membership is not None else None
    if user is None and request is None:
        detail.setdefault("system_user", _system_user())
    if username is None:
        username = user.get_username() if user is not None else ""
    return AuditEvent.objects.create(
        kind=kind,
        user=user,
        username=storable(username)[:150],
        organisation=organisation,
        remote_addr=client_address(request) if request is not None else None,
        request_id=current_request_id.get() or "",
        detail=storable(json.loads(json.dumps(detail, cls=DjangoJSONEncoder))),
    )


def storable(value: Any) -> Any:
    """``value`` as PostgreSQL can store it in text or JSONB, at any depth, keys too, each character for one.

    A NUL becomes ``␀`` (U+2400, the symbol for NUL), a lone surrogate ``�`` (U+FFFD), a number
    too large for JSON its text (``"inf"``): what was asked still shows, and recording it never
    fails the request it records.
    """
    if isinstance(value, str):
        return _UNSTORABLE.sub(lambda found: "\N{SYMBOL FOR NULL}" if found[0] == "\x00" else "\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def client_address(request: HttpRequest | Request) -> str | None:
    """The caller's IP address, the same one the API's throttles count; None when it is not an address."""
    candidate = BaseThrottle().get_ident(request)  # type: ignore[arg-type]
    try:
        return str(ipaddress.ip_address(candidate or ""))
    except ValueError:
        return None


def _system_user() -> str:
    """Who ran a management command: the operating system's user name."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


# Sign-ins --------------------------------------------------------------------------------


@receiver(user_logged_in, dispatch_uid="audit-signin-succeeded")
def _signed_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    record(AuditEvent.Kind.SIGNIN_SUCCEEDED, user=user, request=request, path=_path(request))


@receiver(user_login_failed, dispatch_uid="audit-signin-failed")
def _sign_in_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Django has already masked the password in ``credentials``; only the username is kept.
    typed = str(credentials.get("username", ""))
    record(AuditEvent.Kind.SIGNIN_FAILED, request=request, username=typed, path=_path(request))


def _path(request: HttpRequest | None) -> str:
    return request.path if request is not None else ""


# Append-only triggers (migration 0005) ---------------------------------------------------

APPEND_ONLY = triggers.AppendOnly("audit", TABLES)


def create_statements(vendor: str) -> list[str]:
    return APPEND_ONLY.create_statements(vendor)


def drop_statements(vendor: str) -> list[str]:
    return APPEND_ONLY.drop_statements(vendor)


def install(apps: Any, schema_editor: Any) -> None:
    APPEND_ONLY.install(apps, schema_editor)


def uninstall(apps: Any, schema_editor: Any) -> None:
    APPEND_ONLY.uninstall(apps, schema_editor)
