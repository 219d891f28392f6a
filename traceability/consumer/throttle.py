"""How much one client may ask of the Digital Link: look-ups, and codes found not to be genuine.

Anyone may scan any code, and the answer says whether the pack's serial was
issued. So a counterfeiter could walk through serial numbers to harvest the
genuine ones, and print them on fakes; and every verification request is
kept, so a flood of them could grow a table nobody may delete from. Two
allowances per client:

- ``lookup`` (``DIGITAL_LINK_THROTTLE_RATE``): every request that reads the
  database, the page, the linkset and verification requests alike;
- ``miss`` (``DIGITAL_LINK_MISS_THROTTLE_RATE``): answers that the code is no
  genuine one (a product, variant or lot never registered; a serial never
  issued, or issued for another lot or expiry; a code whose expiry is not
  the batch's), and verification requests kept as refused (malformed, a bad
  token). A shopper or a pharmacist meets one now and then; a harvester
  meets them by the hundred.

A client over either gets 429 with ``Retry-After`` (the end of the window)
and nothing is read, rendered or kept meanwhile; the first refusal of a
client's window of misses is in the audit log (``digital_link.misses``),
with the path it asked for. What depends on the link
alone (a malformed page link, the redirect of a short GTIN) is not counted:
it reads nothing and keeps nothing.

A miss is reserved before the code is looked up and given back when the
answer is that the code is genuine: requests in flight together cannot get
more "not genuine" answers than the allowance, whatever the number of
processes or threads. Counts are per fixed window (one ``incr`` in the
cache, atomic in Redis and in the in-process cache), so a burst across a
window's end can reach twice the rate. They are shared by every process when
``CACHE_URL`` names a shared cache; else each process counts for itself.

The client is the user of a valid API token (a trading partner's system),
else the client address (``NUM_PROXIES`` says which), an IPv6 address by its /64:
one host commonly holds a whole /64.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle

from traceability import audit
from traceability.api.authentication import token_user
from traceability.models import AuditEvent
from traceability.rates import parse_rate


@dataclass(frozen=True)
class _Window:
    """One allowance's fixed window for a client: its cache key, its limit and when it ends."""

    key: str
    limit: int
    ends: float

    @classmethod
    def now(cls, allowance: str, client: str) -> _Window:
        limit, seconds = parse_rate(settings.DIGITAL_LINK_THROTTLE_RATES[allowance])
        start = math.floor(time.time() / seconds) * seconds
        return cls(f"digital-link:{allowance}:{client}:{start}", limit, start + seconds)

    def take(self) -> bool:
        """Counts one; whether it stays within the limit."""
        cache.add(self.key, 0, timeout=math.ceil(self.ends - time.time()) + 1)
        try:
            return cache.incr(self.key) <= self.limit
        except ValueError:  # evicted between the two: count afresh
            cache.add(self.key, 1, timeout=math.ceil(self.ends - time.time()) + 1)
            return True

    def give_back(self) -> None:
        if time.time() >= self.ends:
            return  # gone with its window (Redis would make a new key without an expiry)
        with contextlib.suppress(ValueError):  # evicted
            cache.decr(self.key)

    def spent(self) -> bool:
        """Whether the allowance is used up, without counting."""
        return int(cache.get(self.key, 0)) >= self.limit

    def wait(self) -> int:
        return max(math.ceil(self.ends - time.time()), 1)


def admit(request: HttpRequest) -> int | None:
    """Counts a look-up and reserves a miss for it; seconds the client must wait when it is over either
    allowance, else None, and the look-up goes on (``found`` gives the miss back)."""
    client = _client(request)
    lookups, misses = _Window.now("lookup", client), _Window.now("miss", client)
    if not lookups.take():
        return max(lookups.wait(), misses.wait() if misses.spent() else 0)  # the later of the two
    if not misses.take():
        misses.give_back()  # refused, it answers nothing: no miss
        if cache.add(f"{misses.key}:audited", True, timeout=misses.wait() + 1):
            audit.record(  # once a window: what a harvester looks like, for the auditors
                AuditEvent.Kind.CODES_NOT_GENUINE, request=request, path=request.path, allowed=misses.limit
            )
        return misses.wait()
    request.digital_link_miss = misses  # type: ignore[attr-defined]
    return None


def found(request: HttpRequest) -> None:
    """The admitted look-up found the code genuine, or failed (which says nothing of it): its reserved miss
    is given back."""
    misses: _Window | None = getattr(request, "digital_link_miss", None)
    if misses is not None:
        misses.give_back()
        request.digital_link_miss = None  # type: ignore[attr-defined]


def _client(request: HttpRequest) -> str:
    """Who is counted: the API token's user, else the client address (an IPv6 address by its /64). Not the
    session's user: reading it would make every answer vary by cookie, and shared caches keep none."""
    try:
        user = token_user(request)
    except exceptions.AuthenticationFailed:
        user = None  # refused later, and counted by its address meanwhile
    if user is not None:
        return f"user-{user.pk}"
    ident = BaseThrottle().get_ident(request)  # type: ignore[arg-type]  # reads only META, as the API's throttles
    try:
        address = ipaddress.ip_address(ident)
    except ValueError:
        return f"address-{ident}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"address-{address.ipv4_mapped}"
        return f"network-{ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"address-{address}"
