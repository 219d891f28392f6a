"""Tests for traceability.coldchain: default contracts and profile merging.

Pure tests: no Django, no database. Expected contracts are written out from
DESIGN.md ("Temperature contracts") and the sources it cites, not derived
from the code under test.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traceability.coldchain import (
    Band,
    Contract,
    Mode,
    Rule,
    Severity,
    StorageProfile,
    default_contract,
    merge_profiles,
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
