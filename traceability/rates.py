"""Rates as settings write them (``300/min``), the API's throttles' and the Digital Link's, checked when the
settings load: a bad one stops the start with a message saying how to write it, rather than failing each
request that counts against it."""

from __future__ import annotations

import functools
import re

from django.core.exceptions import ImproperlyConfigured

RATE = re.compile(r"([1-9][0-9]*)/(s|secs?|seconds?|m|mins?|minutes?|h|hours?|d|days?)")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


@functools.lru_cache(maxsize=64)
def parse_rate(rate: str) -> tuple[int, int]:
    """``"300/min"`` -> (300, 60): a count and the seconds it is allowed in (kept: a throttle reads its rate
    on every request)."""
    match = RATE.fullmatch(rate.strip())
    if match is None:
        raise ImproperlyConfigured(f"{rate!r} is not a rate: write a count per s, min, hour or day, as 300/min")
    return int(match.group(1)), SECONDS[match.group(2)[0]]
