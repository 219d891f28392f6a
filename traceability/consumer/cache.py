"""Rendered consumer pages, kept in each web process and keyed by everything they are rendered from.

The key is a digest of the page's inputs: the facts ``reads`` gets afresh
from the database for every request, the judgement of them, the language and
the date. A change in the database (a recall, a quarantine, a release, an
excursion, a delivery) changes the facts, hence the key, so the very request
after the change's commit renders anew: an entry can never be stale, nothing
needs invalidating, and no other code has to remember to call anything. What
the cache saves is building the page's sentences and rendering the template;
the reads still run every time. (A leg in transit has lasted a little longer
at every request; the views count its time to the minute, so its page is
rendered once a minute.)

Each process keeps its own entries, ``CONSUMER_PAGES_KEPT`` of them at most
(least recently used dropped first; 0 turns the cache off), so the cache
needs no server and cannot disagree between processes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

from django.conf import settings


def key(*parts: Any) -> str:
    """A digest of ``parts`` by their ``repr``: dataclasses, strings, numbers and dates write out all they hold.

    Only this process reads it, so it need not agree with other processes (the
    ETag, a digest of the page itself, is what clients see).
    """
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


class Rendered:
    """A bounded, thread-safe map from key to rendered bytes, ``CONSUMER_PAGES_KEPT`` entries at most."""

    def __init__(self) -> None:
        self._pages: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            page = self._pages.get(key)
            if page is not None:
                self._pages.move_to_end(key)
            return page

    def put(self, key: str, page: bytes) -> None:
        kept = settings.CONSUMER_PAGES_KEPT
        with self._lock:
            self._pages[key] = page
            self._pages.move_to_end(key)
            while len(self._pages) > kept:
                self._pages.popitem(last=False)

    def __len__(self) -> int:
        return len(self._pages)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()


pages = Rendered()
