"""Cold-chain rules as plain data, and their evaluation over a logger's readings.

Pure module (no Django) so the rules can be tested exhaustively and reused in
reports. A contract is a list of rules of one shape, ``(band, threshold,
duration, mode, severity)``, plus an arming period, a rolling MKT limit, a
freeze-thaw count limit and a data-gap limit (DESIGN.md, "Temperature
contracts"). Thresholds are inclusive: a threshold of 8.0 is crossed by 8.0.

``evaluate`` judges readings against a contract on their own timestamps (event
time, not arrival time): the same readings in any order, delivered any number
of times, give the same ``Evaluation``; ``mkt`` is the USP <1079.2> mean
kinetic temperature it uses.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise


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


# --- evaluation: readings against a contract -----------------------------------

MKT_ACTIVATION_KELVIN = 10_000.0  # ΔH/R, USP <1079.2>
KELVIN_AT_ZERO_CELSIUS = 273.15
# A freeze-thaw cycle needs a clear freeze and a clear thaw, so sensor noise
# around 0 °C does not count: frozen at or below the WHO PQS E006 freeze
# threshold, thawed again at or above the bottom of the 2-8 °C range.
FREEZE_CELSIUS = -0.5
THAW_CELSIUS = 2.0

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROS = 1_000_000  # time is integer microseconds inside: exact, hence order-independent


@dataclass(frozen=True, order=True)
class Sample:
    """One reading: device time (aware; normalised to UTC) and temperature."""

    at: datetime.datetime
    celsius: float

    def __post_init__(self) -> None:
        _require_aware(self.at, "a reading's time")
        if not math.isfinite(self.celsius) or self.celsius <= -KELVIN_AT_ZERO_CELSIUS:
            raise ValueError(f"{self.celsius} °C is not a temperature; check the logger's sensor")
        object.__setattr__(self, "at", self.at.astimezone(datetime.UTC))
        object.__setattr__(self, "celsius", float(self.celsius))


@dataclass(frozen=True)
class Trigger:
    """A rule, the MKT limit, the freeze-thaw limit or the data-gap limit firing.

    ``key`` is ``"rule:<rule name>"``, ``"mkt"``, ``"freeze_thaw"`` or ``"gap"``;
    with ``at`` it identifies the firing, and neither changes when later readings
    arrive, so alerts and ledger entries can be keyed by them.
    """

    key: str
    severity: Severity
    at: datetime.datetime
    detail: str


@dataclass(frozen=True)
class Excursion:
    """A maximal run of readings outside the range, in one direction, that fired a rule.

    Outside is inclusive (``>= max_celsius`` above, ``<= min_celsius`` below). A
    blip that fired no rule is not an excursion, though its time still counts
    toward cumulative budgets. ``ended_at`` is the time of the first reading no
    longer outside in this direction (None while still out at the last reading);
    ``duration_seconds`` is wall-clock time to ``ended_at``, or to the last reading.
    """

    direction: Band
    started_at: datetime.datetime
    ended_at: datetime.datetime | None
    peak_celsius: float  # the warmest reading above, the coldest below
    duration_seconds: int
    triggers: tuple[Trigger, ...]  # the rule triggers fired by readings of this run, in time order


@dataclass(frozen=True)
class Evaluation:
    excursions: tuple[Excursion, ...]
    triggers: tuple[Trigger, ...]  # every trigger, in time order
    # over the window ending at the last reading, as much of it as the readings cover;
    # None: the contract has no MKT window, or there are no readings
    mkt_celsius: float | None
    stability_used_seconds: int  # evidenced time at or above max_celsius
    freeze_thaw_cycles: int
    last_reading_at: datetime.datetime | None

    def verdict(self) -> bytes:
        """A digest of the excursions and triggers, what alerts and the ledger are made of: equal digests,
        equal verdicts (the rest moves with every reading)."""
        return hashlib.sha256(repr((self.excursions, self.triggers)).encode()).digest()


def evaluate(
    contract: Contract,
    samples: Iterable[Sample],
    *,
    armed_from: datetime.datetime,
    until: datetime.datetime | None = None,
) -> Evaluation:
    """Judge readings against a contract, on the readings' own timestamps.

    A pure function of the set of readings: duplicates are dropped and the rest
    sorted by ``(at, celsius)``, so order and redelivery change nothing (two
    different readings at one instant are both kept; the warmer one holds).
    Readings before ``armed_from`` (dispatch plus the arming period) are
    neither evaluated nor counted. ``until`` (now, or delivery) serves only to detect a trailing
    data gap; the last value is never extended to it, because missing data is a
    gap, not a temperature.

    Time: each value holds from its reading until the next one (the last holds
    0 s), but at most ``max_gap_seconds``: time without data is not evidence of
    any temperature. A gap neither resets a single-event timer nor adds to it
    beyond the limit. Bands are inclusive (above: value >= threshold; below:
    value <= threshold).

    - single-event rule: fires once the value has been in its band continuously
      for its duration (a duration of 0 fires at the first reading in band); a
      reading outside the band resets the timer; once per continuous period;
    - cumulative rule: fires once, when the total time in band reaches its
      duration; never resets;
    - ``mkt``: after each reading, the MKT of the readings of the trailing window
      (see ``mkt``); judged once the readings span the whole window, so that a
      warm first reading is not a 24-hour MKT breach; fires (breach) on going
      above the limit, and again only after coming back to or below it. MKT
      clears nothing: excursions and their triggers stand whatever the MKT;
    - ``freeze_thaw``: a cycle is a reading at or below ``FREEZE_CELSIUS``
      followed later by one at or above ``THAW_CELSIUS``; fires (alarm) once,
      when the cycles exceed the contract's limit;
    - ``gap``: fires (warning) at ``previous + max_gap_seconds`` when the next
      reading, or ``until``, is further away than that; the first reading is
      measured from ``armed_from``. Each gap fires once.
    """
    _require_aware(armed_from, "armed_from")
    monitor = Monitor(contract, armed_from=armed_from)
    monitor.feed(sorted({s for s in samples if s.at >= armed_from}, key=_sample_order))
    return monitor.evaluation(until=until)


class OutOfOrder(ValueError):
    """A reading before the last one fed to a ``Monitor``: evaluate all the readings again."""


@dataclass(frozen=True)
class Checkpoint:
    """A ``Monitor``'s state after the readings fed so far, for ``Monitor.rewind``."""

    last: Sample | None  # the last reading fed then
    _since: int
    _pending: tuple[int, float] | None
    _settled: _Settled
    _window: _WindowMark | None
    _slow: int
    _frozen: bool
    _cycles: int


class Monitor:
    """``evaluate`` as a fold that can be resumed: readings are fed in ``(at, celsius)`` order, a
    few at a time, and ``evaluation()`` at any point equals ``evaluate`` of all readings fed so far.

    The work per reading is constant, so a shipment's newest readings are judged
    without judging its whole history again. Reading ``i`` is settled (rules,
    excursion runs, time above the range) once reading ``i + 1`` says how long
    its value held; until then it is pending, and ``evaluation()`` settles it on
    a copy with a hold of 0, as ``evaluate`` treats the last reading.

    A reading that arrives late, before the last one fed, need not mean judging
    everything again: ``rewind`` returns to a ``checkpoint`` taken before it
    (constant time and memory, whatever the MKT window holds), and the readings
    after that checkpoint are fed again.
    """

    def __init__(self, contract: Contract, *, armed_from: datetime.datetime) -> None:
        _require_aware(armed_from, "armed_from")
        self.contract = contract
        self.armed_from = armed_from
        self._armed = self._since = micros(armed_from)  # ``_since``: the previous reading, for data gaps
        self._cap = contract.max_gap_seconds * _MICROS
        self._settled = _Settled(contract)
        self._pending: tuple[int, float] | None = None  # the last reading: (micros, celsius)
        self._window = _RollingMkt(contract) if contract.mkt_window_seconds is not None else None
        self._slow: list[Trigger] = []  # MKT, freeze-thaw and gap triggers: judged on arrival
        self._frozen, self._cycles = False, 0

    @property
    def last(self) -> Sample | None:
        return None if self._pending is None else Sample(moment(self._pending[0]), self._pending[1])

    def feed(self, samples: Iterable[Sample]) -> None:
        """Takes readings in ``(at, celsius)`` order, none before the last one fed (``OutOfOrder``
        otherwise, and nothing of the call is taken). Repeats and readings before arming change nothing."""
        self.feed_micros([(micros(sample.at), sample.celsius) for sample in samples])

    def feed_micros(self, readings: Sequence[tuple[int, float]]) -> None:
        """``feed`` of readings given as (microseconds since the Unix epoch, °C), as a database can hand them
        over without a datetime for each: the same order, the same checks."""
        for _at, celsius in readings:
            if not -KELVIN_AT_ZERO_CELSIUS < celsius < math.inf:
                raise ValueError(f"{celsius} °C is not a temperature; check the logger's sensor")
        armed = [reading for reading in readings if reading[0] >= self._armed]
        for previous, reading in pairwise(armed if self._pending is None else [self._pending, *armed]):
            if reading < previous:
                raise OutOfOrder(f"a reading at {moment(reading[0]):%Y-%m-%d %H:%M:%S} comes before the last one")
        for reading in armed:
            if reading != self._pending:
                self._arrive(*reading)

    def checkpoint(self) -> Checkpoint:
        """The state after the readings fed so far, which ``rewind`` can return to."""
        return Checkpoint(
            last=self.last,
            _since=self._since,
            _pending=self._pending,
            _settled=self._settled.copy(),
            _window=None if self._window is None else self._window.checkpoint(),
            _slow=len(self._slow),
            _frozen=self._frozen,
            _cycles=self._cycles,
        )

    def rewind(self, checkpoint: Checkpoint) -> bool:
        """Returns to a checkpoint this monitor took, forgetting the readings fed since; the monitor is then as
        if only the readings before it had been fed. False (and nothing changes) when it can no longer: the
        MKT window has since dropped readings the checkpoint still needs."""
        if self._window is not None and not self._window.rewind(checkpoint._window):
            return False
        self._since, self._pending = checkpoint._since, checkpoint._pending
        self._settled = checkpoint._settled.copy()
        del self._slow[checkpoint._slow :]
        self._frozen, self._cycles = checkpoint._frozen, checkpoint._cycles
        return True

    def evaluation(self, *, until: datetime.datetime | None = None) -> Evaluation:
        """What ``evaluate`` says of the readings fed so far; ``until`` as there."""
        if until is not None:
            _require_aware(until, "until")
        settled = self._settled.copy()
        if self._pending is not None:
            settled.settle(*self._pending, hold=0)
        gaps = []
        limit = self.contract.max_gap_seconds * _MICROS
        if until is not None and micros(until) - self._since > limit:
            gaps.append(_gap_trigger(self.contract, self._since))
        triggers = settled.fired + self._slow + gaps
        return Evaluation(
            excursions=settled.excursions(),
            triggers=tuple(sorted(triggers, key=_in_time_order)),
            mkt_celsius=None if self._window is None or self._pending is None else self._window.current,
            stability_used_seconds=settled.above // _MICROS,
            freeze_thaw_cycles=self._cycles,
            last_reading_at=None if self._pending is None else moment(self._pending[0]),
        )

    def _arrive(self, at: int, celsius: float) -> None:
        hold = 0
        if self._pending is not None:
            hold = min(at - self._pending[0], self._cap)
            self._settled.settle(*self._pending, hold=hold)
        if self._window is not None and (breach := self._window.arrive(at, celsius, previous_hold=hold)):
            self._slow.append(breach)
        self._freeze_thaw(at, celsius)
        if at - self._since > self.contract.max_gap_seconds * _MICROS:
            self._slow.append(_gap_trigger(self.contract, self._since))
        self._since = at
        self._pending = (at, celsius)

    def _freeze_thaw(self, at: int, celsius: float) -> None:
        if celsius <= FREEZE_CELSIUS:
            self._frozen = True
        elif self._frozen and celsius >= THAW_CELSIUS:
            self._frozen, self._cycles = False, self._cycles + 1
            limit = self.contract.freeze_thaw_limit
            if limit is not None and self._cycles == limit + 1:
                detail = f"{self._cycles} freeze-thaw cycle{'s' * (self._cycles > 1)}, more than the limit of {limit}"
                self._slow.append(Trigger("freeze_thaw", Severity.ALARM, moment(at), detail))


class _RuleState:
    """One rule's timer: time in band (this continuous period, or in total if cumulative)."""

    __slots__ = ("in_band_for", "may_fire", "rule")

    def __init__(self, rule: Rule, in_band_for: int = 0, may_fire: bool = True) -> None:
        self.rule, self.in_band_for, self.may_fire = rule, in_band_for, may_fire

    def settle(self, at: int, celsius: float, hold: int) -> Trigger | None:
        """The rule's trigger if this reading, holding ``hold``, makes it fire."""
        rule = self.rule
        if not _in_band(rule.band, rule.threshold_celsius, celsius):
            if rule.mode == Mode.SINGLE:
                self.in_band_for, self.may_fire = 0, True
            return None
        needed = rule.duration_seconds * _MICROS
        fired = None
        if self.may_fire and self.in_band_for + hold >= needed:
            fired = _rule_trigger(rule, moment(at + needed - self.in_band_for))
            self.may_fire = False
        self.in_band_for += hold
        return fired


@dataclass
class _Run:
    """Consecutive readings on one side of the range (``direction``; None: inside)."""

    direction: Band | None
    started_at: int
    last_at: int
    peak: float
    triggers: list[Trigger]


class _Settled:
    """What the settled readings add up to: rule timers, fired triggers, excursions, time above."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.rules = [_RuleState(rule) for rule in contract.rules]
        self.fired: list[Trigger] = []
        self.closed: list[Excursion] = []
        self.run: _Run | None = None
        self.above = 0
        self.calm = calm_bounds(contract)
        self.at_rest = False  # the last reading was calm: every single-event timer is reset, none can fire

    def copy(self) -> _Settled:
        twin = _Settled.__new__(_Settled)
        twin.contract = self.contract
        twin.rules = [_RuleState(s.rule, s.in_band_for, s.may_fire) for s in self.rules]
        twin.fired, twin.closed = list(self.fired), list(self.closed)
        twin.run = None if self.run is None else dataclasses.replace(self.run, triggers=list(self.run.triggers))
        twin.above = self.above
        twin.calm, twin.at_rest = self.calm, self.at_rest
        return twin

    def settle(self, at: int, celsius: float, *, hold: int) -> None:
        run, (low, high) = self.run, self.calm
        calm = low < celsius < high
        if calm and self.at_rest and run is not None and run.direction is None:
            # Most readings: another calm one, after a calm one. No rule's timer moves (single-event ones are
            # reset already, cumulative ones count only time in band); the run inside the range goes on.
            run.last_at = at
            run.peak = min(run.peak, celsius)
            return
        self.at_rest = calm
        fired = [trigger for state in self.rules if (trigger := state.settle(at, celsius, hold))]
        self.fired += fired
        if celsius >= self.contract.max_celsius:
            self.above += hold
        direction = _outside(self.contract, celsius)
        if run is None or run.direction != direction:
            if run is not None:
                self._close(run, ended_at=at)
            run = self.run = _Run(direction, at, at, celsius, [])
        run.last_at = at
        run.peak = max(run.peak, celsius) if direction is Band.ABOVE else min(run.peak, celsius)
        run.triggers += fired

    def excursions(self) -> tuple[Excursion, ...]:
        """Every excursion: the closed ones, and the run still going if it is one."""
        if self.run is None:
            return tuple(self.closed)
        still = self.copy()
        assert still.run is not None
        still._close(still.run, ended_at=None)
        return tuple(still.closed)

    def _close(self, run: _Run, *, ended_at: int | None) -> None:
        if run.direction is None or not run.triggers:
            return
        self.closed.append(
            Excursion(
                direction=run.direction,
                started_at=moment(run.started_at),
                ended_at=None if ended_at is None else moment(ended_at),
                peak_celsius=run.peak,
                duration_seconds=((run.last_at if ended_at is None else ended_at) - run.started_at) // _MICROS,
                triggers=tuple(sorted(run.triggers, key=_in_time_order)),
            )
        )


@dataclass(frozen=True)
class _WindowMark:
    """A ``_RollingMkt`` checkpoint: positions counted from its first reading ever, so shedding moves none."""

    head: int
    length: int
    sums: tuple[int, int, float, float]
    newest: tuple[int, float, float] | None
    first: int | None
    current: float
    above: bool


class _RollingMkt:
    """The MKT over the trailing window after each reading, with running sums: O(1) per reading.

    The window ending at reading k holds the readings taken in the
    ``mkt_window_seconds`` up to and including it, weighted as ``mkt`` weighs
    them; the sums gain each reading as it enters and lose it as it leaves.
    Judged once the readings span the whole window, so that a warm first
    reading is not a 24-hour MKT breach.

    Readings leave by moving ``head`` past them, and are dropped from the list
    only now and then: a checkpoint is then a few numbers, and rewinding to it
    cuts the list and moves ``head`` back.
    """

    COMPACT_AFTER = 4096  # readings left behind before the list sheds them

    def __init__(self, contract: Contract) -> None:
        assert contract.mkt_window_seconds is not None
        self.contract = contract
        self.window = contract.mkt_window_seconds * _MICROS
        self.inside: list[tuple[int, int, float, float]] = []  # (at, hold, term, celsius) before the newest ...
        self.head = 0  # ... from this one on (the ones before have left the window)
        self.shed = 0  # readings removed from the front of ``inside`` for good
        self.sums = _RunningSums()
        self.newest: tuple[int, float, float] | None = None  # (at, term, celsius)
        self.first: int | None = None
        self.current = 0.0
        self.above = False

    def checkpoint(self) -> _WindowMark:
        sums = (self.sums.count, self.sums.weight, self.sums.weighted, self.sums.plain)
        length = self.shed + len(self.inside)
        return _WindowMark(self.shed + self.head, length, sums, self.newest, self.first, self.current, self.above)

    def rewind(self, mark: _WindowMark | None) -> bool:
        assert mark is not None
        if mark.head < self.shed:
            return False
        del self.inside[mark.length - self.shed :]
        self.head = mark.head - self.shed
        self.sums.count, self.sums.weight, self.sums.weighted, self.sums.plain = mark.sums
        self.newest, self.first, self.current, self.above = mark.newest, mark.first, mark.current, mark.above
        return True

    def arrive(self, at: int, celsius: float, *, previous_hold: int) -> Trigger | None:
        term = math.exp(_MKT_SCALE - MKT_ACTIVATION_KELVIN / (celsius + KELVIN_AT_ZERO_CELSIUS))
        if self.newest is None:
            self.first = at
        else:
            before_at, before_term, before_celsius = self.newest
            self.inside.append((before_at, previous_hold, before_term, before_celsius))
            self.sums.add(previous_hold, before_term)
        self.newest = (at, term, celsius)
        inside, head = self.inside, self.head
        while head < len(inside) and inside[head][0] <= at - self.window:
            _at, hold, old_term, _celsius = inside[head]
            self.sums.add(hold, old_term, leaving=True)
            head += 1
        if head > self.COMPACT_AFTER and 2 * head > len(inside):
            del inside[:head]
            self.shed, head = self.shed + head, 0
        self.head = head
        mean = self.sums.mean_with(previous_hold, term)  # the newest stands for the interval before it
        if mean > 0.0:
            self.current = MKT_ACTIVATION_KELVIN / (_MKT_SCALE - math.log(mean)) - KELVIN_AT_ZERO_CELSIUS
        else:  # every term underflowed, which only readings near absolute zero do
            window = [Sample(moment(a), c) for a, _h, _t, c in inside[head:]] + [Sample(moment(at), celsius)]
            self.current = mkt(window, max_hold_seconds=self.contract.max_gap_seconds)
        limit = self.contract.mkt_limit_celsius
        assert self.first is not None
        if limit is None or at - self.first < self.window:
            return None
        breach = None
        if self.current > limit and not self.above:
            breach = Trigger("mkt", Severity.BREACH, moment(at), _mkt_detail(self.current, self.contract))
        self.above = self.current > limit
        return breach


def calm_bounds(contract: Contract) -> tuple[float, float]:
    """The open interval of the values that are ``calm`` under the contract: strictly inside its range, below
    every band above (value >= threshold) and above every band below (value <= threshold)."""
    below = [rule.threshold_celsius for rule in contract.rules if rule.band == Band.BELOW]
    above = [rule.threshold_celsius for rule in contract.rules if rule.band == Band.ABOVE]
    return max([contract.min_celsius, *below]), min([contract.max_celsius, *above])


def calm(contract: Contract, celsius: float) -> bool:
    """Whether a new reading at this value can wait a few seconds for a routine evaluation.

    A calm value is strictly inside the contract's range and in no rule's band:
    it starts no excursion of its own and fires no rule after its own time.
    What it can still change is slow or already under way: it ends an excursion,
    completes the duration of the reading before it, fills or ends a data gap,
    moves the rolling MKT, or thaws a frozen load.
    """
    low, high = calm_bounds(contract)
    return low < celsius < high


def mkt(samples: Sequence[Sample], *, max_hold_seconds: int | None = None) -> float:
    """Mean kinetic temperature in °C, time-weighted (USP <1079.2>, ΔH/R = 10 000 K).

    ``MKT = (ΔH/R) / -ln(Σ wᵢ·exp(-ΔH/(R·Tᵢ)) / Σ wᵢ) - 273.15`` with Tᵢ in kelvin.
    Duplicates are dropped and readings sorted. A reading's weight is the time
    its value holds: until the next reading, capped at ``max_hold_seconds`` if
    given (time without data is no evidence); the last reading stands for as
    long as the interval before it, so that the newest reading counts and equal
    intervals give the classic equal-weight formula. One reading, or readings
    that are all at one instant, are weighted equally.
    """
    readings = sorted(set(samples))
    if not readings:
        raise ValueError("the mean kinetic temperature needs at least one reading")
    cap = None if max_hold_seconds is None else max_hold_seconds * _MICROS
    weights = _mkt_weights(_holds([micros(s.at) for s in readings], cap))
    if not any(weights):
        weights = [1] * len(readings)
    exponents = [-MKT_ACTIVATION_KELVIN / (s.celsius + KELVIN_AT_ZERO_CELSIUS) for s in readings]
    terms = [(w, x) for w, x in zip(weights, exponents, strict=True) if w]
    top = max(x for _, x in terms)  # factored out, so that no term underflows to zero alone
    mean = math.fsum(w * math.exp(x - top) for w, x in terms) / sum(w for w, _ in terms)
    return MKT_ACTIVATION_KELVIN / -(math.log(mean) + top) - KELVIN_AT_ZERO_CELSIUS


def _require_aware(at: datetime.datetime, what: str) -> None:
    if at.utcoffset() is None:
        raise ValueError(f"{what} ({at.isoformat()}) has no time zone; give it in UTC")


def _sample_order(sample: Sample) -> tuple[datetime.datetime, float]:
    return sample.at, sample.celsius  # Sample's own order, compared in C rather than by its generated __lt__


_ONE_MICROSECOND = datetime.timedelta(microseconds=1)


def micros(at: datetime.datetime) -> int:
    """An aware time as integer microseconds since the Unix epoch, as ``Monitor.feed_micros`` takes it."""
    return (at - _EPOCH) // _ONE_MICROSECOND


def moment(value: int) -> datetime.datetime:
    """Microseconds since the Unix epoch (``micros``) back as a UTC time."""
    return _EPOCH + datetime.timedelta(microseconds=value)


def _holds(times: Sequence[int], cap: int | None) -> list[int]:
    """How long each value holds: until the next reading, at most ``cap``; the last 0."""
    gaps = [after - before for before, after in pairwise(times)] + [0] * bool(times)
    return gaps if cap is None else [min(gap, cap) for gap in gaps]


def _mkt_weights(holds: list[int]) -> list[int]:
    return holds[:-1] + holds[-2:-1] if len(holds) > 1 else [0] * len(holds)


def _in_band(band: Band, threshold: float, value: float) -> bool:
    return value >= threshold if band == Band.ABOVE else value <= threshold


def _rule_trigger(rule: Rule, at: datetime.datetime) -> Trigger:
    detail = f"{rule.band} {_degrees(rule.threshold_celsius)}"
    if rule.duration_seconds:
        detail += f" for {_span(rule.duration_seconds)}"
        if rule.mode == Mode.CUMULATIVE:
            detail += " in total"
    return Trigger(f"rule:{rule.name}", rule.severity, at, f"{detail} ({rule.name})")


def _outside(contract: Contract, value: float) -> Band | None:
    if value >= contract.max_celsius:
        return Band.ABOVE
    if value <= contract.min_celsius:
        return Band.BELOW
    return None


class _RunningSums:
    """Σw, Σw·term and Σterm over the readings in an MKT window.

    Terms are exp(-ΔH/RT) scaled by exp(ΔH/R / 273.15), so they stay near 1.
    """

    def __init__(self) -> None:
        self.count, self.weight, self.weighted, self.plain = 0, 0, 0.0, 0.0

    def add(self, weight: int, term: float, *, leaving: bool = False) -> None:
        sign = -1 if leaving else 1
        self.count += sign
        self.weight += sign * weight
        self.weighted += sign * weight * term
        self.plain += sign * term
        if not self.count:
            self.weighted = self.plain = 0.0  # no rounding carried over from readings gone

    def mean_with(self, weight: int, term: float) -> float:
        """The weighted mean term with one more reading; equal weights if no reading has any."""
        if self.weight + weight:
            return (self.weighted + weight * term) / (self.weight + weight)
        return (self.plain + term) / (self.count + 1)


_MKT_SCALE = MKT_ACTIVATION_KELVIN / KELVIN_AT_ZERO_CELSIUS


def _mkt_detail(value: float, contract: Contract) -> str:
    window, limit = contract.mkt_window_seconds or 0, contract.mkt_limit_celsius or 0.0
    return f"MKT {value:.1f} °C over {_span(window)} > {_degrees(limit)}"


def _gap_trigger(contract: Contract, since: int) -> Trigger:
    detail = f"no reading for {_span(contract.max_gap_seconds)} after {moment(since):%Y-%m-%d %H:%M:%S} UTC"
    return Trigger("gap", Severity.WARNING, moment(since + contract.max_gap_seconds * _MICROS), detail)


def _in_time_order(trigger: Trigger) -> tuple[datetime.datetime, str, str]:
    return trigger.at, trigger.key, trigger.detail


def _degrees(celsius: float) -> str:
    text = f"{celsius:.2f}"
    return f"{text.removesuffix('0') if text.endswith('0') else text} °C"


def _span(seconds: int) -> str:
    """``10 h 0 min``, ``30 min``, ``45 s``."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(hours or minutes)
    return " ".join(parts + [f"{secs} s"] * bool(secs or not parts))
