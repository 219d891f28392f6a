"""Whether a batch's cold chain held, leg by leg: pure rules, no Django.

A leg is one dispatched shipment that carried units of the batch (a planned
one has not moved yet). A leg *held* when its record shows no excursion, no
breach of the MKT or freeze-thaw limit and no unfilled data gap: time
without readings is not evidence of any temperature (DESIGN.md), so a gap
makes the verdict "incomplete", never "held". The verdict claims no more
than the record shows.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from decimal import Decimal


class LegState(enum.StrEnum):
    IN_TRANSIT = "in_transit"
    DELIVERED = "delivered"
    REJECTED = "rejected"


class Direction(enum.StrEnum):
    ABOVE = "above"
    BELOW = "below"


class Limit(enum.StrEnum):
    """Contract limits that are breached without being an excursion of their own (alert keys)."""

    MKT = "mkt"
    FREEZE_THAW = "freeze_thaw"


@dataclass(frozen=True)
class ExcursionFact:
    direction: Direction
    peak_celsius: float
    duration_seconds: int
    ongoing: bool


@dataclass(frozen=True)
class Leg:
    number: int  # 1 for the first dispatched
    state: LegState
    min_celsius: Decimal
    max_celsius: Decimal
    seconds: int  # dispatch to delivery (or refusal), or to now while in transit
    excursions: tuple[ExcursionFact, ...] = ()
    limits_exceeded: frozenset[Limit] = frozenset()
    data_gaps: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.excursions or self.limits_exceeded)

    @property
    def held(self) -> bool:
        return not self.failed and not self.data_gaps


class Outcome(enum.StrEnum):
    NOT_SHIPPED = "not_shipped"  # no leg yet: nothing to judge
    HELD = "held"
    INCOMPLETE = "incomplete"  # no excursion recorded, but the record has gaps
    BROKEN = "broken"  # an excursion, or the MKT or freeze-thaw limit exceeded


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    legs: tuple[Leg, ...]
    total_seconds: int
    # The range every leg was held to, when they share one (they do for one product).
    common_range: tuple[Decimal, Decimal] | None
    failed_legs: tuple[int, ...]
    incomplete_legs: tuple[int, ...]
    in_transit: int


def leg_seconds(dispatched_at: datetime.datetime, closed_at: datetime.datetime | None, now: datetime.datetime) -> int:
    """How long a leg has lasted: to its close, or to now while it is moving; never negative."""
    return max(0, int(((closed_at or now) - dispatched_at).total_seconds()))


def judge(legs: tuple[Leg, ...]) -> Verdict:
    """The batch's verdict from its legs, in dispatch order: broken beats incomplete beats held."""
    failed = tuple(leg.number for leg in legs if leg.failed)
    incomplete = tuple(leg.number for leg in legs if not leg.failed and leg.data_gaps)
    if not legs:
        outcome = Outcome.NOT_SHIPPED
    elif failed:
        outcome = Outcome.BROKEN
    elif incomplete:
        outcome = Outcome.INCOMPLETE
    else:
        outcome = Outcome.HELD
    ranges = {(leg.min_celsius, leg.max_celsius) for leg in legs}
    return Verdict(
        outcome=outcome,
        legs=legs,
        total_seconds=sum(leg.seconds for leg in legs),
        common_range=next(iter(ranges)) if len(ranges) == 1 else None,
        failed_legs=failed,
        incomplete_legs=incomplete,
        in_transit=sum(leg.state is LegState.IN_TRANSIT for leg in legs),
    )
