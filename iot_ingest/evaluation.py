"""Evaluating shipments' contracts as their readings arrive, and raising alerts.

Each worker process keeps, for the shipments it evaluated lately, a resumable
``coldchain.Monitor``: an evaluation reads only the readings that arrived since
the last one. A late reading, measured before the newest one already judged,
rewinds the monitor to a checkpoint of an earlier evaluation, before that
reading; only one older than all of them makes it judge every reading again.
Out-of-range readings are evaluated at once, by the worker that stored them;
calm ones (``coldchain.calm``) together, within ``CALM_SECONDS``, by
whichever worker takes the task.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise

from django.core.cache import cache
from django.db import connection
from django.db.models import BigIntegerField, Count, Func, Q, QuerySet
from django.utils import timezone

from iot_ingest.models import Reading
from traceability import coldchain
from traceability import services as traceability
from traceability.models import Alert, Shipment

logger = logging.getLogger(__name__)

CALM_SECONDS = 5  # how long the evaluation of calm readings may wait (coldchain.calm), to take more at once
WATCHED_SHIPMENTS = 500  # monitors a worker process keeps: each holds its MKT window (a day of minutes: ~200 KiB)
# Checkpoints a monitor keeps, one per evaluation: a reading committed after one that was measured later (two
# workers' batches of one logger, a buffer uploaded late) rewinds it to the newest checkpoint before that reading.
CHECKPOINTS = 8
CHECKPOINT_MIN = 32  # readings between two checkpoints of one read, at least
EVALUATION_SLICE = 0.1  # seconds an evaluation task runs before it queues its other shipments anew
URGENT, CALM = "evaluate-now", "evaluate"  # the cache marks of shipments queued for evaluation
# How long the marks of the shipments an evaluation task queued anew last: a lost task delays their calm
# evaluation that long at most. Without a shared cache (CACHE_URL) each worker process marks for itself, and a
# process's own marks can hold its requests back that long while another process evaluates the shipments.
CHAINED_MARK_SECONDS = 30


def evaluation_request(shipment_ids: Iterable[int], *, urgent: Iterable[int] = ()) -> None:
    """Queues the evaluation of shipments whose readings changed: ``urgent`` ones at once, the others
    within ``CALM_SECONDS``, one evaluation for all the readings that arrive meanwhile.

    A shipment already queued (and not yet started) is not queued again. The
    task clears the marks before it reads the readings, so readings that commit
    after it started get an evaluation of their own.
    """
    urgent = set(urgent)
    _evaluation_queue(sorted(urgent), mark=URGENT, delay=0)
    _evaluation_queue(sorted(set(shipment_ids) - urgent), mark=CALM, delay=CALM_SECONDS)


def evaluation_after_processing(shipment_ids: Iterable[int], *, urgent: Iterable[int]) -> None:
    """After a batch of readings committed: the ``urgent`` shipments evaluated here and now, so that their
    alerts never wait behind queued work; the calm ones queued (``evaluation_request``).

    An urgent evaluation that fails is queued instead (its task retries it),
    and never undoes the committed readings.
    """
    urgent, failed = sorted(set(urgent)), []
    for shipment_id in urgent:
        try:
            shipment_evaluate(shipment_id)
        except Exception:
            logger.warning("could not evaluate shipment %s at once; queued instead", shipment_id, exc_info=True)
            failed.append(shipment_id)
    evaluation_request((set(shipment_ids) - set(urgent)) | set(failed), urgent=failed)


def _evaluation_queue(shipment_ids: list[int], *, mark: str, delay: int) -> None:
    # Two round trips to the cache, whatever the number of shipments. Two processes can both find a shipment
    # unmarked and both queue it: one evaluation too many, never one too few. A short expiry bounds the cost
    # of a per-process cache (several workers without CACHE_URL): a mark another process's task could not
    # clear lapses within seconds.
    keys = {f"{mark}:{pk}": pk for pk in shipment_ids}
    marked = cache.get_many(list(keys))
    due = {key: pk for key, pk in keys.items() if key not in marked}
    if not due:
        return
    cache.set_many(dict.fromkeys(due, 1), timeout=delay + 2)
    _evaluation_send(list(due.values()), countdown=delay)


def _evaluation_send(shipment_ids: list[int], *, countdown: int = 0) -> None:
    """Sends an evaluation task; unmarks the shipments when the broker cannot take it."""
    from iot_ingest.tasks import evaluate_shipments

    try:
        evaluate_shipments.apply_async((shipment_ids,), countdown=countdown or None)
    except Exception:  # the broker is down; beat evaluates every moving shipment anyway
        cache.delete_many([f"{mark}:{pk}" for pk in shipment_ids for mark in (URGENT, CALM)])
        logger.warning("could not queue the evaluation of shipments %s", shipment_ids, exc_info=True)


def urgent_shipments(temperatures: dict[int, list[float]]) -> set[int]:
    """The shipments with a new temperature that is not calm under their contract (``coldchain.calm``)."""
    bounds = calm_bands(set(temperatures))
    return {pk for pk, values in temperatures.items() if not all(bounds[pk][0] < v < bounds[pk][1] for v in values)}


def calm_bands(shipment_pks: set[int]) -> dict[int, tuple[float, float]]:
    """Each shipment's open interval of calm temperatures (``coldchain.calm_bounds``), from the kept contracts."""
    return {pk: coldchain.calm_bounds(contract) for pk, contract in _contracts(shipment_pks).items()}


_contract_cache: dict[int, tuple[float, coldchain.Contract]] = {}  # shipment pk -> (good until, contract)
CONTRACT_CACHE_SECONDS = 60.0


def _contracts(shipment_pks: set[int]) -> dict[int, coldchain.Contract]:
    """The shipments' contracts, kept by the process for a minute (they are fixed when the shipment is planned)."""
    now = time.monotonic()
    fresh = {pk: entry[1] for pk in shipment_pks if (entry := _contract_cache.get(pk)) and now < entry[0]}
    missing = shipment_pks - fresh.keys()
    if missing:
        if len(_contract_cache) > 10_000:
            _contract_cache.clear()
        shipments = Shipment.objects.filter(pk__in=missing).select_related("contract")
        for shipment in shipments.prefetch_related("contract__rules"):
            fresh[shipment.pk] = shipment.contract.as_rules()
            _contract_cache[shipment.pk] = (now + CONTRACT_CACHE_SECONDS, fresh[shipment.pk])
    return fresh


def shipments_evaluate(shipment_ids: Iterable[int], *, seconds: float | None = None) -> list[Alert]:
    """Evaluates the shipments' contracts over all their temperature readings (device time); raises alerts.

    With ``seconds``, stops after about that long and queues the evaluation
    of the others anew, behind the work queued meanwhile: a worker never
    keeps the readings that arrive waiting behind seconds of evaluation.
    Returns the alerts raised.
    """
    shipment_ids = sorted(set(shipment_ids))
    shipments = Shipment.objects.in_bulk(shipment_ids)
    contracts = _contracts(set(shipments))
    alerts: list[Alert] = []
    started = time.monotonic()
    for n, pk in enumerate(shipment_ids):
        if seconds is not None and n and time.monotonic() - started > seconds:
            # Their marks stay set, for as long as the rest waits behind the work queued meanwhile: were they to
            # lapse, the next batch would queue these shipments again, and two chains of tasks evaluate each.
            rest = shipment_ids[n:]
            cache.set_many({f"{CALM}:{pk}": 1 for pk in rest}, timeout=CHAINED_MARK_SECONDS)
            _evaluation_send(rest)
            break
        cache.delete_many([f"{mark}:{pk}" for mark in (URGENT, CALM)])
        if pk in shipments:
            alerts += _evaluate(shipments[pk], contracts[pk])
    return alerts


def shipment_evaluate(shipment_id: int) -> list[Alert]:
    """``shipments_evaluate`` for one shipment."""
    return shipments_evaluate([shipment_id])


def _evaluate(shipment: Shipment, terms: coldchain.Contract) -> list[Alert]:
    """Applies the evaluation of the shipment's readings, unless its verdict is the one applied last."""
    if shipment.dispatched_at is None:
        return []
    readings = Reading.objects.filter(shipment=shipment, kind=Reading.Kind.TEMPERATURE)
    if shipment.closed_at is not None:
        readings = readings.filter(measured_at__lte=shipment.closed_at)
    armed_from = shipment.dispatched_at + datetime.timedelta(seconds=terms.arming_seconds)
    watch = _watch(shipment, _Key(terms, armed_from, shipment.closed_at), readings)
    until = shipment.closed_at or watch.silent_until(timezone.now())
    evaluation = watch.monitor.evaluation(until=until)
    if evaluation.verdict() == bytes(shipment.verdict):
        return []  # applied already, by this process or another: applying takes a lock and a dozen queries
    return traceability.monitoring_apply(shipment=shipment, evaluation=evaluation)


@dataclass(frozen=True)
class _Key:
    """What a monitor was built for: when any of it changes, it is built again."""

    contract: coldchain.Contract
    armed_from: datetime.datetime
    closed_at: datetime.datetime | None


_Row = tuple[int, float, int]  # a reading's device time, value and receipt time; times in coldchain.micros


@dataclass(frozen=True)
class _Mark:
    """Where a watch stood after one of its reads: the monitor's checkpoint, and the watch's own counts."""

    checkpoint: coldchain.Checkpoint
    at: int  # the monitor's last reading then (coldchain.micros, as the watch's other times)
    rows: int
    newest_at: int | None
    last_received: int | None


@dataclass
class _Watch:
    """A shipment's monitor in this process, and what it has read of the readings."""

    key: _Key
    monitor: coldchain.Monitor
    rows: int = 0  # readings measured at or before the monitor's last one (repeats and pre-arming ones too)
    newest_at: int | None = None  # device time of the newest reading read
    last_received: int | None = None  # when the newest-arrived of them arrived
    # Checkpoints of its last reads, oldest first: a late reading rewinds the monitor to the newest one
    # before it, rather than judging every reading again.
    marks: deque[_Mark] = field(default_factory=lambda: deque(maxlen=CHECKPOINTS))

    def read(self, rows: list[_Row]) -> None:
        """Feeds readings in (time, value) order, all after the monitor's last one.

        Checkpoints after the last of them and, in a long read, also after
        the first half, three quarters and so on: readings that commit late
        (another worker's batch of the same logger, still in flight) are
        usually measured just before the newest ones read, so a checkpoint a
        little before the end is what they rewind to.
        """
        for start, end in pairwise([0, *_checkpoints(len(rows))]):
            chunk = rows[start:end]
            self.monitor.feed_micros([(at, value) for at, value, _received in chunk])
            self.rows += len(chunk)
            self.newest_at = max(self.newest_at or chunk[-1][0], chunk[-1][0])
            newest_receipt = max(received for _at, _value, received in chunk)
            self.last_received = max(self.last_received or newest_receipt, newest_receipt)
            self._checkpoint()
        if not self.marks:
            self._checkpoint()

    def _checkpoint(self) -> None:
        checkpoint = self.monitor.checkpoint()
        if checkpoint.last is not None:
            at = coldchain.micros(checkpoint.last.at)
            self.marks.append(_Mark(checkpoint, at, self.rows, self.newest_at, self.last_received))

    def resumable(self, readings: QuerySet[Reading]) -> _Mark | None:
        """The newest mark no reading measured at or before it has arrived since: what is stored up to it
        is exactly what the watch had read (readings are never deleted, so equal counts are equal sets).

        Usually the newest mark, which one count confirms; a late reading costs one more query, whatever
        the number of older marks (a count per mark in one scan costs PostgreSQL four times one count).
        """
        if not self.marks:
            return None
        newest, *older = reversed(self.marks)
        if readings.filter(measured_at__lte=coldchain.moment(newest.at)).count() == newest.rows:
            return newest
        if not older:
            return None
        times = [coldchain.moment(mark.at) for mark in older]
        counts = readings.filter(measured_at__lte=times[0]).aggregate(
            **{f"m{n}": Count("measured_at", filter=Q(measured_at__lte=at)) for n, at in enumerate(times)}
        )
        return next((mark for n, mark in enumerate(older) if counts[f"m{n}"] == mark.rows), None)

    def rewind(self, mark: _Mark) -> bool:
        """Back to the mark, forgetting what was read after it; False when the monitor can no longer."""
        if mark is self.marks[-1]:
            return True
        if not self.monitor.rewind(mark.checkpoint):
            return False
        while self.marks[-1] is not mark:
            self.marks.pop()
        self.rows, self.newest_at, self.last_received = mark.rows, mark.newest_at, mark.last_received
        return True

    def silent_until(self, now: datetime.datetime) -> datetime.datetime:
        """Where a data gap at the end of the record is measured to.

        A logger uploading its buffer late is talking, not silent: the gap after
        its newest reading is as long as it has been silent (since its last
        message arrived), not as old as that reading.
        """
        if self.newest_at is None or self.last_received is None:
            return now
        return coldchain.moment(self.newest_at + coldchain.micros(now) - self.last_received)


def _checkpoints(count: int) -> list[int]:
    """Where a read of ``count`` readings is checkpointed: after half, 3/4, 7/8 and 15/16 of them, if that
    leaves at least CHECKPOINT_MIN readings between two, and after the last."""
    ends = [count - count // 2**n for n in range(1, 5) if count // 2**n >= CHECKPOINT_MIN]
    return [*ends, count] if count else []


_watches: OrderedDict[int, _Watch] = OrderedDict()  # shipment pk -> its watch, least recently used first


def _watch(shipment: Shipment, key: _Key, readings: QuerySet[Reading]) -> _Watch:
    """The shipment's monitor, brought up to date: rewound to the newest mark that no late reading precedes
    (usually where it stopped) and fed the readings after it; else built again from all of them."""
    watch = _watches.get(shipment.pk)
    if watch is not None and watch.key == key and (mark := watch.resumable(readings)) and watch.rewind(mark):
        watch.read(_rows(readings.filter(measured_at__gt=coldchain.moment(mark.at))))
        _watches.move_to_end(shipment.pk)
        return watch
    watch = _Watch(key, coldchain.Monitor(key.contract, armed_from=key.armed_from))
    watch.read(_rows(readings))
    _watches[shipment.pk] = watch
    while len(_watches) > WATCHED_SHIPMENTS:
        _watches.popitem(last=False)
    return watch


class _Micros(Func):
    """A time as integer microseconds since the Unix epoch, computed by PostgreSQL (coldchain.micros)."""

    template = "(EXTRACT(EPOCH FROM %(expressions)s) * 1000000)::bigint"
    output_field = BigIntegerField()


def _rows(readings: QuerySet[Reading]) -> list[_Row]:
    """The readings in (time, value) order, as the monitor takes them. PostgreSQL hands over their times as
    integers: a datetime for each would cost more than the monitor's judging them."""
    in_order = readings.order_by("measured_at", "value")
    if connection.vendor == "postgresql":
        return list(
            in_order.annotate(m=_Micros("measured_at"), r=_Micros("received_at")).values_list("m", "value", "r")
        )
    micros = coldchain.micros
    return [(micros(m), v, micros(r)) for m, v, r in in_order.values_list("measured_at", "value", "received_at")]


def watches_forget() -> None:
    """Drops every monitor of this process (tests: ids are reused after a rollback)."""
    _watches.clear()


def moving_shipments() -> list[int]:
    """Shipments under watch: in transit, or closed in the last hour (late uploads still count)."""
    recently = timezone.now() - datetime.timedelta(hours=1)
    return list(
        Shipment.objects.filter(Q(status=Shipment.Status.IN_TRANSIT) | Q(closed_at__gte=recently)).values_list(
            "id", flat=True
        )
    )
