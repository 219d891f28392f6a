"""Cold-chain rules as plain data: storage profiles, contract rules, defaults.

Pure module (no Django) so the rules can be tested exhaustively and reused in
reports. A contract is a list of rules of one shape, ``(band, threshold,
duration, mode, severity)``, plus an arming period, a rolling MKT limit, a
freeze-thaw count limit and a data-gap limit (DESIGN.md, "Temperature
contracts"). Thresholds are inclusive: a threshold of 8.0 is crossed by 8.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class _Choices(StrEnum):
    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        return [(member.value, member.value.replace("_", " ")) for member in cls]


class StorageProfile(_Choices):
    REFRIGERATED = "2-8C"
    CONTROLLED_ROOM = "15-25C"
    FROZEN = "frozen"


class Band(_Choices):
    ABOVE = "above"  # value >= threshold
    BELOW = "below"  # value <= threshold


class Mode(_Choices):
    SINGLE = "single"  # continuous time in band; resets when the value returns
    CUMULATIVE = "cumulative"  # total time in band; never resets


class Severity(_Choices):
    WARNING = "warning"
    ALARM = "alarm"
    BREACH = "breach"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Rule:
    name: str
    band: Band
    threshold_celsius: float
    duration_seconds: int
    mode: Mode
    severity: Severity


@dataclass(frozen=True)
class Contract:
    min_celsius: float
    max_celsius: float
    arming_seconds: int
    mkt_limit_celsius: float | None
    mkt_window_seconds: int | None
    freeze_thaw_limit: int | None
    logging_interval_seconds: int
    max_gap_seconds: int
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class _Range:
    low: float
    high: float
    mkt_window_seconds: int | None  # None: MKT is not meaningful (frozen goods)


_RANGES = {
    StorageProfile.REFRIGERATED: _Range(2.0, 8.0, 24 * 3600),  # USP <1079.2>: rolling 24 h
    StorageProfile.CONTROLLED_ROOM: _Range(15.0, 25.0, 30 * 24 * 3600),  # USP CRT: 30 days
    StorageProfile.FROZEN: _Range(-25.0, -15.0, None),
}

MINUTE = 60
HOUR = 3600
DEFAULT_ARMING_SECONDS = 10 * MINUTE  # common logger practice
DEFAULT_LOGGING_INTERVAL_SECONDS = 5 * MINUTE


def default_contract(
    profile: StorageProfile,
    *,
    stability_budget_minutes: int,
    freeze_sensitive: bool,
    logging_interval_seconds: int = DEFAULT_LOGGING_INTERVAL_SECONDS,
) -> Contract:
    """The contract a product's storage profile implies, each rule with its source.

    - early warning: outside the range continuously 30 min (vendor practice);
    - heat, single event: above the range continuously 10 h (WHO PQS E006);
    - freeze, single event: at or below -0.5 °C for 60 min (WHO PQS E006), for
      refrigerated goods; critical when the product is freeze-sensitive, since
      frozen vaccine is destroyed, not degraded;
    - stability budget: cumulative time above the range, warning at 50 % and
      80 %, breach at 100 % (the product's stability data);
    - hard ceiling at or above 25 °C (30 °C for room-temperature goods), any
      duration: critical (USP controlled cold / room temperature);
    - MKT over a rolling window must not exceed the upper limit (USP <1079.2);
    - a data gap of twice the logging interval raises an alert (SenML).
    """
    band = _RANGES[profile]
    budget = stability_budget_minutes * MINUTE
    rules = [
        Rule("early warning, warm", Band.ABOVE, band.high, 30 * MINUTE, Mode.SINGLE, Severity.WARNING),
        Rule("early warning, cold", Band.BELOW, band.low, 30 * MINUTE, Mode.SINGLE, Severity.WARNING),
        Rule("heat excursion", Band.ABOVE, band.high, 10 * HOUR, Mode.SINGLE, Severity.ALARM),
    ]
    if profile is StorageProfile.REFRIGERATED:
        freeze = Severity.CRITICAL if freeze_sensitive else Severity.ALARM
        rules.append(Rule("freeze", Band.BELOW, -0.5, 60 * MINUTE, Mode.SINGLE, freeze))
    if budget:
        rules += [
            Rule("stability budget 50 %", Band.ABOVE, band.high, budget // 2, Mode.CUMULATIVE, Severity.WARNING),
            Rule("stability budget 80 %", Band.ABOVE, band.high, budget * 4 // 5, Mode.CUMULATIVE, Severity.WARNING),
            Rule("stability budget spent", Band.ABOVE, band.high, budget, Mode.CUMULATIVE, Severity.BREACH),
        ]
    ceiling = {StorageProfile.REFRIGERATED: 25.0, StorageProfile.CONTROLLED_ROOM: 30.0, StorageProfile.FROZEN: -5.0}
    rules.append(Rule("hard ceiling", Band.ABOVE, ceiling[profile], 0, Mode.SINGLE, Severity.CRITICAL))
    return Contract(
        min_celsius=band.low,
        max_celsius=band.high,
        arming_seconds=DEFAULT_ARMING_SECONDS,
        mkt_limit_celsius=band.high if band.mkt_window_seconds else None,
        mkt_window_seconds=band.mkt_window_seconds,
        freeze_thaw_limit=0 if freeze_sensitive else None,
        logging_interval_seconds=logging_interval_seconds,
        max_gap_seconds=2 * logging_interval_seconds,
        rules=tuple(rules),
    )


def merge_profiles(profiles: set[StorageProfile]) -> StorageProfile:
    """The one profile a shipment's items share; mixed conditions cannot share a contract."""
    if len(profiles) != 1:
        raise ValueError("items need different storage conditions; ship them separately")
    return next(iter(profiles))
