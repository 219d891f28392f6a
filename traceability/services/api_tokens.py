"""API tokens: issued at sign-in, one per client, kept only as digests; revoked by their holder or by staff."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import transaction
from django.utils import timezone

from traceability import audit
from traceability.models import ApiToken, AuditEvent


@dataclass(frozen=True)
class IssuedToken:
    """A token just issued and its key: the only moment the key exists outside the client."""

    token: ApiToken
    key: str


@transaction.atomic
def api_token_issue(*, user: User) -> IssuedToken:
    """Issues a new token to ``user`` and returns it with its key (``secrets.token_urlsafe(32)``, 43 characters).

    Stores the key's SHA-256 digest and its first 8 characters, never the key: it cannot be shown again. It
    works until ``API_TOKEN_DAYS`` from now (fixed now: a later change of the setting leaves it be). The
    user's other tokens keep working. Whoever calls this has checked the user's credentials.
    """
    key, now = secrets.token_urlsafe(32), timezone.now()
    token = ApiToken.objects.create(
        user=user, digest=ApiToken.digest_of(key), prefix=key[:8], created_at=now, expires_at=ApiToken.expiry_from(now)
    )
    return IssuedToken(token=token, key=key)


@transaction.atomic
def api_token_revoke(*, actor: AbstractBaseUser | AnonymousUser, token: ApiToken) -> None:
    """Deletes ``token``: requests bearing its key are refused from then on. The holder's other tokens remain.

    Records ``token.revoked`` with who revoked it (the holder, or staff in the admin), whose it was and its prefix.
    """
    holder = token.user.get_username()
    token.delete()
    audit.record(AuditEvent.Kind.TOKEN_REVOKED, user=actor, holder=holder, prefix=token.prefix)
