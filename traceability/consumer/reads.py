"""What a consumer page needs from the database, in a fixed number of queries whatever the batch's history.

Everything read here is public: the product, its manufacturer, the batch and
its status, whether a serial was issued for it, the cold-chain facts of its
legs (no parties, references or quantities), and the public ledger entry
that registered it.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Q

from ledger.models import Checkpoint, Entry
from traceability import gs1
from traceability.consumer import verdict
from traceability.models import Alert, Batch, Excursion, Product, SerialNumber, Shipment
from traceability.services.monitoring import GAP


class UnknownError(Exception):
    """The link names a product, variant or batch that was never registered: the answer is a 404."""

    def __init__(self, what: str, *, product: Product | None = None) -> None:
        super().__init__(what)
        self.what = what  # "product", "variant" or "batch"
        self.product = product


@dataclass(frozen=True)
class LedgerRecord:
    """A public ledger entry as anyone may check it (spec/ledger.md)."""

    seq: int
    hash: str  # lowercase hex of the leaf hash
    time: datetime.datetime
    checkpointed: bool  # a signed checkpoint covers it, so an inclusion proof can be served now


@dataclass(frozen=True)
class Pack:
    """Everything a consumer page shows about one Digital Link."""

    link: gs1.DigitalLink
    product: Product
    batch: Batch | None
    # The unit's status when the link names a serial issued for this batch; None otherwise.
    serial_status: str | None
    legs: tuple[verdict.Leg, ...]
    ledger: LedgerRecord | None


def pack_read(link: gs1.DigitalLink, *, now: datetime.datetime) -> Pack:
    """Reads the product, batch, unit, legs and registration entry a Digital Link names.

    Raises ``UnknownError`` for a GTIN, variant or lot never registered. A serial
    never issued for the batch is not an error: the page warns about it.
    """
    product = Product.objects.select_related("manufacturer").filter(gtin=link.gtin).first()
    if product is None:
        raise UnknownError("product")
    if link.cpv is not None:
        raise UnknownError("variant", product=product)  # ColdTrace registers no product variants (AI 22)
    if link.lot is None:
        return Pack(link, product, None, None, (), _registration("product.registered", f"product:{product.gtin}"))
    batch = Batch.objects.filter(product=product, lot=link.lot).first()
    if batch is None:
        raise UnknownError("batch", product=product)
    batch.product = product  # spares a query wherever the batch reaches for its product
    serial_status = None
    if link.serial is not None:
        issued = SerialNumber.objects.filter(batch=batch, serial=link.serial)
        serial_status = issued.values_list("status", flat=True).first()
    return Pack(
        link=link,
        product=product,
        batch=batch,
        serial_status=serial_status,
        legs=_legs(batch, now),
        ledger=_registration("batch.registered", f"batch:{product.gtin}:{batch.lot}"),
    )


def _legs(batch: Batch, now: datetime.datetime) -> tuple[verdict.Leg, ...]:
    """The batch's dispatched shipments as legs, in dispatch order: three queries of plain rows for any
    number of legs (model instances and prefetching cost more than all the rest for a batch on hundreds)."""
    legs = Shipment.objects.filter(items__batch=batch).exclude(status=Shipment.Status.PLANNED)
    rows = list(
        legs.order_by("dispatched_at", "id")
        .values_list("id", "status", "dispatched_at", "closed_at", "contract__min_celsius", "contract__max_celsius")
        .distinct()
    )
    ids = legs.values("id")  # a subquery: hundreds of ids are not sent back and forth
    excursions: dict[int, list[verdict.ExcursionFact]] = defaultdict(list)
    found = Excursion.objects.filter(shipment_id__in=ids).order_by("started_at", "id")
    for shipment_id, direction, peak, duration, ended_at in found.values_list(
        "shipment_id", "direction", "peak_celsius", "duration_seconds", "ended_at"
    ):
        excursions[shipment_id].append(excursion_fact(direction, peak, duration, ended_at))
    # A data gap counts unless late readings filled it (then the system resolved it, nobody did).
    unfilled_gap = Q(key=GAP) & (~Q(status=Alert.Status.RESOLVED) | Q(resolved_by__isnull=False))
    flagged = Alert.objects.filter(unfilled_gap | Q(key__in=[limit.value for limit in verdict.Limit]))
    keys: dict[int, list[str]] = defaultdict(list)
    for shipment_id, key in flagged.filter(shipment_id__in=ids).values_list("shipment_id", "key"):
        keys[shipment_id].append(key)
    return tuple(
        leg(
            number,
            status=status,
            celsius=(low, high),
            dispatched_at=dispatched_at,
            closed_at=closed_at,
            excursions=excursions[pk],
            keys=keys[pk],
            now=now,
        )
        for number, (pk, status, dispatched_at, closed_at, low, high) in enumerate(rows, start=1)
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


def _registration(event_type: str, subject: str) -> LedgerRecord | None:
    """The public entry that registered the subject, if the sequencer has written it yet.

    The page is the same for everyone (it is cached publicly), so it shows only
    what an anonymous reader may read: public entries. ``batch.registered`` and
    ``product.registered`` are public types (ledger/events.py).
    """
    entry = (
        Entry.objects.filter(public=True, type=event_type, subject=subject)
        .order_by("seq")
        .values_list("seq", "hash", "time")
        .first()
    )
    if entry is None:
        return None
    seq, digest, time = entry
    return LedgerRecord(
        seq=seq, hash=bytes(digest).hex(), time=time, checkpointed=Checkpoint.objects.filter(size__gt=seq).exists()
    )
