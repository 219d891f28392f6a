"""The temperature chart's geometry: buckets of readings, the contract's range, excursions, axes."""

from __future__ import annotations

import datetime
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from traceability.pages import charts
from traceability.pages.charts import Bucket, Span, chart_build, downsample, time_ticks

T0 = datetime.datetime(2026, 3, 1, 6, 0, tzinfo=datetime.UTC)
MINUTE = datetime.timedelta(minutes=1)
HOUR = datetime.timedelta(hours=1)


def every_five_minutes(values: list[float]) -> list[tuple[datetime.datetime, float]]:
    return [(T0 + 5 * MINUTE * i, v) for i, v in enumerate(values)]


# downsample ------------------------------------------------------------------------------


def test_few_readings_stay_as_they_are() -> None:
    readings = every_five_minutes([5.0, 6.0, 7.5])
    buckets = downsample(readings, start=T0, end=T0 + 10 * MINUTE, points=300)
    assert buckets == [Bucket(at, v, v, v, 1) for at, v in readings]


def test_many_readings_become_buckets_of_min_max_and_mean() -> None:
    readings = every_five_minutes([4.0, 6.0] * 300)  # 50 hours
    buckets = downsample(readings, start=T0, end=readings[-1][0], points=100)
    assert len(buckets) == 100
    assert sum(b.count for b in buckets) == 600
    assert all((b.low, b.high, b.mean) == (4.0, 6.0, 5.0) for b in buckets)
    assert [b.at for b in buckets] == sorted(b.at for b in buckets)


def test_a_bucket_stands_at_the_mean_time_of_its_readings() -> None:
    [bucket] = downsample([(T0, 1.0), (T0 + HOUR, 3.0)], start=T0, end=T0 + HOUR, points=1)
    assert bucket == Bucket(T0 + HOUR / 2, 1.0, 3.0, 2.0, 2)


def test_the_end_is_included_and_readings_outside_are_ignored() -> None:
    readings = [(T0 - MINUTE, 99.0), (T0, 1.0), (T0 + HOUR, 2.0), (T0 + HOUR + MINUTE, 99.0)]
    buckets = downsample(readings, start=T0, end=T0 + HOUR, points=4)
    assert [(b.at, b.mean) for b in buckets] == [(T0, 1.0), (T0 + HOUR, 2.0)]


def test_empty_stretches_leave_no_bucket() -> None:
    readings = [(T0, 5.0), (T0 + 10 * HOUR, 6.0)]
    assert len(downsample(readings, start=T0, end=T0 + 10 * HOUR, points=300)) == 2


def test_one_instant_is_one_bucket() -> None:
    assert downsample([(T0, 5.0), (T0, 7.0)], start=T0, end=T0, points=10) == [Bucket(T0, 5.0, 7.0, 6.0, 2)]


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one point"):
        downsample([], start=T0, end=T0 + HOUR, points=0)
    with pytest.raises(ValueError, match=r"ends .* before it starts"):
        downsample([], start=T0 + HOUR, end=T0, points=10)


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=7 * 86400), st.floats(min_value=-80, max_value=60)), max_size=400
    ),
    st.integers(min_value=1, max_value=300),
)
def test_buckets_keep_every_reading_and_the_extremes(offsets: list[tuple[int, float]], points: int) -> None:
    readings = [(T0 + datetime.timedelta(seconds=s), v) for s, v in offsets]
    end = T0 + datetime.timedelta(days=7)
    buckets = downsample(readings, start=T0, end=end, points=points)
    assert len(buckets) <= points
    assert sum(b.count for b in buckets) == len(readings)
    assert all(b.low - 1e-9 <= b.mean <= b.high + 1e-9 for b in buckets)
    assert all(T0 <= b.at <= end for b in buckets)
    if readings:
        assert min(b.low for b in buckets) == min(v for _, v in readings)
        assert max(b.high for b in buckets) == max(v for _, v in readings)


# chart_build ----------------------------------------------------------------------------


def build(buckets: list[Bucket], **kwargs: object) -> charts.Chart:
    options: dict[str, object] = {"start": T0, "end": T0 + 10 * HOUR, "band": (2.0, 8.0)} | kwargs
    return chart_build(buckets, **options)  # type: ignore[arg-type]


def y_of(chart: charts.Chart, celsius: float) -> float:
    """Where a temperature lies, read back from the axis ticks (each tick's label is its value)."""
    ticks = {float(t.label.removesuffix(" °C")): t.position for t in chart.y_ticks}
    (v1, y1), (v2, y2) = sorted(ticks.items())[:2]
    return y1 + (celsius - v1) * (y2 - y1) / (v2 - v1)


def test_the_range_is_a_band_between_its_limits() -> None:
    chart = build([Bucket(T0 + HOUR, 5.0, 5.0, 5.0, 1), Bucket(T0 + 2 * HOUR, 6.0, 6.0, 6.0, 1)])
    assert chart.band is not None
    assert chart.band.y == pytest.approx(y_of(chart, 8.0), abs=0.1)
    assert chart.band.bottom == pytest.approx(y_of(chart, 2.0), abs=0.1)
    assert (chart.band.x, chart.band.width) == (chart.plot.x, chart.plot.width)


def test_the_axis_covers_readings_and_range_on_round_values() -> None:
    chart = build([Bucket(T0 + HOUR, -1.2, 14.7, 6.0, 12)])
    assert chart.low <= -1.2
    assert chart.high >= 14.7
    values = [float(t.label.removesuffix(" °C")) for t in chart.y_ticks]
    assert values == [-5, 0, 5, 10, 15, 20]  # whole steps of 1, 2 or 5 times a power of ten
    assert [t.label for t in build([Bucket(T0 + HOUR, 5.0, 9.5, 6.0, 12)]).y_ticks] == [
        "0 °C",
        "2 °C",
        "4 °C",
        "6 °C",
        "8 °C",
        "10 °C",
        "12 °C",
    ]
    positions = [t.position for t in chart.y_ticks]
    assert positions == sorted(positions, reverse=True)  # warmer is higher up
    assert all(chart.plot.y <= p <= chart.plot.bottom for p in positions)


def test_frozen_goods_get_a_frozen_axis() -> None:
    chart = build([Bucket(T0 + HOUR, -21.0, -19.0, -20.0, 3)], band=(-25.0, -15.0))
    assert chart.low <= -25.0
    assert chart.high >= -15.0
    assert chart.high < 0


def test_excursions_are_shaded_over_their_time() -> None:
    above = Span(T0 + 2 * HOUR, T0 + 4 * HOUR, "above", 9.5)
    ongoing = Span(T0 + 9 * HOUR, None, "below", 1.0)
    chart = build([Bucket(T0 + HOUR, 5.0, 5.0, 5.0, 1)], excursions=[above, ongoing])
    first, second = chart.excursions
    per_hour = chart.plot.width / 10
    assert first.span is above
    assert first.box.x == pytest.approx(chart.plot.x + 2 * per_hour, abs=0.1)
    assert first.box.width == pytest.approx(2 * per_hour, abs=0.2)
    assert (first.box.y, first.box.height) == (chart.plot.y, chart.plot.height)
    assert second.box.right == pytest.approx(chart.plot.right, abs=0.1)  # still going: to the chart's end


def test_a_moment_out_of_range_is_still_visible() -> None:
    blip = Span(T0 + 2 * HOUR, T0 + 2 * HOUR, "above", 12.0)
    [mark] = build([], excursions=[blip]).excursions
    assert mark.box.width == charts.MIN_MARK


def test_a_gap_in_the_readings_breaks_the_line() -> None:
    morning = [Bucket(T0 + 5 * MINUTE * i, 5.0, 5.0, 5.0, 1) for i in range(12)]
    evening = [Bucket(T0 + 6 * HOUR + 5 * MINUTE * i, 6.0, 6.5, 6.2, 2) for i in range(12)]
    chart = build(morning + evening, max_gap_seconds=600)
    assert len(chart.lines) == 2
    assert len(chart.envelopes) == 2
    assert all(path.startswith("M") and path.count("L") == 11 for path in chart.lines)
    assert all(path.endswith(" Z") for path in chart.envelopes)
    assert chart.dots == ()


def test_a_lone_reading_is_a_dot() -> None:
    chart = build([Bucket(T0 + 5 * HOUR, 5.0, 5.0, 5.0, 1)])
    assert chart.lines == ()
    [(x, y)] = chart.dots
    assert x == pytest.approx(chart.plot.x + chart.plot.width / 2, abs=0.1)
    assert y == pytest.approx(y_of(chart, 5.0), abs=0.1)


def test_every_coordinate_is_inside_the_canvas() -> None:
    buckets = [Bucket(T0 + 10 * MINUTE * i, 2.0 + i % 9, 3.0 + i % 9, 2.5 + i % 9, 3) for i in range(60)]
    chart = build(buckets)
    numbers = [float(n) for path in chart.lines + chart.envelopes for n in re.findall(r"-?[\d.]+", path)]
    assert numbers
    assert all(0 <= n <= charts.WIDTH for n in numbers)
    assert all(chart.plot.y <= y <= chart.plot.bottom for y in numbers[1::2])


# time ticks ------------------------------------------------------------------------------


def test_a_day_has_hourly_ticks_without_dates() -> None:
    ticks = time_ticks(T0 + 7 * MINUTE, T0 + 7 * MINUTE + 12 * HOUR)
    assert [label for _, label in ticks] == ["08:00", "10:00", "12:00", "14:00", "16:00", "18:00"]


def test_midnight_and_long_charts_carry_the_date() -> None:
    assert [label for _, label in time_ticks(T0 + 15 * HOUR, T0 + 21 * HOUR)] == [
        "21:00",
        "22:00",
        "23:00",
        "03-02 00:00",
        "01:00",
        "02:00",
        "03:00",
    ]
    week = time_ticks(T0, T0 + datetime.timedelta(days=20))
    assert 2 <= len(week) <= charts.MAX_TICKS
    assert all(re.fullmatch(r"\d\d-\d\d \d\d:\d\d", label) for _, label in week)


@given(st.integers(min_value=60, max_value=400 * 86400))
@example(420)  # 7 one-minute steps from a round start: 8 round times, both ends included (found by Hypothesis)
def test_there_are_never_too_many_time_ticks(seconds: int) -> None:
    ticks = time_ticks(T0, T0 + datetime.timedelta(seconds=seconds))
    assert 1 <= len(ticks) <= charts.MAX_TICKS
    assert all(T0 <= at <= T0 + datetime.timedelta(seconds=seconds) for at, _ in ticks)
