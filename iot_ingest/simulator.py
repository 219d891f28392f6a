"""Simulated temperature loggers: profiles, message building and the device clock (pure).

A logger takes a reading every ``interval`` seconds of device time from its
``start`` and sends ``per_message`` readings per message (a SenML pack with a
base time, as in the spec's test vector), signed with its key. A profile says
what the readings are; its event (spike, warming, ...) begins ``EVENT_AT``
seconds of device time after the start, so a run with ``--since`` longer than
that shows it in the history at once.

No Django, no MQTT: ``simulate_devices`` does the publishing.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from iot_ingest import protocol

NORMAL = 5.0  # °C, the middle of a 2-8 °C product's range
NOISE = 0.15  # °C, standard deviation of a reading's noise ...
MAX_NOISE = 0.4  # ... cut off here, so a normal logger stays well inside 2-8 °C

EVENT_AT = 3600.0  # s of device time after the start when a profile's event begins
SPIKE = (45 * 60, 12.0)  # a door left open: 12 °C for 45 min (past the 30-min early warning, far from 10 h)
WARMING = (2 * 3600, 11 * 3600, 3600, 10.0)  # a failing unit: 2 h rise, 11 h at 10 °C (past 10 h: alarm), 1 h back
FREEZING = (10 * 60, 90 * 60, 10 * 60, -2.0)  # too near the ice packs: 10 min fall, 90 min at -2 °C, 10 min back
GAP = 30 * 60  # a logger that records nothing for 30 min (a data gap at the default 300 s interval)

PROFILES: dict[str, str] = {
    "normal": "5 °C with a little noise",
    "spike": "a short jump to 12 °C (45 min)",
    "warming": "a slow rise past 8 °C to about 10 °C, held for 11 h",
    "freezing": "a drop to -2 °C for 90 min",
    "gap": "no readings for 30 min",
    "late": "normal readings, held back and uploaded all at the end (a logger read out at the dock)",
}


def temperature(profile: str, offset: float, rng: random.Random) -> float | None:
    """The reading, in °C, ``offset`` seconds of device time after the start; None where nothing is recorded."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
    noise = max(-MAX_NOISE, min(MAX_NOISE, rng.gauss(0.0, NOISE)))
    t = offset - EVENT_AT
    if profile == "gap" and 0 <= t < GAP:
        return None
    level = NORMAL
    if profile == "spike" and 0 <= t < SPIKE[0]:
        level = SPIKE[1]
    elif profile == "warming":
        level = _excursion(t, *WARMING)
    elif profile == "freezing":
        level = _excursion(t, *FREEZING)
    return round(level + noise, 2)


def _excursion(t: float, going: float, holding: float, coming_back: float, level: float) -> float:
    """A linear move from NORMAL to ``level``, a hold, and a linear move back; NORMAL outside."""
    if t < 0:
        return NORMAL
    if t < going:
        return NORMAL + (level - NORMAL) * t / going
    if t < going + holding:
        return level
    if t < going + holding + coming_back:
        return level + (NORMAL - level) * (t - going - holding) / coming_back
    return NORMAL


@dataclass(frozen=True)
class Sample:
    at: int  # Unix time, seconds
    value: float  # °C


def senml(device_id: str, samples: Iterable[Sample]) -> list[dict[str, Any]]:
    """A SenML pack (RFC 8428) of temperature readings: base name, base time and unit on the first record."""
    pack: list[dict[str, Any]] = []
    for sample in samples:
        if not pack:
            base = sample.at
            pack.append({"bn": f"urn:dev:{device_id}:", "bt": base, "bu": "Cel", "n": "temp", "v": sample.value})
        else:
            pack.append({"n": "temp", "t": sample.at - base, "v": sample.value})
    if not pack:
        raise ValueError("a SenML pack holds at least one record")
    return pack


def build_message(private_key: Ed25519PrivateKey, device_id: str, seq: int, samples: Iterable[Sample]) -> bytes:
    """The signed protocol v1 message carrying the samples."""
    return protocol.message(private_key, device_id, seq, senml(device_id, samples))


def device_clock(*, now: float, began: float, start: float, speed: float | None) -> float:
    """Where device time stands at real time ``now`` for loggers that started at device time ``start``.

    Without a speed, device time is the present: all history since ``start`` is
    due at once (a backfill), then loggers report in real time. With a speed
    X, device time runs from ``start`` X times faster than real time since
    ``began``; it never passes the present, because the platform refuses
    readings more than 5 minutes ahead.
    """
    if speed is None:
        return now
    return min(now, start + (now - began) * speed)


@dataclass
class Logger:
    """One simulated logger: where its readings stand and what it sends next."""

    device_id: str
    private_key: Ed25519PrivateKey
    profile: str
    start: int  # Unix time of reading 0
    interval: float = 300.0
    per_message: int = 10
    rng: random.Random = field(default_factory=random.Random)
    index: int = 0  # the next reading's number
    held: list[bytes] = field(default_factory=list)  # a late logger's messages, sent at the end

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; one of {', '.join(PROFILES)}")
        if self.interval <= 0 or self.per_message < 1:
            raise ValueError("interval must be positive and per_message at least 1")

    @property
    def topic(self) -> str:
        return f"coldtrace/v1/devices/{self.device_id}/readings"

    @property
    def late(self) -> bool:
        return self.profile == "late"

    def due_at(self) -> float:
        """Device time of the last reading of the next message: the message can be sent from then on."""
        return self.start + (self.index + self.per_message - 1) * self.interval

    def take_samples(self) -> list[Sample]:
        """The next message's readings (none in a gap); moves on by ``per_message`` readings."""
        samples = []
        for index in range(self.index, self.index + self.per_message):
            offset = index * self.interval
            value = temperature(self.profile, offset, self.rng)
            if value is not None:
                samples.append(Sample(math.floor(self.start + offset), value))
        self.index += self.per_message
        return samples


@dataclass(order=True)
class _Due:
    at: float
    order: int
    logger: Logger = field(compare=False)


class Fleet:
    """The loggers in the order their next messages fall due (device time)."""

    def __init__(self, loggers: Iterable[Logger]) -> None:
        self.loggers = list(loggers)
        self._heap = [_Due(logger.due_at(), n, logger) for n, logger in enumerate(self.loggers)]
        heapq.heapify(self._heap)

    def next_due(self) -> float:
        return self._heap[0].at if self._heap else math.inf

    def pop_due(self, clock: float) -> tuple[Logger, list[Sample]] | None:
        """The logger whose next message is due by device time ``clock``, with its readings; None if none is."""
        if not self._heap or self._heap[0].at > clock:
            return None
        due = heapq.heappop(self._heap)
        samples = due.logger.take_samples()
        heapq.heappush(self._heap, _Due(due.logger.due_at(), due.order, due.logger))
        return due.logger, samples
