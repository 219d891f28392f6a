"""Devices, the inbox, and turning raw messages into readings and alerts.

Nothing is lost, nothing counts twice (DESIGN.md): a message is committed to
the inbox before it is acknowledged; processing is at-least-once and its
effects exactly-once, because a ``(device, seq)`` is accepted once (a partial
unique index) and every effect of a message commits with its outcome.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import io
import logging
import operator
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import OperationalError, connection, models, transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.db.models.expressions import RawSQL
from django.utils import timezone

from iot_ingest import evaluation, pgcopy, protocol, triage
from iot_ingest.models import Device, DeviceAssignment, InboxMessage, Reading, ReadingCommit
from ledger import merkle
from traceability import services as traceability
from traceability.models import Organisation, Shipment

logger = logging.getLogger(__name__)
Outcome = InboxMessage.Outcome

TASK_CHUNK = 200  # inbox rows per processing task
MAX_ATTEMPTS = 5  # then the row is a dead letter, shown to staff
URGENT_WAIT = 2.0  # seconds an urgent message waits for its logger's earlier messages another worker is storing
KINDS = {protocol.TEMPERATURE: Reading.Kind.TEMPERATURE, protocol.HUMIDITY: Reading.Kind.HUMIDITY}


# Devices ---------------------------------------------------------------------


@transaction.atomic
def device_register(
    *, device_id: str, organisation: Organisation, public_key: bytes | None = None
) -> tuple[Device, Ed25519PrivateKey | None]:
    """Registers a logger; without a public key, generates a key pair and returns the private key (once)."""
    if not protocol.DEVICE_ID.fullmatch(device_id):
        raise ValidationError({"device_id": "1 to 64 characters from A-Z a-z 0-9 . _ -"})
    private = None
    if public_key is None:
        private = Ed25519PrivateKey.generate()
        public_key = private.public_key().public_bytes_raw()
    if len(public_key) != protocol.PUBLIC_KEY_BYTES:
        raise ValidationError({"public_key": "an Ed25519 public key is 32 bytes (64 hex digits)"})
    if problem := protocol.public_key_problem(public_key):
        raise ValidationError({"public_key": problem})
    if Device.objects.filter(device_id=device_id).exists():
        raise ValidationError({"device_id": f"device {device_id} is already registered"})
    device = Device.objects.create(device_id=device_id, organisation=organisation, public_key=public_key)
    return device, private


def device_add(*, actor: User, device_id: str, public_key: bytes) -> Device:
    """Registers a logger of the actor's organisation (regulators own none)."""
    organisation = traceability.actor_organisation(
        actor, kinds=[kind for kind in Organisation.Kind if kind != Organisation.Kind.REGULATOR]
    )
    device, _ = device_register(device_id=device_id, organisation=organisation, public_key=public_key)
    return device


@transaction.atomic
def device_assign(
    *, actor: User, device: Device, shipment: Shipment, starts_at: datetime.datetime | None = None
) -> DeviceAssignment:
    """Puts the actor's logger on the shipment from ``starts_at`` (now).

    Those who handle the goods assign loggers: the shipper, the carrier and
    whoever holds the shipment now. A ride starts no earlier than the
    shipment was created or dispatched and no later than now (a logger's
    clock may run a little ahead). Rides never overlap: the logger's current
    ride ends then, and so does the ride of the logger the shipment carried
    until then, never before a reading already stored for that ride. A
    shipment carries one logger at a time, because its contract is judged on
    one series of readings: two loggers' readings interleaved would mask each
    other's excursions (a logger at 9 °C and one at 5 °C would reset each
    other's timers).
    """
    organisation = traceability.actor_organisation(actor)
    if device.organisation_id != organisation.pk:
        raise PermissionDenied("Only the logger's owner assigns it.")
    shipment = Shipment.objects.select_for_update().get(pk=shipment.pk)  # one assignment to a shipment at a time
    if organisation.pk not in (shipment.shipper_id, shipment.carrier_id, shipment.custodian_id):
        raise PermissionDenied("Loggers are put on by the shipment's shipper, its carrier or its holder.")
    if shipment.status not in (Shipment.Status.PLANNED, Shipment.Status.IN_TRANSIT):
        raise ValidationError({"shipment": f"shipment is {shipment.status}; loggers ride planned or moving ones"})
    now = timezone.now()
    start = starts_at or now
    began = min(shipment.created_at, shipment.dispatched_at or shipment.created_at)  # a dispatch may be recorded late
    if start < began:
        raise ValidationError({"starts_at": f"must not be before the shipment was created or dispatched ({began})"})
    if start > now + protocol.MAX_FUTURE:
        raise ValidationError({"starts_at": "must not be in the future"})
    rides = DeviceAssignment.objects.select_for_update().filter(Q(device=device) | Q(shipment=shipment))
    for ride in rides.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=start)).select_related("device"):
        whose = "the logger's" if ride.device_id == device.pk else f"logger {ride.device.device_id}'s"
        if ride.starts_at >= start or ride.ends_at is not None:
            raise ValidationError({"starts_at": f"must be after {whose} ride that began {ride.starts_at}"})
        # Readings already stored for the ride keep its shipment: ending it before them would leave them
        # beside the next logger's, two series in one.
        later = Reading.objects.filter(shipment=ride.shipment_id, device=ride.device_id, measured_at__gte=start)
        if (last := later.aggregate(last=models.Max("measured_at"))["last"]) is not None:
            raise ValidationError({"starts_at": f"must be after {whose} last reading on its ride ({last})"})
        ride.ends_at = start
        ride.save(update_fields=["ends_at"])
    return DeviceAssignment.objects.create(device=device, shipment=shipment, starts_at=start)


# The inbox -------------------------------------------------------------------


@dataclass(frozen=True)
class RawMessage:
    raw: bytes
    transport: str
    topic: str = ""
    received_at: datetime.datetime | None = None


def inbox_receive(messages: Sequence[RawMessage], *, enqueue: bool = True) -> list[InboxMessage]:
    """Commits the messages' exact bytes to the inbox; the sender may be acknowledged once this returns.

    Over-long messages are stored cut at the size limit, already rejected.
    After commit, queues the rest for processing (a broker outage only delays
    them: the sweeper re-queues what stays pending).
    """
    now = timezone.now()
    rows = []
    urgent = triage.urgent([message.raw for message in messages])
    for message, first in zip(messages, urgent, strict=True):
        row = InboxMessage(
            transport=message.transport,
            topic=message.topic,
            raw=message.raw[: protocol.MAX_MESSAGE_BYTES],
            received_at=message.received_at or now,
            urgent=first,
        )
        if len(message.raw) > protocol.MAX_MESSAGE_BYTES:
            row.outcome, row.reason, row.processed_at = Outcome.REJECTED, "too_large", now
            row.detail = f"{len(message.raw)} bytes; the limit is {protocol.MAX_MESSAGE_BYTES}"
        rows.append(row)
    with transaction.atomic():
        _inbox_insert(rows)
        if enqueue:
            pending = [row.pk for row in rows if row.outcome == Outcome.PENDING]
            transaction.on_commit(lambda: enqueue_processing(pending))
    return rows


INBOX_COLUMNS = (
    "transport",
    "topic",
    "raw",
    "received_at",
    "outcome",
    "reason",
    "detail",
    "attempts",
    "processed_at",
    "urgent",
)


def _inbox_insert(rows: list[InboxMessage]) -> None:
    """``bulk_create`` of new inbox rows, their ids set. On PostgreSQL one ``INSERT ... SELECT`` from an array
    per column: Django prepares every value of every row through its field, which cost ingest five times the
    rest of the insert. Rows come back in the order given, as ``bulk_create`` itself relies on."""
    if connection.vendor != "postgresql":
        InboxMessage.objects.bulk_create(rows)
        return
    fields = {field.attname: field for field in InboxMessage._meta.concrete_fields}
    arrays = ", ".join(f"%s::{fields[column].cast_db_type(connection)}[]" for column in INBOX_COLUMNS)
    values = [
        [psycopg2.Binary(row.raw) if column == "raw" else getattr(row, column) for row in rows]
        for column in INBOX_COLUMNS
    ]
    table = connection.ops.quote_name(InboxMessage._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(INBOX_COLUMNS)}) SELECT * FROM unnest({arrays}) RETURNING id",  # noqa: S608
            values,
        )
        for row, (pk,) in zip(rows, cursor.fetchall(), strict=True):
            row.pk = pk
            row._state.adding, row._state.db = False, connection.alias


def enqueue_processing(ids: Sequence[int]) -> None:
    from iot_ingest.tasks import process_messages

    for start in range(0, len(ids), TASK_CHUNK):
        try:
            process_messages.delay(list(ids[start : start + TASK_CHUNK]))
        except Exception:  # the broker is down: the sweeper re-queues pending rows
            logger.warning("could not queue inbox rows for processing; the sweeper will", exc_info=True)
            return


def inbox_sweep(*, older_than: datetime.timedelta = datetime.timedelta(seconds=30)) -> int:
    """Re-queues inbox rows still pending after a while (their task was lost, e.g. Redis restarted)."""
    cutoff = timezone.now() - older_than
    ids = list(
        InboxMessage.objects.filter(outcome=Outcome.PENDING, received_at__lt=cutoff)
        .order_by("id")
        .values_list("id", flat=True)[:20_000]
    )
    enqueue_processing(ids)
    return len(ids)


def inbox_failed(ids: Sequence[int], error: BaseException) -> None:
    """Counts a failed processing attempt; after MAX_ATTEMPTS a row becomes a dead letter with the error.

    A row another worker holds is waited for, ``URGENT_WAIT`` seconds at most:
    a batch that adopted it fails on it too and lets go, and the failure is
    then counted here, by the row's own task (adopters retry their own rows
    only, and adopt no row that failed before). Rows are locked in arrival
    order, as the urgent step locks them; should the two still deadlock,
    PostgreSQL breaks it and the rows nobody holds are counted.
    """
    detail = f"{type(error).__name__}: {error}"[:2000]
    with transaction.atomic():
        pending = InboxMessage.objects.filter(pk__in=ids, outcome=Outcome.PENDING).order_by("received_at", "id")
        rows, waited = _locked_waiting(pending, list)
        if not waited:
            logger.warning("a failure of inbox rows %s was not counted on the rows another worker holds", list(ids))
        for row in rows:
            row.attempts += 1
            row.detail = detail
            if row.attempts >= MAX_ATTEMPTS:
                row.outcome, row.processed_at = Outcome.DEAD, timezone.now()
            row.save(update_fields=["attempts", "detail", "outcome", "processed_at"])


def inbox_retry(ids: Sequence[int]) -> list[int]:
    """Puts dead letters back in the queue, their attempts counted from zero (once what failed them is fixed);
    returns the ids queued. Rows that are not dead letters are left as they are."""
    with transaction.atomic():
        dead = InboxMessage.objects.select_for_update().filter(pk__in=ids, outcome=Outcome.DEAD)
        retried = list(dead.order_by("id").values_list("pk", flat=True))
        InboxMessage.objects.filter(pk__in=retried).update(
            outcome=Outcome.PENDING, attempts=0, detail="", processed_at=None
        )
        transaction.on_commit(lambda: enqueue_processing(retried))
    return retried


# Processing ------------------------------------------------------------------


_Ride = tuple[datetime.datetime, datetime.datetime | None, int]  # starts_at, ends_at, shipment pk
READING_COLUMNS = ("device_id", "shipment_id", "message_id", "index", "kind", "value", "measured_at", "received_at")


@dataclass
class _Batch:
    """What processing one batch produces, written in bulk at the end."""

    now: datetime.datetime
    rides: dict[int, list[_Ride]]  # device pk -> its assignments
    readings: list[tuple[Any, ...]]  # rows of READING_COLUMNS
    touched: dict[int, list[float]]  # shipment -> its new temperatures
    seen: dict[int, datetime.datetime]  # device pk -> newest receipt


@dataclass(slots=True)
class _Pending:
    """An inbox row being processed: what processing reads of it, and the outcome it writes back (a model
    instance per message cost more than the outcome's whole update)."""

    pk: int
    raw: bytes
    topic: str
    received_at: datetime.datetime
    outcome: str = Outcome.PENDING
    reason: str = ""
    detail: str = ""
    processed_at: datetime.datetime | None = None
    device_id: int | None = None
    seq: int | None = None


def _taken(rows: models.QuerySet[InboxMessage]) -> list[_Pending]:
    return [
        _Pending(pk, bytes(raw), topic, received_at)
        for pk, raw, topic, received_at in rows.values_list("pk", "raw", "topic", "received_at")
    ]


def messages_process(ids: Iterable[int], *, adopt: bool = True) -> dict[str, int]:
    """Processes pending inbox rows; rows already processed (or taken by another worker) are skipped.

    With ``adopt``, first the urgent pending rows (triage), with the earlier
    messages of the same loggers still waiting, in a transaction of their own,
    so that their alerts never wait for a large batch to commit; then the
    task's own rows with the oldest other pending rows, up to
    ``INBOX_ADOPTED`` rows in all: under a backlog, fewer and larger
    transactions, whose own tasks then find them done.

    Each transaction commits outcomes, readings and devices' last-seen
    together. After each, the shipments that got an out-of-range reading are
    evaluated at once, here, and the others queued for evaluation.
    Returns the count of each outcome.
    """
    ids, room = list(ids), settings.INBOX_ADOPTED if adopt else 0
    counts: Counter[str] = Counter()
    if room:
        counts.update(_process(lambda pending: _urgent_and_earlier(pending, room)))
    room -= counts.total()

    def own_and_oldest(pending: models.QuerySet[InboxMessage]) -> list[_Pending]:
        rows = _taken(pending.filter(pk__in=ids).order_by("id"))
        if rows and room > len(rows):  # nobody waits: SKIP LOCKED passes over the rows other workers hold
            others = pending.exclude(pk__in=ids).filter(attempts=0)  # one that failed is its own task's to retry
            rows += _taken(others.order_by("received_at", "id")[: room - len(rows)])
        return rows

    counts.update(_process(own_and_oldest))
    return dict(counts)


def _urgent_and_earlier(pending: models.QuerySet[InboxMessage], room: int) -> list[_Pending]:
    """The urgent pending MQTT messages no other worker holds, and the earlier pending messages of their loggers.

    A logger's messages are judged in order: its urgent message alone would
    show its shipment a hole where the earlier ones are still on their way,
    and a hole is a data gap alert. So its earlier messages come along (MQTT
    names the logger in the topic; messages without a topic, HTTPS's, are
    left to the batch they came in), and those another worker is storing are
    waited for, ``URGENT_WAIT`` seconds at most: they are then done, and this
    evaluation sees their readings. A worker stuck in its transaction longer
    than that is not waited for: what nobody holds is taken.
    """
    urgent = pending.filter(urgent=True, attempts=0).exclude(topic="")  # one that failed: its own task's
    rows = _taken(urgent.order_by("received_at", "id")[:room])
    if not rows or len(rows) >= room:
        return rows
    newest: dict[str, datetime.datetime] = {}
    for row in rows:
        newest[row.topic] = max(newest.get(row.topic, row.received_at), row.received_at)
    same_logger = functools.reduce(
        operator.or_, (Q(topic=topic, received_at__lte=at) for topic, at in sorted(newest.items()))
    )
    earlier = (
        InboxMessage.objects.filter(same_logger, outcome=Outcome.PENDING)
        .exclude(pk__in=[row.pk for row in rows])
        .order_by("received_at", "id")[: room - len(rows)]
    )
    found, waited = _locked_waiting(earlier, _taken)  # they must not commit after these
    if not waited:
        logger.warning(
            "another worker has held earlier messages of %s for over %gs; the urgent ones go without them",
            ", ".join(sorted(newest)),
            URGENT_WAIT,
        )
    return rows + found


def _locked_waiting[T](
    rows: models.QuerySet[InboxMessage], take: Callable[[models.QuerySet[InboxMessage]], T]
) -> tuple[T, bool]:
    """``take`` of the rows locked, waiting for the workers holding some ``URGENT_WAIT`` seconds at most, and
    whether they let go in time; if not, of those nobody holds (SKIP LOCKED)."""
    try:
        with transaction.atomic():  # a savepoint: a statement cut short leaves the transaction usable
            _statement_timeout(URGENT_WAIT)
            found = take(rows.select_for_update())
            _statement_timeout(None)
    except OperationalError:  # the wait ran out, or PostgreSQL broke a deadlock
        return take(rows.select_for_update(skip_locked=True)), False
    return found, True


def _statement_timeout(seconds: float | None) -> None:
    """How long each of the transaction's statements from now on may take, waits for locks included (None: as
    configured)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        if seconds is None:
            cursor.execute("SET LOCAL statement_timeout TO DEFAULT")
        else:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{round(seconds * 1000)}ms"])


def _process(select: Callable[[models.QuerySet[InboxMessage]], list[_Pending]]) -> Counter[str]:
    """Processes the pending rows ``select`` takes (locked, skipping those another worker holds)."""
    counts: Counter[str] = Counter()
    with transaction.atomic():
        rows = select(InboxMessage.objects.select_for_update(skip_locked=True).filter(outcome=Outcome.PENDING))
        if not rows:
            return counts
        rows.sort(key=lambda row: (row.received_at, row.pk))  # of two messages with one seq, the first is accepted
        _commit_without_waiting_for_disk()
        envelopes = [(row, _parse(row)) for row in rows]
        devices = _devices({e.device_id for _, e in envelopes if isinstance(e, protocol.Envelope)})
        rides = _rides({device.pk for device in devices.values()})
        batch = _Batch(now=timezone.now(), rides=rides, readings=[], touched={}, seen={})
        checked = [(row, _authenticate(row, envelope, devices)) for row, envelope in envelopes]
        accepted = _accepted_before([c for _, c in checked if isinstance(c, _Verified)])
        for row, verified in checked:
            _settle(row, verified, accepted, batch)
            counts[row.outcome] += 1
        _outcomes_save(rows)
        _readings_insert(batch.readings)
        _last_seen_save(batch.seen)
        urgent = evaluation.urgent_shipments(batch.touched)
        transaction.on_commit(lambda: evaluation.evaluation_after_processing(batch.touched, urgent=urgent))
    return counts


def _commit_without_waiting_for_disk() -> None:
    """On PostgreSQL, lets this transaction's commit return before its WAL reaches the disk.

    Safe here, and only here: the messages were committed durably when they
    entered the inbox. A database crash can lose the last moments of processing,
    but whole transactions only, so those rows are simply pending again and the
    sweeper queues them anew: nothing accepted is lost, nothing counts twice.
    It spares each batch a disk flush, which on slow disks costs more than the
    processing itself.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _outcomes_save(rows: list[_Pending]) -> None:
    """Writes every row's outcome at once (``bulk_update`` builds a CASE per field and row: slow)."""
    _update_from_values(
        InboxMessage,
        ["outcome", "reason", "detail", "processed_at", "device_id", "seq"],
        [(r.pk, r.outcome, r.reason, r.detail, r.processed_at, r.device_id, r.seq) for r in rows],
    )


def _last_seen_save(seen: dict[int, datetime.datetime]) -> None:
    """Moves each device's last-seen time forward (never back: batches commit in any order)."""
    _update_from_values(Device, ["last_seen_at"], sorted(seen.items()), only_forward="last_seen_at")


def _update_from_values(
    model: type[models.Model], columns: list[str], rows: Sequence[tuple[Any, ...]], *, only_forward: str = ""
) -> None:
    """Sets ``columns`` of many rows: each row is the pk, then the columns' values.

    On PostgreSQL one ``UPDATE ... FROM unnest(...)`` statement, an array per
    column (as ``_inbox_insert``: ``VALUES`` rows are built in Python, value by
    value); elsewhere one prepared statement per row. ``only_forward`` names a
    column that may only grow (a row whose stored value is newer keeps it).
    """
    if not rows:
        return
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            fields = {field.attname: field for field in model._meta.concrete_fields}
            arrays = ", ".join(f"%s::{fields[column].cast_db_type(connection)}[]" for column in columns)
            sql = (
                f"UPDATE {table} SET {', '.join(f'{c} = v.{c}' for c in columns)} "  # noqa: S608  (our table)
                f"FROM unnest(%s::bigint[], {arrays}) AS v (id, {', '.join(columns)}) WHERE {table}.id = v.id"
            )
            if only_forward:
                sql += f" AND ({table}.{only_forward} IS NULL OR {table}.{only_forward} < v.{only_forward})"
            cursor.execute(sql, [list(column) for column in zip(*rows, strict=True)])
        else:
            sql = f"UPDATE {table} SET {', '.join(f'{c} = %s' for c in columns)} WHERE id = %s"  # noqa: S608
            params = [(*row[1:], row[0]) for row in _adapted(rows)]
            if only_forward:
                sql += f" AND ({only_forward} IS NULL OR {only_forward} < %s)"
                position = 1 + columns.index(only_forward)
                params = [(*row[1:], row[0], row[position]) for row in _adapted(rows)]
            cursor.executemany(sql, params)


def _readings_insert(rows: list[tuple[Any, ...]]) -> None:
    """Stores readings with PostgreSQL's binary COPY (model instances and INSERTs cost more than all the rest,
    and COPY's text formats a third of it: every time and number written as text, then parsed back)."""
    if not rows:
        return
    table = connection.ops.quote_name(Reading._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(column) for column in READING_COLUMNS)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            data = io.BytesIO(pgcopy.stream(_readings_packed(rows)))
            cursor.cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT binary)", data)
        else:
            marks = ", ".join(["%s"] * len(READING_COLUMNS))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", _adapted(rows))  # noqa: S608


def _readings_packed(rows: list[tuple[Any, ...]]) -> Iterator[bytes]:
    """The rows in COPY's binary format. A message's readings share their receipt: converted once."""
    layouts = _reading_layouts()
    received_at, received = None, 0
    for device, shipment, message, index, kind, value, at, receipt in rows:
        if receipt is not received_at:
            received_at, received = receipt, pgcopy.timestamptz(receipt)
        layout, kind_bytes = layouts[shipment is None, kind]
        yield layout.pack((device, shipment, message, index, kind_bytes, value, pgcopy.timestamptz(at), received))


@functools.cache
def _reading_layouts() -> dict[tuple[bool, str], tuple[pgcopy.Layout, bytes]]:
    """(no shipment, kind) -> the layout of such reading rows and the kind's bytes, from the columns' types."""
    fields = {field.attname: field for field in Reading._meta.concrete_fields}
    layouts = {}
    for kind in Reading.Kind.values:
        kind_code, kind_bytes = pgcopy.text(kind)
        codes = {
            column: kind_code if column == "kind" else pgcopy.code(fields[column].db_type(connection))
            for column in READING_COLUMNS
        }
        for unassigned in (False, True):
            layout = pgcopy.Layout([None if unassigned and c == "shipment_id" else codes[c] for c in READING_COLUMNS])
            layouts[unassigned, kind] = (layout, kind_bytes)
    return layouts


def _adapted(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Times as the database backend stores them (SQLite: naive UTC text, which is what it compares)."""
    adapt = connection.ops.adapt_datetimefield_value
    return [tuple(adapt(v) if isinstance(v, datetime.datetime) else v for v in row) for row in rows]


@dataclass(frozen=True)
class _Verified:
    """A message whose signature verified with its device's key."""

    device: Device
    payload: protocol.Payload


def _parse(row: _Pending) -> protocol.Envelope | protocol.Rejected:
    try:
        return protocol.parse(row.raw)
    except protocol.Rejected as rejected:
        return rejected


def _authenticate(
    row: _Pending, envelope: protocol.Envelope | protocol.Rejected, devices: dict[str, Device]
) -> _Verified | protocol.Rejected:
    """The spec's checks up to the payload, in its order: nothing unsigned is believed."""
    try:
        if isinstance(envelope, protocol.Rejected):
            raise envelope
        device = devices.get(envelope.device_id)
        if device is None:
            raise protocol.Rejected("unknown_device", f"no device {envelope.device_id!r} is registered")
        row.device_id = device.pk
        if device.status != Device.Status.ACTIVE:
            raise protocol.Rejected("device_disabled", f"device {device.device_id} is disabled")
        protocol.verify(envelope, bytes(device.public_key))
        payload = protocol.read_payload(envelope, topic_device=_topic_device(row.topic))
    except protocol.Rejected as rejected:
        return rejected
    row.seq = payload.seq
    return _Verified(device, payload)


def _topic_device(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[3] if len(parts) == 5 and parts[:3] == ["coldtrace", "v1", "devices"] else None


def _devices(device_ids: set[str]) -> dict[str, Device]:
    return {device.device_id: device for device in Device.objects.filter(device_id__in=device_ids)}


def _accepted_before(candidates: list[_Verified]) -> dict[tuple[int, int], bytes]:
    """(device pk, seq) -> digest of the bytes accepted for it, for the batch's candidates.

    Looks up exactly those pairs in the unique index of accepted messages:
    filtering on the devices and, apart, on the seqs would read every accepted
    message of the batch's devices whose seq is any of the batch's, a number
    that grows with the devices' history.
    """
    wanted = sorted({(c.device.pk, c.payload.seq) for c in candidates})
    if not wanted:
        return {}
    table = connection.ops.quote_name(InboxMessage._meta.db_table)
    found = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Two array literals: a thousand pairs of parameters, or an ARRAY[...] of a thousand, take
            # PostgreSQL longer to parse and plan than the lookups take. A LATERAL lookup per pair, kept
            # apart by its LIMIT (one at most: inbox_accepted_once), even when the statistics of a
            # fast-growing inbox make the table look small enough to scan and hash whole.
            devices, seqs = (_array(column) for column in zip(*wanted, strict=True))
            cursor.execute(
                f"SELECT w.d, w.s, m.raw FROM unnest(%s::bigint[], %s::bigint[]) AS w (d, s) "  # noqa: S608
                f"CROSS JOIN LATERAL (SELECT raw FROM {table} "
                "WHERE device_id = w.d AND seq = w.s AND outcome = %s LIMIT 1) AS m",
                [devices, seqs, Outcome.ACCEPTED],
            )
            found = cursor.fetchall()
        else:
            for start in range(0, len(wanted), 1000):
                chunk = wanted[start : start + 1000]
                pairs = ", ".join(["(%s, %s)"] * len(chunk))
                cursor.execute(
                    f"SELECT device_id, seq, raw FROM {table} WHERE outcome = %s "  # noqa: S608  (our table)
                    f"AND (device_id, seq) IN (VALUES {pairs})",
                    [Outcome.ACCEPTED, *(value for pair in chunk for value in pair)],
                )
                found += cursor.fetchall()
    return {(device, seq): _digest(bytes(raw)) for device, seq, raw in found}


def _array(numbers: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers, one parameter: a parameter per number, or ARRAY[...] of
    them, takes PostgreSQL longer to parse than a large lookup or update takes."""
    return "{" + ",".join(map(str, numbers)) + "}"


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def _settle(
    row: _Pending,
    checked: _Verified | protocol.Rejected,
    accepted: dict[tuple[int, int], bytes],
    batch: _Batch,
) -> None:
    """Decides one message's outcome: duplicate, replay, or its readings' checks; collects its readings."""
    row.processed_at = batch.now
    try:
        if isinstance(checked, protocol.Rejected):
            raise checked
        device, payload = checked.device, checked.payload
        before = accepted.get((device.pk, payload.seq))
        if before is not None:
            if before == _digest(row.raw):
                row.outcome = Outcome.DUPLICATE
                return
            raise protocol.Rejected("replay", f"seq {payload.seq} was already accepted with other bytes")
        readings = protocol.resolve(payload, received_at=row.received_at)
    except protocol.Rejected as rejected:
        row.outcome, row.reason, row.detail = Outcome.REJECTED, rejected.reason, rejected.detail[:2000]
        return
    row.outcome, row.reason, row.detail = Outcome.ACCEPTED, "", ""
    accepted[(device.pk, payload.seq)] = _digest(row.raw)
    batch.seen[device.pk] = max(batch.seen.get(device.pk, row.received_at), row.received_at)
    rides = batch.rides.get(device.pk, [])
    for reading in readings:
        kind = KINDS.get(reading.unit)
        if kind is None:
            continue
        shipment_id = _shipment_at(rides, reading.at)
        if shipment_id is not None and kind == Reading.Kind.TEMPERATURE:
            batch.touched.setdefault(shipment_id, []).append(reading.value)
        batch.readings.append(
            (device.pk, shipment_id, row.pk, reading.index, kind, reading.value, reading.at, row.received_at)
        )


def _rides(device_pks: set[int]) -> dict[int, list[_Ride]]:
    """Each device's assignments to shipments."""
    rides: dict[int, list[_Ride]] = defaultdict(list)
    assignments = DeviceAssignment.objects.filter(device__in=device_pks)
    for device_pk, starts_at, ends_at, shipment_pk in assignments.values_list(
        "device_id", "starts_at", "ends_at", "shipment_id"
    ):
        rides[device_pk].append((starts_at, ends_at, shipment_pk))
    return rides


def _shipment_at(rides: list[_Ride], at: datetime.datetime) -> int | None:
    """The shipment the logger rode with at that moment (device time), if any."""
    for starts_at, ends_at, shipment_id in rides:
        if starts_at <= at and (ends_at is None or at < ends_at):
            return shipment_id
    return None


# Readings in the ledger -----------------------------------------------------------


# What a reading's leaf says, as read from the database beside its id: device id, seq, index, kind, value, time.
LEAF_COLUMNS = ("device__device_id", "message__seq", "index", "kind", "value", "measured_at")
_LeafRow = tuple[int, str, int | None, int, str, float, datetime.datetime]  # the id, then LEAF_COLUMNS


def reading_leaf(reading: Reading, device_id: str, seq: int) -> bytes:
    """A reading's leaf data: RFC 8785 canonical JSON of what the logger said."""
    return _leaf(device_id, seq, reading.index, reading.kind, reading.value, reading.measured_at)


def _leaf(device_id: str, seq: int, index: int, kind: str, value: float, measured_at: datetime.datetime) -> bytes:
    """RFC 8785 canonical JSON of ``{"device", "seq", "index", "kind", "value", "measured_at"}``, written out.

    The members in RFC 8785's order (by name); strings and the value through
    ``rfc8785`` (made once per distinct one: a fleet's ids, kinds and
    readings recur); the integers (below 2^53) and the time (digits and
    ``-:.TZ``) need no escaping. ``rfc8785.dumps`` of the object took 25 µs
    a reading, the most of a commit's time; a property test holds this to it.
    """
    at = measured_at.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    return b"".join(
        (
            b'{"device":',
            _canonical(device_id),
            b',"index":',
            b"%d" % index,
            b',"kind":',
            _canonical(kind),
            b',"measured_at":"',
            at.encode("ascii"),
            b'","seq":',
            b"%d" % seq,
            b',"value":',
            _canonical(value),
            b"}",
        )
    )


@functools.lru_cache(maxsize=65_536)
def _canonical(value: str | float) -> bytes:
    return rfc8785.dumps(value)


def _leaf_hashes(rows: Iterable[_LeafRow]) -> list[bytes]:
    return [
        merkle.leaf_hash(_leaf(device, seq or 0, index, kind, value, at))
        for _, device, seq, index, kind, value, at in rows
    ]


def _leaf_rows(readings: models.QuerySet[Reading]) -> list[_LeafRow]:
    """The readings' ids and leaf values in id order, a tree's leaf order (no model instances: a commit can
    hold many thousands of readings, and instances were half of its time)."""
    return list(readings.order_by("id").values_list("id", *LEAF_COLUMNS))


def readings_commit(shipment: Shipment, *, through: int | None = None) -> ReadingCommit | None:
    """Puts the Merkle root of the shipment's readings received since the last commit in the ledger.

    The commit covers the shipment's readings above the last commit's range
    up to ``through``: by default the greatest reading id of the shipment
    once every write in flight has ended (``readings_boundaries``). No
    reading is written again.
    """
    if through is None:
        through = readings_boundaries([shipment.pk]).get(shipment.pk)
        if through is None:
            return None
    with transaction.atomic():
        shipment = Shipment.objects.select_for_update().get(pk=shipment.pk)  # one commit of it at a time
        covered = ReadingCommit.covered_through(shipment.pk)  # read after the lock: no commit of it since
        after = Shipment.objects.filter(pk=shipment.pk).values_list(covered, flat=True).get()
        fresh = _leaf_rows(Reading.uncommitted(shipment.pk, after).filter(id__lte=through))
        if not fresh:
            return None
        root = merkle.root_of(_leaf_hashes(fresh))
        through = fresh[-1][0]
        commit = ReadingCommit.objects.create(
            shipment=shipment, count=len(fresh), root=root, after_id=after, through_id=through
        )
        times = [row[-1] for row in fresh]
        traceability.readings_committed(
            shipment=shipment,
            commit_id=commit.pk,
            count=len(fresh),
            root=root.hex(),
            first_measured_at=min(times),
            last_measured_at=max(times),
            readings=(after, through),
        )
    return commit


WRITES_WAIT = 30.0  # seconds ``readings_boundaries`` waits for the writes in flight (then: none this time)
WRITES_POLL = 0.01  # seconds between looks at them
# The transactions writing readings, but this one: each holds the table's ROW EXCLUSIVE lock from before its
# first reading takes an id until it has ended and its readings are visible (prepared ones too: no pid).
_WRITING = (
    "locktype = 'relation' AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND relation = %s::regclass AND mode = 'RowExclusiveLock' AND pid IS DISTINCT FROM pg_backend_pid()"
)
_WRITERS = RawSQL(  # noqa: S611  (constant SQL; the table is a parameter)
    f"(SELECT coalesce(array_agg(DISTINCT virtualtransaction), '{{}}') FROM pg_locks WHERE {_WRITING})",  # noqa: S608
    [Reading._meta.db_table],
)


def readings_boundaries(shipment_ids: Sequence[int] | None = None) -> dict[int, int]:
    """For each shipment (of ``shipment_ids``, or all) with readings no commit covers yet: the greatest reading
    id a commit may cover now, all of them or none; those committed longest ago first.

    A commit covers a range of its shipment's reading ids, so no reading may
    still be on its way below the range's end. Read in one statement with the
    transactions writing readings at that moment; then, on PostgreSQL, those
    are waited for (``WRITES_WAIT`` seconds at most: an empty answer, the next
    run tries again). Any id a transaction takes later is above every id
    read: the id sequence hands them out one at a time (CACHE 1, PostgreSQL's
    default), and the ones read were taken before their transactions ended.
    Nobody waits for the commit, and no other transaction holds it back.
    SQLite has one writer at a time (``transaction_mode`` IMMEDIATE), so no
    transaction in flight holds an id below one already visible.
    """
    shipments = shipments_uncommitted()
    if shipment_ids is not None:
        shipments = shipments.filter(pk__in=shipment_ids)
    newest = Reading.objects.filter(shipment=OuterRef("pk"), commit__isnull=True).order_by("-id").values("id")[:1]
    shipments = shipments.annotate(through=Subquery(newest))
    if connection.vendor != "postgresql":
        return dict(shipments.values_list("pk", "through"))
    rows = list(shipments.annotate(writers=_WRITERS).values_list("pk", "through", "writers"))
    if not rows or _writes_ended(rows[0][2], wait=WRITES_WAIT):
        return {pk: through for pk, through, _ in rows}
    logger.warning("readings were still being written %gs later; none committed this time", WRITES_WAIT)
    return {}


def _writes_ended(writers: list[str], *, wait: float) -> bool:
    """Whether these PostgreSQL transactions (virtual ids) ended within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    with connection.cursor() as cursor:
        while writers:
            if time.monotonic() >= deadline:
                return False
            time.sleep(WRITES_POLL)
            cursor.execute(
                f"SELECT array_agg(DISTINCT virtualtransaction) FROM pg_locks WHERE {_WRITING} "  # noqa: S608
                "AND virtualtransaction = ANY(%s)",
                [Reading._meta.db_table, writers],
            )
            writers = cursor.fetchone()[0] or []
    return True


def shipments_uncommitted() -> models.QuerySet[Shipment]:
    """The shipments with readings that no commit covers yet (two index probes each), those committed longest
    ago first."""
    shipments = Shipment.objects.annotate(after=ReadingCommit.covered_through(OuterRef("pk")))
    fresh = Exists(Reading.uncommitted(OuterRef("pk"), OuterRef("after")))
    return shipments.filter(fresh).order_by("after", "pk")


def _members(commit: ReadingCommit) -> models.QuerySet[Reading]:
    """The readings under the commit's root."""
    if commit.through_id is None:
        return Reading.objects.filter(commit=commit)
    assert commit.after_id is not None
    return Reading.uncommitted(commit.shipment_id, commit.after_id).filter(id__lte=commit.through_id)


def _commit_of(reading: Reading) -> ReadingCommit | None:
    """The commit whose root covers the reading, if one does yet."""
    if reading.commit_id is not None:
        return reading.commit
    if reading.shipment_id is None:
        return None
    ranges = ReadingCommit.objects.filter(shipment_id=reading.shipment_id, through_id__gte=reading.pk)
    commit = ranges.order_by("through_id").first()
    return commit if commit is not None and commit.after_id is not None and commit.after_id < reading.pk else None


def _tree_nodes(leaves: list[bytes]) -> Iterable[tuple[merkle.NodeKey, bytes]]:
    return (((level, index), digest) for level, index, digest in merkle.append_nodes(0, leaves, {}))


class CommitMismatch(RuntimeError):
    """A commit's readings are no longer those its root was made of: no proof can hold, and the stored data
    needs an investigation (the ledger keeps the root as it was)."""


@dataclass(frozen=True)
class ReadingProof:
    reading: Reading
    commit: ReadingCommit
    leaf: bytes
    index: int
    path: list[bytes]


def reading_proof(reading: Reading) -> ReadingProof | None:
    """The reading's inclusion proof against its commit's root (None until it is committed)."""
    commit = _commit_of(reading)
    if commit is None:
        return None
    members = _leaf_rows(_members(commit))
    leaves = _leaf_hashes(members)
    if len(members) != commit.count or merkle.root_of(leaves) != bytes(commit.root):
        raise CommitMismatch(
            f"commit {commit.pk}'s root is of {commit.count} readings; the {len(members)} in its range now differ"
        )
    index = next(i for i, member in enumerate(members) if member[0] == reading.pk)
    nodes = dict(_tree_nodes(leaves))
    return ReadingProof(
        reading=reading,
        commit=commit,
        leaf=reading_leaf(reading, reading.device.device_id, reading.message.seq or 0),
        index=index,
        path=merkle.inclusion_proof(index, len(members), nodes),
    )
