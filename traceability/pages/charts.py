"""A shipment's temperature chart as plain geometry, for a server-rendered SVG (templates/logistics/_chart.html).

No Django here: ``downsample`` turns readings into at most ``points`` buckets
(min, max and mean of each), and ``chart_build`` places buckets, the
contract's range and the excursions on a canvas with labelled axes. The
template draws what it gets; every coordinate is already a number in the
SVG's ``viewBox``.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 280
# Room for the axis labels: left for °C, bottom for times.
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 36
# Time steps for the x axis, in seconds: at most MAX_TICKS of the smallest that fits.
TIME_STEPS = (
    60,
    5 * 60,
    10 * 60,
    15 * 60,
    30 * 60,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
)
MAX_TICKS = 7
MIN_MARK = 3.0  # an excursion of a moment is still a visible mark
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Bucket:
    """Readings that fell into one slice of time: when (their mean time), lowest, highest, mean, how many."""

    at: datetime.datetime
    low: float
    high: float
    mean: float
    count: int


def downsample(
    readings: Iterable[tuple[datetime.datetime, float]],
    *,
    start: datetime.datetime,
    end: datetime.datetime,
    points: int,
) -> list[Bucket]:
    """At most ``points`` buckets of equal length over [start, end], in time order; empty slices are left out.

    A bucket stands at the mean time of its readings, so a bucket of one
    reading stands exactly at that reading. Readings outside [start, end] are
    ignored.
    """
    if points < 1:
        raise ValueError("a chart needs at least one point")
    if end < start:
        raise ValueError(f"the chart ends ({end.isoformat()}) before it starts ({start.isoformat()})")
    span = (end - start).total_seconds()
    width = span / points if span else 1.0
    slices: dict[int, list[tuple[float, float]]] = {}
    for at, value in readings:
        offset = (at - start).total_seconds()
        if 0 <= offset <= span:
            slices.setdefault(min(int(offset // width), points - 1), []).append((offset, value))
    buckets = []
    for index in sorted(slices):
        found = slices[index]
        values = [value for _offset, value in found]
        mean_offset = math.fsum(offset for offset, _value in found) / len(found)
        buckets.append(
            Bucket(
                at=start + datetime.timedelta(seconds=mean_offset),
                low=min(values),
                high=max(values),
                mean=math.fsum(values) / len(values),
                count=len(values),
            )
        )
    return buckets


@dataclass(frozen=True)
class Span:
    """An excursion to mark: from ``start`` to ``end`` (None: still going), above or below the range."""

    start: datetime.datetime
    end: datetime.datetime | None
    direction: str
    peak_celsius: float


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return round(self.x + self.width, 1)

    @property
    def bottom(self) -> float:
        return round(self.y + self.height, 1)


@dataclass(frozen=True)
class Mark:
    """An excursion's shaded box, with the excursion it stands for."""

    box: Box
    span: Span


@dataclass(frozen=True)
class Tick:
    position: float  # x for the time axis, y for the temperature axis
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot: Box  # the area inside the axes
    band: Box | None  # the contract's range, shaded
    excursions: tuple[Mark, ...]
    envelopes: tuple[str, ...]  # SVG path data: the min..max area of each unbroken run of buckets
    lines: tuple[str, ...]  # SVG path data: the mean of each unbroken run
    dots: tuple[tuple[float, float], ...]  # a run of one bucket is a dot, not a line
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    low: float  # the temperature axis runs from low to high °C
    high: float


def chart_build(
    buckets: Sequence[Bucket],
    *,
    start: datetime.datetime,
    end: datetime.datetime,
    band: tuple[float, float] | None,
    excursions: Sequence[Span] = (),
    max_gap_seconds: float = 0.0,
) -> Chart:
    """Places the buckets, the contract's range (``band``: min and max °C) and the excursions on the canvas.

    The line breaks where consecutive buckets lie further apart than
    ``max_gap_seconds`` (and than two buckets' width): time without readings
    is no evidence of any temperature, so it is not drawn as one. An
    excursion still going runs to ``end``.
    """
    if end <= start:
        end = start + datetime.timedelta(minutes=1)
    plot = Box(LEFT, TOP, WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM)
    low, high, step = temperature_axis(buckets, band)
    seconds = (end - start).total_seconds()

    def x(at: datetime.datetime) -> float:
        fraction = min(max((at - start).total_seconds() / seconds, 0.0), 1.0)
        return round(plot.x + fraction * plot.width, 1)

    def y(celsius: float) -> float:
        return round(plot.y + (high - celsius) / (high - low) * plot.height, 1)

    band_box = None
    if band is not None:
        band_box = Box(plot.x, y(band[1]), plot.width, round(y(band[0]) - y(band[1]), 1))
    marks = tuple(
        Mark(Box(x(span.start), plot.y, max(round(x(span.end or end) - x(span.start), 1), MIN_MARK), plot.height), span)
        for span in excursions
    )
    envelopes, lines, dots = [], [], []
    for run in _runs(buckets, max(max_gap_seconds, 2 * seconds / max(len(buckets), 1))):
        if len(run) == 1:
            dots.append((x(run[0].at), y(run[0].mean)))
            continue
        lines.append(_path([(x(b.at), y(b.mean)) for b in run]))
        edge = [(x(b.at), y(b.high)) for b in run] + [(x(b.at), y(b.low)) for b in reversed(run)]
        envelopes.append(_path(edge) + " Z")
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        plot=plot,
        band=band_box,
        excursions=marks,
        envelopes=tuple(envelopes),
        lines=tuple(lines),
        dots=tuple(dots),
        x_ticks=tuple(Tick(x(at), label) for at, label in time_ticks(start, end)),
        y_ticks=tuple(Tick(y(value), _degrees(value)) for value in temperature_ticks(low, high, step)),
        low=low,
        high=high,
    )


def temperature_axis(buckets: Sequence[Bucket], band: tuple[float, float] | None) -> tuple[float, float, float]:
    """The temperature axis: lowest, highest and tick step, covering the readings and the range with a margin,
    at least 4 °C tall, ending on whole steps."""
    values = [b.low for b in buckets] + [b.high for b in buckets] + list(band or ())
    if not values:
        return 0.0, 10.0, 2.0
    low, high = min(values), max(values)
    margin = max((high - low) * 0.1, (4.0 - (high - low)) / 2, 0.5)
    step = _nice_step((high - low + 2 * margin) / 5)
    return math.floor((low - margin) / step) * step, math.ceil((high + margin) / step) * step, step


def temperature_ticks(low: float, high: float, step: float) -> list[float]:
    """Every multiple of ``step`` from ``low`` to ``high``."""
    first = math.ceil(low / step - 1e-9)
    last = math.floor(high / step + 1e-9)
    return [round(i * step, 6) for i in range(first, last + 1)]


def time_ticks(start: datetime.datetime, end: datetime.datetime) -> list[tuple[datetime.datetime, str]]:
    """Round times (UTC) between ``start`` and ``end``, at most ``MAX_TICKS``, each with its label.

    A label is ``HH:MM``; when the chart spans more than a day, or a tick
    falls on midnight, it carries the date too (``MM-DD HH:MM``).
    """
    seconds = (end - start).total_seconds()
    # A span of n steps can hold n + 1 round times, both ends included (a start on one, then every step).
    step = next((s for s in TIME_STEPS if seconds / s <= MAX_TICKS - 1), None)
    if step is None:
        step = math.ceil(seconds / (MAX_TICKS - 1) / 86400) * 86400
    first = math.ceil((start - _EPOCH).total_seconds() / step) * step
    ticks = []
    at = _EPOCH + datetime.timedelta(seconds=first)
    while at <= end:
        utc = at.astimezone(datetime.UTC)
        dated = seconds > 86400 or (utc.hour, utc.minute) == (0, 0)
        ticks.append((at, utc.strftime("%m-%d %H:%M" if dated else "%H:%M")))
        at += datetime.timedelta(seconds=step)
    return ticks


def _nice_step(rough: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``rough``."""
    if rough <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(rough))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= rough - 1e-12))


def _runs(buckets: Sequence[Bucket], gap_seconds: float) -> list[list[Bucket]]:
    """The buckets split wherever two neighbours are further apart than ``gap_seconds``."""
    runs: list[list[Bucket]] = []
    for bucket in buckets:
        if runs and (bucket.at - runs[-1][-1].at).total_seconds() <= gap_seconds:
            runs[-1].append(bucket)
        else:
            runs.append([bucket])
    return runs


def _path(points: Sequence[tuple[float, float]]) -> str:
    return "M" + " L".join(f"{px:g} {py:g}" for px, py in points)


def _degrees(celsius: float) -> str:
    return f"{celsius:g} °C"
