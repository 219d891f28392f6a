"""What a consumer page or a verification answer needs from the database: one query whatever the batch's history.

Everything read here is public: the product, its manufacturer, the batch and
its status, the unit a serial names and its status, the public facts of the
recall that took it off the market, the cold-chain facts of its legs (no
parties, references or quantities), and the public ledger entry that
registered it.

The read is one plain SQL statement rather than the ORM: the page is the
busiest in the system (a scan storm after a recall); building eight ORM
queries cost more than running them, and each round trip to the database
more than the work it asked for. SQLite returns dates, times and decimals as
text, numbers or naive UTC times, PostgreSQL as Python objects; ``_date``,
``_moment`` and ``_decimal`` take either.
"""

from __future__ import annotations

import datetime
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Model

from ledger.models import Checkpoint, Entry
from traceability import gs1
from traceability.consumer import check, verdict
from traceability.models import (
    Alert,
    Batch,
    Excursion,
    Organisation,
    Product,
    RecallItem,
    SerialNumber,
    Shipment,
    ShipmentItem,
    TemperatureContract,
)
from traceability.services.monitoring import GAP
from traceability.services.recalls import serial_order


class UnknownError(Exception):
    """The link names a product or variant that was never registered: the answer is a 404.

    (A lot never registered is for the caller to judge: the page answers 404, a
    verification request "no match".)
    """

    def __init__(self, what: str, *, product: ProductFacts | None = None) -> None:
        super().__init__(what)
        self.what = what  # "product", "variant" or "batch"
        self.product = product


@dataclass(frozen=True)
class ProductFacts:
    gtin: str
    name: str
    dosage_form: str
    strength: str
    manufacturer: str
    manufacturer_gln: str


@dataclass(frozen=True)
class RecallFacts:
    """What anyone may know of a recall (its ``recall.issued`` ledger entry is public)."""

    reference: str
    issued_at: datetime.datetime
    classification: str  # "I", "II" or "III" (FDA)
    instructions: str


@dataclass(frozen=True)
class LedgerRecord:
    """A public ledger entry as anyone may check it (spec/ledger.md)."""

    seq: int
    hash: str  # lowercase hex of the leaf hash
    time: datetime.datetime
    checkpointed: bool  # a signed checkpoint covers it, so an inclusion proof can be served now


@dataclass(frozen=True)
class Pack:
    """Everything a consumer page shows, and a verification answer judges, about one Digital Link."""

    link: gs1.DigitalLink
    product: ProductFacts
    batch: check.BatchFacts | None  # None: the link names no lot, or a lot never registered
    unit: check.UnitFacts | None  # the unit the serial names, whichever batch it was issued for
    recall: RecallFacts | None  # the recall behind a recalled batch or unit, newest first
    legs: tuple[verdict.Leg, ...]
    ledger: LedgerRecord | None

    def judged(self, *, today: datetime.date) -> check.Check:
        """The one judgement of the pack's code that the page and the verification answer both give."""
        return check.judge(
            batch=self.batch,
            unit=self.unit,
            serial_asked=self.link.serial is not None,
            expiry=self.link.expiry,
            today=today,
        )


def _table(model: type[Model]) -> str:
    return f'"{model._meta.db_table}"'


# One query, one round trip: the pack row (the product, the batch its lot names, the unit its serial names, the
# registration entry) repeated beside one row per leg (kind 0), excursion (1) and counted alert (2) of the batch,
# or beside nulls when it has none. A data gap counts unless late readings filled it (then the system resolved
# it, nobody did); limits exceeded count always.
_PACK_SQL = f"""
WITH pack AS (
    SELECT p.gtin, p.name, p.dosage_form, p.strength, o.name AS maker, o.gln,
           b.id AS batch_id, b.lot, b.expires_on, b.status, ub.lot AS unit_lot, ub.expires_on AS unit_expires_on,
           s.status AS unit_status, e.seq, e.hash, e.time, (SELECT MAX(size) FROM {_table(Checkpoint)}) AS size
    FROM {_table(Product)} p
    JOIN {_table(Organisation)} o ON o.id = p.manufacturer_id
    LEFT JOIN {_table(Batch)} b ON b.product_id = p.id AND b.lot = %s
    LEFT JOIN {_table(SerialNumber)} s ON s.product_id = p.id AND s.serial = %s
    LEFT JOIN {_table(Batch)} ub ON ub.id = s.batch_id
    LEFT JOIN {_table(Entry)} e ON e.seq = (
        SELECT MIN(seq) FROM {_table(Entry)} WHERE public = %s AND type = %s AND subject = %s
    )
    WHERE p.gtin = %s
),
legs AS (
    SELECT s.id, s.status, s.dispatched_at, s.closed_at, c.min_celsius, c.max_celsius
    FROM {_table(Shipment)} s
    JOIN {_table(ShipmentItem)} i ON i.shipment_id = s.id
    LEFT JOIN {_table(TemperatureContract)} c ON c.shipment_id = s.id
    WHERE i.batch_id = (SELECT batch_id FROM pack) AND s.status <> %s
),
detail AS (
    SELECT 0 AS kind, id AS shipment_id, id AS row_id, status AS text, dispatched_at AS began, closed_at AS ended,
           min_celsius AS low, max_celsius AS high, NULL AS peak, NULL AS seconds
    FROM legs
    UNION ALL
    SELECT 1, x.shipment_id, x.id, x.direction, x.started_at, x.ended_at, NULL, NULL, x.peak_celsius,
           x.duration_seconds
    FROM {_table(Excursion)} x WHERE x.shipment_id IN (SELECT id FROM legs)
    UNION ALL
    SELECT 2, a.shipment_id, a.id, a.key, NULL, NULL, NULL, NULL, NULL, NULL
    FROM {_table(Alert)} a
    WHERE a.shipment_id IN (SELECT id FROM legs)
      AND ((a.key = %s AND (a.status <> %s OR a.resolved_by_id IS NOT NULL)) OR a.key IN (%s, %s))
)
SELECT pack.*, detail.* FROM pack LEFT JOIN detail ON 1 = 1
ORDER BY detail.kind, detail.began, detail.row_id
"""  # noqa: S608 (table names from our models; every value is a parameter)
_PACK_COLUMNS = 17


def pack_read(link: gs1.DigitalLink, *, now: datetime.datetime) -> Pack:
    """Reads the product, batch, unit, recall, legs and registration entry a Digital Link names.

    Raises ``UnknownError`` for a GTIN or variant never registered. A lot never
    registered leaves ``batch`` None; a serial never issued leaves ``unit`` None.
    """
    subject = f"batch:{link.gtin}:{link.lot}" if link.lot is not None else f"product:{link.gtin}"
    event_type = "batch.registered" if link.lot is not None else "product.registered"
    limits = [limit.value for limit in verdict.Limit]
    parameters = [link.lot, link.serial, True, event_type, subject, link.gtin, Shipment.Status.PLANNED, GAP]
    rows = _fetch(_PACK_SQL, [*parameters, Alert.Status.RESOLVED, *limits])
    if not rows:
        raise UnknownError("product")
    row = rows[0]
    gtin, name, form, strength, maker, maker_gln = row[:6]
    product = ProductFacts(gtin, name, form, strength, maker, maker_gln)
    if link.cpv is not None:
        raise UnknownError("variant", product=product)  # ColdTrace registers no product variants (AI 22)
    batch_id, lot, expires_on, status, unit_lot, unit_expires_on, unit_status, seq, digest, time, size = row[
        6:_PACK_COLUMNS
    ]
    batch = None if batch_id is None else check.BatchFacts(lot, _date(expires_on), status)
    unit = None if unit_lot is None else check.UnitFacts(unit_lot, _date(unit_expires_on), unit_status)
    recalled = status == Batch.Status.RECALLED or (
        unit_status == SerialNumber.Status.RECALLED and batch is not None and unit is not None and unit.lot == lot
    )
    ledger = None
    if seq is not None:
        ledger = LedgerRecord(seq, bytes(digest).hex(), _moment(time), size is not None and size > seq)
    return Pack(
        link=link,
        product=product,
        batch=batch,
        unit=unit,
        recall=_recall(batch_id, link.serial) if recalled else None,
        legs=_legs([row[_PACK_COLUMNS:] for row in rows], now),
        ledger=ledger,
    )


def _recall(batch_id: int, serial: str | None) -> RecallFacts | None:
    """The newest recall that names the whole batch or a serial range holding the unit, else the newest naming the
    batch at all. Only read for a recalled batch or unit, so a rare second query."""
    items = RecallItem.objects.filter(batch_id=batch_id).order_by("-recall__issued_at", "-recall_id")
    found = list(
        items.values_list(
            "serial_from",
            "serial_to",
            "recall__reference",
            "recall__issued_at",
            "recall__classification",
            "recall__instructions",
        )
    )
    position = serial_order(serial) if serial is not None else None

    def covers(low: str, high: str) -> bool:
        return not low or (position is not None and serial_order(low) <= position <= serial_order(high))

    chosen = next((row for row in found if covers(row[0], row[1])), found[0] if found else None)
    if chosen is None:
        return None  # the status was set without a recall (by hand, or before recalls were recorded)
    return RecallFacts(reference=chosen[2], issued_at=chosen[3], classification=chosen[4], instructions=chosen[5])


def _legs(rows: list[tuple[Any, ...]], now: datetime.datetime) -> tuple[verdict.Leg, ...]:
    """The batch's dispatched shipments as legs, in dispatch order, with their excursions and counted alerts."""
    shipments: list[tuple[Any, ...]] = []
    excursions: dict[int, list[verdict.ExcursionFact]] = defaultdict(list)
    keys: dict[int, list[str]] = defaultdict(list)
    for kind, shipment_id, _row_id, text, began, ended, low, high, peak, seconds in rows:
        if kind is None:
            continue  # the pack's row beside nulls: the batch has no legs
        if kind == 0:
            shipments.append((shipment_id, text, began, ended, low, high))
        elif kind == 1:
            excursions[shipment_id].append(excursion_fact(text, peak, seconds, ended))
        else:
            keys[shipment_id].append(text)
    return tuple(
        leg(
            number,
            status=status,
            celsius=(_decimal(low), _decimal(high)),
            dispatched_at=_moment(dispatched_at),
            closed_at=_moment(closed_at) if closed_at is not None else None,
            excursions=excursions[pk],
            keys=keys[pk],
            now=now,
        )
        for number, (pk, status, dispatched_at, closed_at, low, high) in enumerate(shipments, start=1)
    )


def excursion_fact(
    direction: str, peak_celsius: float, duration_seconds: int, ended_at: datetime.datetime | None
) -> verdict.ExcursionFact:
    return verdict.ExcursionFact(
        direction=verdict.Direction(direction),
        peak_celsius=peak_celsius,
        duration_seconds=duration_seconds,
        ongoing=ended_at is None,
    )


def leg(
    number: int,
    *,
    status: str,
    celsius: tuple[Decimal, Decimal],
    dispatched_at: datetime.datetime | None,
    closed_at: datetime.datetime | None,
    excursions: list[verdict.ExcursionFact],
    keys: list[str],
    now: datetime.datetime,
) -> verdict.Leg:
    """A dispatched shipment as a leg: its contract range, excursions, and the keys of its alerts that
    count (limits exceeded, data gaps not filled by late readings)."""
    assert dispatched_at is not None  # a database constraint: dispatched unless planned
    return verdict.Leg(
        number=number,
        state=verdict.LegState(status),
        min_celsius=celsius[0],
        max_celsius=celsius[1],
        seconds=verdict.leg_seconds(dispatched_at, closed_at, now),
        excursions=tuple(excursions),
        limits_exceeded=frozenset(verdict.Limit(key) for key in keys if key != GAP),
        data_gaps=keys.count(GAP),
    )


def _fetch(sql: str, parameters: list[Any]) -> list[tuple[Any, ...]]:
    """The rows of a query. On PostgreSQL as a prepared statement, planned once per connection: planning the
    query above took four times as long as running it. The statement is named after its text, so a changed
    query never meets an old plan."""
    rows: list[tuple[Any, ...]]
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.execute(sql, parameters)
            rows = cursor.fetchall()
            return rows
        name = "consumer_" + hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()
        raw = connection.connection
        held: tuple[Any, set[str]] | None = getattr(connection, "_consumer_prepared", None)
        # The raw connection itself is held, not its id: a new connection can never pass for the old one.
        if held is None or held[0] is not raw:
            held = (raw, set())
            connection._consumer_prepared = held  # type: ignore[attr-defined]
        if name not in held[1]:
            cursor.execute(f"PREPARE {name} AS {_numbered(sql)}")
            held[1].add(name)
        cursor.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(parameters))})", parameters)
        rows = cursor.fetchall()
        return rows


def _numbered(sql: str) -> str:
    """%s placeholders as PostgreSQL's $1, $2...: what PREPARE takes."""
    parts = sql.split("%s")
    return "".join(part + (f"${number}" if number < len(parts) else "") for number, part in enumerate(parts, start=1))


# Values as either database returns them ------------------------------------------------------------


def _date(value: datetime.date | str) -> datetime.date:
    return value if isinstance(value, datetime.date) else datetime.date.fromisoformat(value)


def _moment(value: datetime.datetime | str) -> datetime.datetime:
    moment = value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)  # SQLite keeps UTC, naive


def _decimal(value: Decimal | float | int | str) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))
