"""How much one client address may ask of the Digital Link: look-ups, and codes found not to be genuine.

Anyone may scan any code, and the answer says whether the pack's serial was
issued. So a counterfeiter could walk through serial numbers to harvest the
genuine ones, and print them on fakes; and every verification request is
kept, so a flood of them could grow a table nobody may delete from. Two
allowances per client address (``NUM_PROXIES`` says which address that is):

- ``lookup`` (``DIGITAL_LINK_THROTTLE_RATE``): every request that reads the
  database, the page, the linkset and verification requests alike;
- ``miss`` (``DIGITAL_LINK_MISS_THROTTLE_RATE``): answers that the code is no
  genuine one: a product, variant or lot never registered, a serial never
  issued or issued for another lot or expiry, a code whose expiry is not the
  batch's. A shopper or a pharmacist meets one now and then; a harvester
  meets them by the hundred.

An address over either gets 429 with ``Retry-After`` until the oldest of its
counted requests leaves the window, and nothing is read, rendered or kept
meanwhile. What depends on the link alone (a malformed link, the redirect of
a short GTIN) is not counted: it reads nothing.

The counts are DRF's (``SimpleRateThrottle``, a sliding window in the
cache): shared by every process when ``CACHE_URL`` names a shared cache, as
the API's throttles are.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from rest_framework.throttling import SimpleRateThrottle


class _AddressThrottle(SimpleRateThrottle):
    """A sliding window per client address whose check and count are apart: a miss is known only once the
    code has been looked up, and the next request is the one refused."""

    num_requests: int  # set by SimpleRateThrottle from the rate
    duration: int

    def __init__(self, allowance: str) -> None:
        self.allowance = allowance
        super().__init__()

    def get_rate(self) -> str:
        return str(settings.DIGITAL_LINK_THROTTLE_RATES[self.allowance])

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": f"digital-link-{self.allowance}", "ident": self.get_ident(request)}

    def wait_needed(self, request: HttpRequest) -> int | None:
        """Seconds the address must wait before its next request counts, or None when it may go on."""
        self.key = self.get_cache_key(request, None)
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) < self.num_requests:
            return None
        return math.ceil(self.wait() or 1)

    def count(self, request: HttpRequest) -> None:
        """Counts one request of the address."""
        if self.wait_needed(request) is None:
            self.throttle_success()


def refused(request: HttpRequest) -> int | None:
    """Seconds the request's address must wait, over either allowance; None: it may look up a code, and
    this look-up is counted."""
    lookups, misses = _AddressThrottle("lookup"), _AddressThrottle("miss")
    waits = [wait for throttle in (lookups, misses) if (wait := throttle.wait_needed(request)) is not None]
    if waits:
        return max(waits)
    lookups.throttle_success()
    return None


def missed(request: HttpRequest) -> None:
    """Counts an answer that the code the request asked about is no genuine one."""
    _AddressThrottle("miss").count(request)
