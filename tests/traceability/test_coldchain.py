"""Tests for traceability.coldchain: default contracts, profile merging, evaluation.

Pure tests: no Django, no database. Expected contracts and firings are written
out from DESIGN.md ("Temperature contracts") and the sources it cites, not
derived from the code under test.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from itertools import pairwise
from unittest import mock

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from traceability import coldchain
from traceability.coldchain import (
    Band,
    Contract,
    Evaluation,
    Excursion,
    Mode,
    Monitor,
    OutOfOrder,
    Rule,
    Sample,
    Severity,
    StorageProfile,
    Trigger,
    calm,
    default_contract,
    evaluate,
    merge_profiles,
    micros,
    mkt,
)

# database=None: no .hypothesis directory is written into the work tree.
# deadline=None: timing on a loaded CI machine must not fail a test.
PROPERTY = settings(database=None, deadline=None, max_examples=300)

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
ABOVE, BELOW = Band.ABOVE, Band.BELOW
SINGLE, CUMULATIVE = Mode.SINGLE, Mode.CUMULATIVE
WARNING, ALARM, BREACH, CRITICAL = Severity.WARNING, Severity.ALARM, Severity.BREACH, Severity.CRITICAL


def rule(contract: Contract, name: str) -> Rule:
    (found,) = [r for r in contract.rules if r.name == name]
    return found


def budget_rules(contract: Contract) -> list[Rule]:
    return [r for r in contract.rules if r.mode is CUMULATIVE]


# --- the DESIGN.md table, rule by rule, for a 2-8 °C vaccine -------------------


def test_a_refrigerated_freeze_sensitive_vaccine_gets_every_rule_of_the_design_table() -> None:
    contract = default_contract(StorageProfile.REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)

    assert (contract.min_celsius, contract.max_celsius) == (2.0, 8.0)
    assert contract.arming_seconds == 10 * MINUTE
    assert set(contract.rules) == {
        # outside 2-8 °C continuously 30 min: warning (vendor practice)
        Rule("early warning, warm", ABOVE, 8.0, 30 * MINUTE, SINGLE, WARNING),
        Rule("early warning, cold", BELOW, 2.0, 30 * MINUTE, SINGLE, WARNING),
        # above 8 °C continuously 10 h: alarm (WHO PQS E006)
        Rule("heat excursion", ABOVE, 8.0, 10 * HOUR, SINGLE, ALARM),
        # at or below -0.5 °C for 60 min (WHO PQS E006); frozen vaccine is destroyed: critical
        Rule("freeze", BELOW, -0.5, 60 * MINUTE, SINGLE, CRITICAL),
        # 4 h cumulative above 8 °C: warn at 2 h and 3 h 12 min, breach at 4 h
        Rule("stability budget 50 %", ABOVE, 8.0, 2 * HOUR, CUMULATIVE, WARNING),
        Rule("stability budget 80 %", ABOVE, 8.0, 3 * HOUR + 12 * MINUTE, CUMULATIVE, WARNING),
        Rule("stability budget spent", ABOVE, 8.0, 4 * HOUR, CUMULATIVE, BREACH),
        # at or above 25 °C, any duration: critical (USP controlled cold temperature)
        Rule("hard ceiling", ABOVE, 25.0, 0, SINGLE, CRITICAL),
    }
    # rolling 24 h MKT above 8 °C: breach (USP <1079.2)
    assert (contract.mkt_limit_celsius, contract.mkt_window_seconds) == (8.0, 24 * HOUR)
    # a freeze-sensitive product tolerates no freeze-thaw cycle at all
    assert contract.freeze_thaw_limit == 0
    # five-minute logging by default; a gap of twice that raises an alert
    assert (contract.logging_interval_seconds, contract.max_gap_seconds) == (5 * MINUTE, 10 * MINUTE)


def test_freezing_a_refrigerated_product_that_tolerates_it_is_an_alarm_without_a_freeze_thaw_limit() -> None:
    contract = default_contract(StorageProfile.REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=False)

    assert rule(contract, "freeze") == Rule("freeze", BELOW, -0.5, 60 * MINUTE, SINGLE, ALARM)
    assert contract.freeze_thaw_limit is None


def test_a_room_temperature_tablet_is_kept_at_15_25_c_with_a_30_day_mkt_and_a_30_c_ceiling() -> None:
    contract = default_contract(StorageProfile.CONTROLLED_ROOM, stability_budget_minutes=600, freeze_sensitive=False)

    assert (contract.min_celsius, contract.max_celsius) == (15.0, 25.0)
    assert contract.arming_seconds == 10 * MINUTE
    assert set(contract.rules) == {
        Rule("early warning, warm", ABOVE, 25.0, 30 * MINUTE, SINGLE, WARNING),
        Rule("early warning, cold", BELOW, 15.0, 30 * MINUTE, SINGLE, WARNING),
        Rule("heat excursion", ABOVE, 25.0, 10 * HOUR, SINGLE, ALARM),
        Rule("stability budget 50 %", ABOVE, 25.0, 5 * HOUR, CUMULATIVE, WARNING),
        Rule("stability budget 80 %", ABOVE, 25.0, 8 * HOUR, CUMULATIVE, WARNING),
        Rule("stability budget spent", ABOVE, 25.0, 10 * HOUR, CUMULATIVE, BREACH),
        # USP controlled room temperature: excursions up to 30 °C are tolerated
        Rule("hard ceiling", ABOVE, 30.0, 0, SINGLE, CRITICAL),
    }
    # MKT: 30 days and 25 °C for room-temperature products (DESIGN.md)
    assert (contract.mkt_limit_celsius, contract.mkt_window_seconds) == (25.0, 30 * DAY)
    assert contract.freeze_thaw_limit is None
    assert contract.max_gap_seconds == 2 * contract.logging_interval_seconds


def test_a_frozen_product_has_no_mkt_and_no_freeze_rule() -> None:
    contract = default_contract(StorageProfile.FROZEN, stability_budget_minutes=60, freeze_sensitive=False)

    assert (contract.min_celsius, contract.max_celsius) == (-25.0, -15.0)
    assert contract.arming_seconds == 10 * MINUTE
    assert set(contract.rules) == {
        Rule("early warning, warm", ABOVE, -15.0, 30 * MINUTE, SINGLE, WARNING),
        Rule("early warning, cold", BELOW, -25.0, 30 * MINUTE, SINGLE, WARNING),
        Rule("heat excursion", ABOVE, -15.0, 10 * HOUR, SINGLE, ALARM),
        Rule("stability budget 50 %", ABOVE, -15.0, 30 * MINUTE, CUMULATIVE, WARNING),
        Rule("stability budget 80 %", ABOVE, -15.0, 48 * MINUTE, CUMULATIVE, WARNING),
        Rule("stability budget spent", ABOVE, -15.0, 60 * MINUTE, CUMULATIVE, BREACH),
        # Not in DESIGN.md's table (which is for 2-8 °C): the code's own ceiling
        # for frozen goods, pinned so a change to it is a conscious one.
        Rule("hard ceiling", ABOVE, -5.0, 0, SINGLE, CRITICAL),
    }
    # MKT is not meaningful for frozen goods (DESIGN.md: "none for frozen")
    assert contract.mkt_limit_celsius is None
    assert contract.mkt_window_seconds is None


@pytest.mark.parametrize("profile", list(StorageProfile))
def test_every_profile_arms_after_ten_minutes_and_ends_with_a_critical_hard_ceiling(profile: StorageProfile) -> None:
    contract = default_contract(profile, stability_budget_minutes=240, freeze_sensitive=False)

    ceiling = rule(contract, "hard ceiling")
    assert contract.arming_seconds == 10 * MINUTE
    assert ceiling.band is ABOVE
    assert ceiling.duration_seconds == 0  # any duration
    assert ceiling.severity is CRITICAL
    assert ceiling.threshold_celsius > contract.max_celsius


@pytest.mark.parametrize("profile", list(StorageProfile))
def test_a_product_without_a_stability_budget_gets_no_budget_rules(profile: StorageProfile) -> None:
    contract = default_contract(profile, stability_budget_minutes=0, freeze_sensitive=True)

    assert budget_rules(contract) == []
    assert not any(r.name.startswith("stability budget") for r in contract.rules)
    # the single-event rules and the ceiling remain
    assert {"early warning, warm", "early warning, cold", "heat excursion", "hard ceiling"} <= {
        r.name for r in contract.rules
    }


@PROPERTY
@given(
    profile=st.sampled_from(list(StorageProfile)),
    budget_minutes=st.integers(min_value=1, max_value=10_000),
    freeze_sensitive=st.booleans(),
)
def test_budget_warnings_come_at_50_and_80_percent_before_the_breach_at_100(
    profile: StorageProfile, budget_minutes: int, freeze_sensitive: bool
) -> None:
    contract = default_contract(profile, stability_budget_minutes=budget_minutes, freeze_sensitive=freeze_sensitive)

    half, four_fifths, spent = sorted(budget_rules(contract), key=lambda r: r.duration_seconds)
    budget_seconds = budget_minutes * MINUTE
    assert half.duration_seconds < four_fifths.duration_seconds < spent.duration_seconds
    assert (half.duration_seconds, four_fifths.duration_seconds, spent.duration_seconds) == (
        budget_seconds * 50 // 100,
        budget_seconds * 80 // 100,
        budget_seconds,
    )
    assert [r.severity for r in (half, four_fifths, spent)] == [WARNING, WARNING, BREACH]
    for budget_rule in (half, four_fifths, spent):
        # time above the range's upper limit, counted across excursions, never reset
        assert budget_rule.mode is CUMULATIVE
        assert budget_rule.band is ABOVE
        assert budget_rule.threshold_celsius == contract.max_celsius


@PROPERTY
@given(profile=st.sampled_from(list(StorageProfile)), interval=st.integers(min_value=1, max_value=24 * HOUR))
def test_a_data_gap_is_twice_the_logging_interval(profile: StorageProfile, interval: int) -> None:
    contract = default_contract(
        profile, stability_budget_minutes=240, freeze_sensitive=False, logging_interval_seconds=interval
    )

    assert contract.logging_interval_seconds == interval
    assert contract.max_gap_seconds == 2 * interval


@pytest.mark.parametrize("profile", list(StorageProfile))
def test_items_of_one_profile_share_that_profile(profile: StorageProfile) -> None:
    assert merge_profiles({profile}) is profile


@pytest.mark.parametrize(
    "profiles",
    [
        {StorageProfile.REFRIGERATED, StorageProfile.CONTROLLED_ROOM},
        {StorageProfile.REFRIGERATED, StorageProfile.FROZEN},
        set(StorageProfile),
    ],
)
def test_items_needing_different_storage_cannot_share_a_contract(profiles: set[StorageProfile]) -> None:
    with pytest.raises(ValueError, match="ship them separately"):
        merge_profiles(profiles)


def test_a_shipment_without_items_has_no_storage_profile() -> None:
    with pytest.raises(ValueError, match="storage"):
        merge_profiles(set())


# --- evaluation: readings against a contract ------------------------------------

T0 = datetime.datetime(2026, 3, 2, 8, 0, tzinfo=datetime.UTC)
REFRIGERATED = StorageProfile.REFRIGERATED


def at(minutes: float) -> datetime.datetime:
    return T0 + datetime.timedelta(minutes=minutes)


def readings(*points: tuple[float, float]) -> list[Sample]:
    """Readings from (minute, °C) pairs."""
    return [Sample(at(minute), celsius) for minute, celsius in points]


def every_minute(*runs: tuple[int, float], start: int = 0) -> list[Sample]:
    """One reading a minute: (how many minutes, °C) runs, one after another."""
    points, minute = [], start
    for minutes, celsius in runs:
        for _ in range(minutes):
            points.append((minute, celsius))
            minute += 1
    return readings(*points)


def contract_with(
    *rules: Rule,
    max_gap_minutes: int = 24 * 60,
    mkt_limit: float | None = None,
    mkt_window_minutes: int | None = None,
    freeze_thaw_limit: int | None = None,
) -> Contract:
    """A 2-8 °C contract with only the given rules, and a data-gap limit that stays out of the way."""
    return Contract(
        min_celsius=2.0,
        max_celsius=8.0,
        arming_seconds=0,
        mkt_limit_celsius=mkt_limit,
        mkt_window_seconds=None if mkt_window_minutes is None else mkt_window_minutes * MINUTE,
        freeze_thaw_limit=freeze_thaw_limit,
        logging_interval_seconds=MINUTE,
        max_gap_seconds=max_gap_minutes * MINUTE,
        rules=rules,
    )


def fired(evaluation: Evaluation, key: str) -> list[tuple[datetime.datetime, Severity]]:
    return [(t.at, t.severity) for t in evaluation.triggers if t.key == key]


def classic_mkt(values: list[float]) -> float:
    """USP <1079.2> for equal intervals, written out: ΔH/R = 10 000 K."""
    mean = sum(math.exp(-10_000 / (c + 273.15)) for c in values) / len(values)
    return 10_000 / -math.log(mean) - 273.15


# --- MKT ---------------------------------------------------------------------------


def test_the_published_example_2_2_5_8_8_8_8_at_equal_intervals_has_an_mkt_of_6_25() -> None:
    for step in (1, 5, 60):
        series = readings(*((i * step, c) for i, c in enumerate([2, 2, 5, 8, 8, 8, 8])))

        assert round(mkt(series), 2) == 6.25


def test_mkt_weights_each_reading_by_how_long_it_held() -> None:
    # 2 °C held 3 h, then 8 °C for 2 h: the same as five equal hours 2, 2, 2, 8, 8
    uneven = readings((0, 2.0), (180, 8.0), (240, 8.0))

    assert mkt(uneven) == pytest.approx(classic_mkt([2, 2, 2, 8, 8]), abs=1e-9)


def test_mkt_counts_a_silent_logger_only_up_to_the_hold_limit() -> None:
    # 2 °C and then ten hours without data: with a 1 h limit, it weighs 1 h like each 8 °C hour
    series = readings((0, 2.0), (600, 8.0), (660, 8.0))

    assert mkt(series, max_hold_seconds=HOUR) == pytest.approx(classic_mkt([2, 8, 8]), abs=1e-9)
    assert mkt(series) < mkt(series, max_hold_seconds=HOUR)


def test_mkt_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one reading"):
        mkt([])


TEMPERATURES = st.floats(min_value=-40.0, max_value=60.0, allow_nan=False)
SECONDS = st.integers(min_value=0, max_value=2 * DAY)
SERIES = st.lists(st.tuples(SECONDS, TEMPERATURES), min_size=1, max_size=40).map(
    lambda points: [Sample(T0 + datetime.timedelta(seconds=s), c) for s, c in points]
)


def time_weights(series: list[Sample]) -> list[float]:
    """Each reading holds until the next; the last for as long as the interval before it."""
    ordered = sorted(set(series))
    gaps = [(b.at - a.at).total_seconds() for a, b in pairwise(ordered)]
    weights = [*gaps, gaps[-1]] if gaps else [1.0]
    return weights if sum(weights) else [1.0] * len(ordered)


@PROPERTY
@given(seconds=st.lists(SECONDS, min_size=1, max_size=40), celsius=TEMPERATURES)
def test_the_mkt_of_a_constant_temperature_is_that_temperature(seconds: list[int], celsius: float) -> None:
    series = [Sample(T0 + datetime.timedelta(seconds=s), celsius) for s in seconds]

    assert mkt(series) == pytest.approx(celsius, abs=1e-9)


@PROPERTY
@given(series=SERIES)
def test_mkt_lies_between_the_time_weighted_mean_and_the_warmest_reading(series: list[Sample]) -> None:
    ordered = sorted(set(series))
    weights = time_weights(series)
    mean = sum(w * s.celsius for w, s in zip(weights, ordered, strict=True)) / sum(weights)
    value = mkt(series)

    # warm hours weigh more than cold ones (Arrhenius), so MKT is never below the mean
    assert value >= mean - 1e-9
    assert min(s.celsius for s in series) - 1e-9 <= value <= max(s.celsius for s in series) + 1e-9


# --- single-event and cumulative rules -----------------------------------------------

WARM_10_MIN = Rule("warm 10 min", ABOVE, 8.0, 10 * MINUTE, SINGLE, ALARM)


def test_a_single_event_timer_restarts_when_the_temperature_returns_into_range() -> None:
    # in band 9 min, out 1 min, in band 9 min: never 10 minutes in a row
    evaluation = evaluate(
        contract_with(WARM_10_MIN), every_minute((9, 9.0), (1, 5.0), (9, 9.0), (1, 5.0)), armed_from=T0
    )

    assert evaluation.triggers == ()
    assert evaluation.excursions == ()
    assert evaluation.stability_used_seconds == 18 * MINUTE


def test_a_single_event_rule_fires_when_the_duration_is_reached_and_once_per_period() -> None:
    series = every_minute((15, 9.0), (1, 5.0), (15, 9.0), (1, 5.0))

    evaluation = evaluate(contract_with(WARM_10_MIN), series, armed_from=T0)

    # start of each warm period + 10 min: 0 + 10 and 16 + 10
    assert fired(evaluation, "rule:warm 10 min") == [(at(10), ALARM), (at(26), ALARM)]
    assert [t.detail for t in evaluation.triggers] == ["above 8.0 °C for 10 min (warm 10 min)"] * 2


def test_ten_minutes_in_band_is_enough_even_if_the_next_reading_is_back_in_range() -> None:
    # 9 °C at minutes 0..9 holds until the 5 °C reading at minute 10: ten minutes warm
    evaluation = evaluate(contract_with(WARM_10_MIN), every_minute((10, 9.0), (1, 5.0)), armed_from=T0)

    assert fired(evaluation, "rule:warm 10 min") == [(at(10), ALARM)]


def test_a_cumulative_rule_adds_up_separate_periods_and_never_resets() -> None:
    budget = Rule("budget 15 min", ABOVE, 8.0, 15 * MINUTE, CUMULATIVE, BREACH)
    # warm 9 min, back in range 11 min, warm again from minute 20: the total reaches 15 at minute 26
    series = every_minute((9, 9.0), (11, 5.0), (9, 9.0), (11, 5.0), (30, 9.0))

    evaluation = evaluate(contract_with(budget), series, armed_from=T0)

    assert fired(evaluation, "rule:budget 15 min") == [(at(26), BREACH)]
    assert evaluation.triggers[0].detail == "above 8.0 °C for 15 min in total (budget 15 min)"


def test_thresholds_are_inclusive_8_0_is_above_8_and_2_0_is_below_2() -> None:
    warm = Rule("warm", ABOVE, 8.0, 0, SINGLE, WARNING)
    cold = Rule("cold", BELOW, 2.0, 0, SINGLE, WARNING)
    contract = contract_with(warm, cold)

    on_the_line = evaluate(contract, readings((0, 8.0), (5, 5.0), (10, 2.0), (15, 5.0)), armed_from=T0)
    just_inside = evaluate(contract, readings((0, 7.99), (5, 5.0), (10, 2.01), (15, 5.0)), armed_from=T0)

    assert fired(on_the_line, "rule:warm") == [(at(0), WARNING)]
    assert fired(on_the_line, "rule:cold") == [(at(10), WARNING)]
    assert [(e.direction, e.peak_celsius) for e in on_the_line.excursions] == [(ABOVE, 8.0), (BELOW, 2.0)]
    assert on_the_line.stability_used_seconds == 5 * MINUTE
    assert just_inside.triggers == ()
    assert just_inside.stability_used_seconds == 0


def test_the_hard_ceiling_fires_at_the_first_reading_at_25_c() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)
    series = readings(*((m, 5.0) for m in range(0, 20, 5)), (20, 25.0), (25, 5.0), (30, 24.99), (35, 5.0))

    evaluation = evaluate(contract, series, armed_from=T0)

    hard_ceiling = Trigger("rule:hard ceiling", CRITICAL, at(20), "above 25.0 °C (hard ceiling)")
    assert evaluation.triggers == (hard_ceiling,)
    assert evaluation.excursions == (
        Excursion(ABOVE, at(20), ended_at=at(25), peak_celsius=25.0, duration_seconds=300, triggers=(hard_ceiling,)),
    )


def test_the_stability_budget_warns_at_50_and_80_percent_and_is_breached_at_100_across_excursions() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=False)
    # five-minute logging: 9 °C for 2 h 30, 5 °C for 1 h, 9 °C for 2 h 30, then 5 °C
    warm_then_cool = [(m, 9.0 if m < 150 or 210 <= m < 360 else 5.0) for m in range(0, 425, 5)]

    evaluation = evaluate(contract, readings(*warm_then_cool), armed_from=T0)

    assert [(t.key, t.at, t.severity) for t in evaluation.triggers] == [
        ("rule:early warning, warm", at(30), WARNING),
        ("rule:stability budget 50 %", at(120), WARNING),  # 2 h in total
        ("rule:early warning, warm", at(240), WARNING),  # the second excursion, 30 min in
        ("rule:stability budget 80 %", at(252), WARNING),  # 3 h 12: 2 h 30 + 42 min
        ("rule:stability budget spent", at(300), BREACH),  # 4 h: 2 h 30 + 1 h 30
    ]
    first, second = evaluation.excursions
    assert (first.started_at, first.ended_at, first.duration_seconds) == (at(0), at(150), 150 * MINUTE)
    assert [t.key for t in first.triggers] == ["rule:early warning, warm", "rule:stability budget 50 %"]
    assert (second.started_at, second.ended_at) == (at(210), at(360))
    assert [t.key for t in second.triggers][-1] == "rule:stability budget spent"
    assert evaluation.stability_used_seconds == 5 * HOUR


def test_a_blip_that_fires_no_rule_is_no_excursion_but_a_budget_crossed_in_a_blip_is() -> None:
    budget = Rule("budget 15 min", ABOVE, 8.0, 15 * MINUTE, CUMULATIVE, BREACH)
    contract = contract_with(WARM_10_MIN, budget)
    # two 8-minute warm blips, too short for the 10-minute rule, then a cold one no rule watches
    series = every_minute((8, 9.0), (10, 5.0), (8, 9.0), (10, 5.0), (3, 1.0))

    evaluation = evaluate(contract, series, armed_from=T0)

    # the budget reaches 15 min 7 min into the second blip (minute 18 + 7)
    (excursion,) = evaluation.excursions
    assert (excursion.direction, excursion.started_at, excursion.ended_at) == (ABOVE, at(18), at(26))
    assert [(t.key, t.at) for t in excursion.triggers] == [("rule:budget 15 min", at(25))]
    assert evaluation.stability_used_seconds == 16 * MINUTE


def test_an_excursion_still_out_at_the_last_reading_has_no_end() -> None:
    cold = Rule("cold", BELOW, 2.0, 5 * MINUTE, SINGLE, WARNING)
    evaluation = evaluate(contract_with(cold), every_minute((5, 5.0), (4, 1.5), (4, 0.5)), armed_from=T0)

    (excursion,) = evaluation.excursions
    assert excursion.direction is BELOW
    assert (excursion.started_at, excursion.ended_at) == (at(5), None)
    assert excursion.peak_celsius == 0.5  # the coldest
    assert excursion.duration_seconds == 7 * MINUTE  # to the last reading
    assert [t.at for t in excursion.triggers] == [at(10)]


# --- MKT limit ------------------------------------------------------------------------


def test_the_rolling_mkt_breaches_once_the_window_is_warm_and_again_after_recovering() -> None:
    contract = contract_with(mkt_limit=8.0, mkt_window_minutes=60)
    # 9 °C for 2 h, 2 °C for 4 h, 9 °C for 2 h: five-minute logging
    series = readings(*((m, 9.0 if m < 120 or m >= 360 else 2.0) for m in range(0, 480, 5)))

    evaluation = evaluate(contract, series, armed_from=T0)

    # judged once the readings span the hour; warm again, the hour's MKT passes 8 °C at 6 h 45,
    # when 10 of its 12 readings are at 9 °C (8.17 °C by the equal-interval formula; 9 of 12: 7.73)
    assert fired(evaluation, "mkt") == [(at(60), BREACH), (at(405), BREACH)]
    assert classic_mkt([2.0] * 2 + [9.0] * 10) > 8.0 > classic_mkt([2.0] * 3 + [9.0] * 9)
    assert [t.detail for t in evaluation.triggers] == [
        "MKT 9.0 °C over 1 h 0 min > 8.0 °C",
        "MKT 8.2 °C over 1 h 0 min > 8.0 °C",
    ]
    assert evaluation.mkt_celsius == pytest.approx(9.0)


def test_a_warm_first_reading_is_no_mkt_breach_and_mkt_clears_no_excursion() -> None:
    contract = contract_with(Rule("warm", ABOVE, 8.0, 0, SINGLE, WARNING), mkt_limit=8.0, mkt_window_minutes=60)
    series = readings((0, 12.0), *((m, 5.0) for m in range(5, 180, 5)))

    evaluation = evaluate(contract, series, armed_from=T0)

    assert fired(evaluation, "mkt") == []
    assert evaluation.mkt_celsius == pytest.approx(5.0)
    # the 12 °C reading's excursion stands, whatever the MKT says afterwards
    assert [(e.direction, e.started_at, e.ended_at) for e in evaluation.excursions] == [(ABOVE, at(0), at(5))]


# --- freeze-thaw ----------------------------------------------------------------------


def test_one_freeze_thaw_cycle_is_an_alarm_for_a_freeze_sensitive_vaccine() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)
    series = readings((0, 5.0), (5, -1.0), (10, 0.5), (15, 3.0), (20, 5.0))

    evaluation = evaluate(contract, series, armed_from=T0)

    assert evaluation.freeze_thaw_cycles == 1
    assert evaluation.triggers == (
        Trigger("freeze_thaw", ALARM, at(15), "1 freeze-thaw cycle, more than the limit of 0"),
    )


def test_noise_around_zero_is_no_freeze_thaw_cycle() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)
    # never at or below -0.5 °C, or never back at 2 °C after it
    series = readings((0, 0.4), (5, -0.4), (10, 1.9), (15, -0.3), (20, 1.0), (25, -0.6), (30, 1.9))

    evaluation = evaluate(contract, series, armed_from=T0)

    assert evaluation.freeze_thaw_cycles == 0
    assert fired(evaluation, "freeze_thaw") == []


def test_the_freeze_thaw_limit_fires_once_when_exceeded() -> None:
    contract = contract_with(freeze_thaw_limit=1)
    series = readings(*((m, -1.0 if m % 10 == 0 else 4.0) for m in range(0, 60, 5)))

    evaluation = evaluate(contract, series, armed_from=T0)

    assert evaluation.freeze_thaw_cycles == 6
    assert fired(evaluation, "freeze_thaw") == [(at(15), ALARM)]  # the second thaw
    assert evaluation.triggers[0].detail == "2 freeze-thaw cycles, more than the limit of 1"


# --- arming and data gaps --------------------------------------------------------------


def test_readings_before_the_arming_time_are_neither_evaluated_nor_counted() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)
    armed_from = at(10)
    on_the_dock = readings(*((m, 30.0) for m in range(-120, 10)), (9.5, -5.0))
    in_transit = readings(*((m, 5.0) for m in range(10, 60, 5)))

    evaluation = evaluate(contract, on_the_dock + in_transit, armed_from=armed_from)

    assert evaluation == evaluate(contract, in_transit, armed_from=armed_from)
    assert evaluation.triggers == ()
    assert (evaluation.stability_used_seconds, evaluation.freeze_thaw_cycles) == (0, 0)
    assert evaluation.mkt_celsius == pytest.approx(5.0)


def test_a_reading_at_the_arming_time_counts() -> None:
    ceiling = Rule("ceiling", ABOVE, 25.0, 0, SINGLE, CRITICAL)

    evaluation = evaluate(contract_with(ceiling), readings((10, 26.0), (15, 5.0)), armed_from=at(10))

    assert fired(evaluation, "rule:ceiling") == [(at(10), CRITICAL)]


def test_each_data_gap_fires_once_at_the_last_reading_plus_the_gap_limit() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)  # gap: 10 min
    series = readings(*((m, 5.0) for m in (0, 5, 10, 15, 20, 25, 30, 90, 95, 100)))

    evaluation = evaluate(contract, series, armed_from=T0, until=at(200))

    assert fired(evaluation, "gap") == [(at(40), WARNING), (at(110), WARNING)]
    assert [t.detail for t in evaluation.triggers] == [
        "no reading for 10 min after 2026-03-02 08:30:00 UTC",
        "no reading for 10 min after 2026-03-02 09:40:00 UTC",
    ]
    # the same gap is the same trigger whether or not the next reading has arrived yet
    assert evaluate(contract, series[:7], armed_from=T0, until=at(60)).triggers == evaluation.triggers[:1]


def test_no_gap_within_the_limit_and_no_trailing_gap_without_an_until() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)
    series = readings((0, 5.0), (10, 5.0), (20, 5.0))

    assert evaluate(contract, series, armed_from=T0, until=at(30)).triggers == ()
    assert evaluate(contract, series, armed_from=T0).triggers == ()


def test_a_logger_silent_since_arming_is_a_data_gap() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)

    silent = evaluate(contract, [], armed_from=T0, until=at(60))
    late_start = evaluate(contract, readings((30, 5.0), (35, 5.0)), armed_from=T0)

    assert silent == Evaluation((), (silent.triggers[0],), None, 0, 0, None)
    assert fired(silent, "gap") == [(at(10), WARNING)]
    assert fired(late_start, "gap") == [(at(10), WARNING)]
    assert evaluate(contract, [], armed_from=T0, until=at(10)).triggers == ()


def test_time_without_readings_counts_only_up_to_the_gap_limit() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)
    # 9 °C, then three hours of silence, then 5 °C: ten minutes of evidence, not three hours
    evaluation = evaluate(contract, readings((0, 9.0), (180, 5.0)), armed_from=T0)

    assert evaluation.stability_used_seconds == 10 * MINUTE
    assert fired(evaluation, "rule:early warning, warm") == []
    assert fired(evaluation, "gap") == [(at(10), WARNING)]


# --- readings ---------------------------------------------------------------------------


def test_a_reading_needs_a_time_zone_and_a_real_temperature() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Sample(datetime.datetime(2026, 3, 2, 8, 0), 5.0)
    with pytest.raises(ValueError, match="not a temperature"):
        Sample(T0, math.nan)
    with pytest.raises(ValueError, match="not a temperature"):
        Sample(T0, -300.0)
    with pytest.raises(ValueError, match="time zone"):
        evaluate(contract_with(), [], armed_from=datetime.datetime(2026, 3, 2))


def test_a_reading_in_another_time_zone_is_the_same_reading_in_utc() -> None:
    cet = datetime.timezone(datetime.timedelta(hours=1))

    assert Sample(datetime.datetime(2026, 3, 2, 9, 0, tzinfo=cet), 5) == Sample(T0, 5.0)
    assert Sample(datetime.datetime(2026, 3, 2, 9, 0, tzinfo=cet), 5).at.tzinfo is datetime.UTC


# --- properties: event time, not arrival time --------------------------------------------

BUSY = Contract(
    min_celsius=2.0,
    max_celsius=8.0,
    arming_seconds=0,
    mkt_limit_celsius=8.0,
    mkt_window_seconds=30 * MINUTE,
    freeze_thaw_limit=0,
    logging_interval_seconds=5 * MINUTE,
    max_gap_seconds=10 * MINUTE,
    rules=(
        Rule("warm", ABOVE, 8.0, 10 * MINUTE, SINGLE, WARNING),
        Rule("cold", BELOW, 2.0, 5 * MINUTE, SINGLE, ALARM),
        Rule("budget", ABOVE, 8.0, 20 * MINUTE, CUMULATIVE, BREACH),
        Rule("ceiling", ABOVE, 25.0, 0, SINGLE, CRITICAL),
        Rule("frozen", BELOW, -0.5, 0, SINGLE, CRITICAL),
    ),
)
ON_THE_LINES = st.sampled_from([-1.0, -0.5, 0.0, 1.9, 2.0, 5.0, 8.0, 9.0, 25.0, 30.0])
TRIP = st.lists(
    st.tuples(st.integers(min_value=0, max_value=4 * HOUR), st.one_of(ON_THE_LINES, TEMPERATURES)), max_size=60
).map(lambda points: [Sample(T0 + datetime.timedelta(seconds=s), c) for s, c in points])
ARMED_FROM = T0 + datetime.timedelta(minutes=5)
UNTIL = T0 + datetime.timedelta(hours=5)


@PROPERTY
@given(trip=TRIP, data=st.data())
def test_the_same_readings_in_any_order_delivered_any_number_of_times_evaluate_the_same(
    trip: list[Sample], data: st.DataObject
) -> None:
    redelivered = data.draw(st.lists(st.sampled_from(trip), max_size=30)) if trip else []
    delivered = data.draw(st.permutations(trip + redelivered))

    assert evaluate(BUSY, delivered, armed_from=ARMED_FROM, until=UNTIL) == evaluate(
        BUSY, trip, armed_from=ARMED_FROM, until=UNTIL
    )


@PROPERTY
@given(trip=TRIP, data=st.data())
def test_a_trigger_once_raised_is_raised_identically_when_later_readings_arrive(
    trip: list[Sample], data: st.DataObject
) -> None:
    # so alerts and ledger entries can be keyed by (key, at) and never rewritten
    full = evaluate(BUSY, trip, armed_from=ARMED_FROM)
    cut = data.draw(st.sampled_from([s.at for s in trip] or [T0]))

    so_far = evaluate(BUSY, [s for s in trip if s.at <= cut], armed_from=ARMED_FROM)

    assert so_far.triggers == tuple(t for t in full.triggers if t.at <= cut)


@PROPERTY
@given(trip=TRIP)
def test_the_evaluation_adds_up(trip: list[Sample]) -> None:
    evaluation = evaluate(BUSY, trip, armed_from=ARMED_FROM, until=UNTIL)
    armed = sorted({s for s in trip if s.at >= ARMED_FROM})

    # time at or above 8 °C, each reading holding until the next but no more than the gap limit
    held = [min((b.at - a.at).total_seconds(), BUSY.max_gap_seconds) for a, b in pairwise(armed)]
    assert evaluation.stability_used_seconds == int(sum(h for h, s in zip(held, armed, strict=False) if s.celsius >= 8))
    assert evaluation.last_reading_at == (armed[-1].at if armed else None)
    assert list(evaluation.triggers) == sorted(evaluation.triggers, key=lambda t: t.at)
    # the rolling MKT, kept with running sums, is the MKT of the last window's readings
    if armed:
        window = [s for s in armed if s.at > armed[-1].at - datetime.timedelta(minutes=30)]
        assert evaluation.mkt_celsius == pytest.approx(mkt(window, max_hold_seconds=BUSY.max_gap_seconds), abs=1e-9)
    else:
        assert evaluation.mkt_celsius is None
    for before, after in zip(evaluation.excursions, evaluation.excursions[1:], strict=False):
        assert before.ended_at is not None
        assert before.ended_at <= after.started_at
    for excursion in evaluation.excursions:
        assert excursion.triggers
        assert all(t.key.startswith("rule:") and t in evaluation.triggers for t in excursion.triggers)
        outside = excursion.peak_celsius >= 8.0 if excursion.direction is ABOVE else excursion.peak_celsius <= 2.0
        assert outside


# --- a month of readings -------------------------------------------------------------------
# How fast this runs is measured by `make bench`, not asserted here.


def test_thirty_days_of_five_minute_readings_roll_the_mkt_window_over_all_of_them() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)
    # a day-night swing between 3 and 9 °C, with the 24 h MKT window rolling over all of it
    month = [Sample(at(5 * i), 6.0 + 3.0 * math.sin(i * 2 * math.pi / 288)) for i in range(30 * 24 * 12)]
    evaluation = evaluate(contract, month, armed_from=T0, until=month[-1].at)
    assert len(month) == 8640
    assert evaluation.last_reading_at == month[-1].at
    assert fired(evaluation, "rule:stability budget spent")
    last_day = [sample for sample in month if sample.at > month[-1].at - datetime.timedelta(hours=24)]
    assert evaluation.mkt_celsius is not None
    assert abs(evaluation.mkt_celsius - mkt(last_day)) < 0.05


def test_calm_values_are_strictly_inside_the_range_and_in_no_rules_band() -> None:
    assert [c for c in (-1.0, -0.5, 0.0, 1.9, 2.0, 2.01, 5.0, 7.99, 8.0, 9.0, 25.0) if calm(BUSY, c)] == [
        2.01,
        5.0,
        7.99,
    ]
    frozen = default_contract(StorageProfile.FROZEN, stability_budget_minutes=0, freeze_sensitive=False)
    assert calm(frozen, -20.0)
    assert not calm(frozen, -10.0)


@PROPERTY
@given(trip=TRIP, celsius=st.floats(min_value=2.0, max_value=8.0), later=st.integers(min_value=1, max_value=HOUR))
def test_a_calm_reading_starts_no_excursion_and_fires_no_rule_at_its_own_time(
    trip: list[Sample], celsius: float, later: int
) -> None:
    # what lets its evaluation wait a few seconds (iot_ingest.evaluation.evaluation_request)
    assume(calm(BUSY, celsius))
    reading = Sample(max((s.at for s in trip), default=T0) + datetime.timedelta(seconds=later), celsius)
    before = evaluate(BUSY, trip, armed_from=ARMED_FROM)
    after = evaluate(BUSY, [*trip, reading], armed_from=ARMED_FROM)

    assert all(e.started_at < reading.at for e in after.excursions)
    new = set(after.triggers) - set(before.triggers)
    assert all(t.at <= reading.at for t in new if t.key.startswith("rule:"))


@PROPERTY
@given(
    trip=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=4 * HOUR),
            st.one_of(st.floats(min_value=2.0, max_value=8.0), ON_THE_LINES, TEMPERATURES),
        ),
        max_size=60,
    ).map(lambda points: [Sample(T0 + datetime.timedelta(seconds=s), c) for s, c in points]),
    contract=st.sampled_from(
        [
            BUSY,
            default_contract(StorageProfile.REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True),
            # rules whose bands reach inside the range: a reading can be in band and not an excursion
            dataclasses.replace(
                BUSY,
                rules=(
                    *BUSY.rules,
                    Rule("warmish", ABOVE, 6.5, 15 * MINUTE, SINGLE, WARNING),
                    Rule("warmish in total", ABOVE, 7.0, 30 * MINUTE, CUMULATIVE, WARNING),
                    Rule("coolish", BELOW, 3.0, 0, SINGLE, WARNING),
                ),
            ),
        ]
    ),
)
def test_the_short_way_for_calm_readings_after_calm_ones_judges_as_the_rules_do(
    trip: list[Sample], contract: Contract
) -> None:
    def in_band(rule: Rule, celsius: float) -> bool:
        return celsius >= rule.threshold_celsius if rule.band == ABOVE else celsius <= rule.threshold_celsius

    def in_no_band_inside_the_range(celsius: float) -> bool:  # calm, as its docstring defines it
        inside = contract.min_celsius < celsius < contract.max_celsius
        return inside and not any(in_band(rule, celsius) for rule in contract.rules)

    assert all(calm(contract, sample.celsius) == in_no_band_inside_the_range(sample.celsius) for sample in trip)
    quick = evaluate(contract, trip, armed_from=ARMED_FROM, until=UNTIL)
    with mock.patch.object(coldchain, "calm_bounds", return_value=(math.inf, -math.inf)):  # nothing is calm
        assert evaluate(contract, trip, armed_from=ARMED_FROM, until=UNTIL) == quick


@PROPERTY
@given(trip=TRIP, data=st.data())
def test_a_monitor_fed_a_few_readings_at_a_time_says_what_evaluate_says_of_them_all(
    trip: list[Sample], data: st.DataObject
) -> None:
    ordered = sorted(trip)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(ordered)), max_size=5)))
    monitor = Monitor(BUSY, armed_from=ARMED_FROM)
    for start, end in pairwise([0, *cuts, len(ordered)]):
        if data.draw(st.booleans(), label="as microseconds"):  # as the database hands them over
            monitor.feed_micros([(micros(s.at), s.celsius) for s in ordered[start:end]])
        else:
            monitor.feed(ordered[start:end])
        fed = ordered[:end]
        assert monitor.evaluation(until=UNTIL) == evaluate(BUSY, fed, armed_from=ARMED_FROM, until=UNTIL)
        assert monitor.last == (max((s for s in fed if s.at >= ARMED_FROM), default=None))


@PROPERTY
@given(trip=TRIP, late=TRIP, data=st.data())
def test_a_monitor_rewound_to_a_checkpoint_before_late_readings_says_what_evaluate_says_of_them_all(
    trip: list[Sample], late: list[Sample], data: st.DataObject
) -> None:
    # what a worker does when readings committed out of order (iot_ingest.evaluation._watch)
    ordered = sorted(trip)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(ordered)), min_size=1, max_size=5)))
    monitor = Monitor(BUSY, armed_from=ARMED_FROM)
    checkpoints = [(0, monitor.checkpoint())]
    for start, end in pairwise([0, *cuts, len(ordered)]):
        monitor.feed(ordered[start:end])
        checkpoints.append((end, monitor.checkpoint()))
    fed, checkpoint = data.draw(st.sampled_from(checkpoints))
    before = monitor.evaluation(until=UNTIL)

    assert monitor.rewind(checkpoint)
    assert monitor.last == checkpoint.last
    assert monitor.evaluation(until=UNTIL) == evaluate(BUSY, ordered[:fed], armed_from=ARMED_FROM, until=UNTIL)

    def beyond(sample: Sample) -> bool:  # what the monitor takes after the checkpoint: later in (time, value) order
        return checkpoint.last is None or sample > checkpoint.last

    arrived = sorted({*ordered, *filter(beyond, late)})
    monitor.feed(filter(beyond, arrived))
    assert monitor.evaluation(until=UNTIL) == evaluate(BUSY, arrived, armed_from=ARMED_FROM, until=UNTIL)
    # the same checkpoint serves again, and the readings fed before give the same verdict as the first time
    assert monitor.rewind(checkpoint)
    monitor.feed(filter(beyond, ordered))
    assert monitor.evaluation(until=UNTIL) == before


def test_a_monitor_cannot_rewind_past_readings_its_mkt_window_has_shed() -> None:
    contract = default_contract(REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True)
    week = [Sample(at(i), 5.0 + (i % 7) / 2) for i in range(7 * 24 * 60)]  # a reading a minute, a 24 h window
    monitor = Monitor(contract, armed_from=T0)
    monitor.feed(week[:100])
    early = monitor.checkpoint()
    monitor.feed(week[100:-100])
    late = monitor.checkpoint()
    monitor.feed(week[-100:])

    assert not monitor.rewind(early)  # days of readings have left the window since, and the monitor let them go
    assert monitor.evaluation() == evaluate(contract, week, armed_from=T0)  # and nothing changed
    assert monitor.rewind(late)
    monitor.feed(week[-100:])
    assert monitor.evaluation() == evaluate(contract, week, armed_from=T0)


def test_a_monitor_refuses_a_reading_before_its_last_and_takes_nothing_of_that_call() -> None:
    monitor = Monitor(BUSY, armed_from=ARMED_FROM)
    monitor.feed([Sample(T0 + datetime.timedelta(hours=1), 5.0), Sample(T0 + datetime.timedelta(hours=1), 5.0)])
    before = monitor.evaluation()
    with pytest.raises(OutOfOrder):
        monitor.feed([Sample(T0 + datetime.timedelta(hours=2), 9.0), Sample(T0 + datetime.timedelta(minutes=59), 5.0)])
    with pytest.raises(OutOfOrder):
        monitor.feed([Sample(T0 + datetime.timedelta(hours=1), 4.9)])  # same instant, sorts before
    assert monitor.evaluation() == before
    monitor.feed([Sample(T0 + datetime.timedelta(hours=1), 5.0), Sample(T0 + datetime.timedelta(hours=1), 5.1)])
    assert monitor.last == Sample(T0 + datetime.timedelta(hours=1), 5.1)


@pytest.mark.parametrize("celsius", [math.nan, math.inf, -273.15])
def test_a_monitor_refuses_a_value_that_is_no_temperature_and_takes_nothing_of_that_call(celsius: float) -> None:
    monitor = Monitor(BUSY, armed_from=ARMED_FROM)
    hour = micros(T0 + datetime.timedelta(hours=1))
    with pytest.raises(ValueError, match="is not a temperature"):
        monitor.feed_micros([(hour, 5.0), (hour + 60_000_000, celsius)])
    assert monitor.last is None
    assert monitor.evaluation() == evaluate(BUSY, [], armed_from=ARMED_FROM)
