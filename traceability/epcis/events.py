"""The platform's own facts as EPCIS 2.0 ObjectEvents, for one organisation, a page at a time.

| fact (table)                                  | bizStep       | disposition             |
| --------------------------------------------- | ------------- | ----------------------- |
| batch registered (Batch), action ADD, ilmd    | commissioning | active                  |
| dispatch (CustodyEvent dispatch)              | shipping      | in_transit              |
| hand-over (CustodyEvent handover)             | accepting     | in_transit              |
| receipt (CustodyEvent receipt)                | receiving     | in_progress             |
| rejected delivery (Shipment rejected)         | receiving     | non_conformant          |
| quarantine (ledger ``batch.quarantined``)     | holding       | non_sellable_other      |
| release (ledger ``batch.released``)           | inspecting    | sellable_not_accessible |
| recall (RecallItem)                           | holding       | recalled                |
| unit dispensed (Dispensing)                   | dispensing    | dispensed               |
| a partner's event (CapturedEvent)             | as captured   | as captured             |

A receipt or rejection closes a leg: it carries the leg's temperature summary
(min, max, mean over the readings measured between dispatch and arrival,
aggregated by the database) and one ALARM_CONDITION sensorElement per
excursion. Shipping events carry none: at dispatch there are no readings, and
an event must not change after it happened.

Who sees what: the events of the batches and shipments ``selectors`` lets the
organisation see. Quarantine and release are read from the ledger, whose
entries only the manufacturer (and regulators) may read, so only they get them.
Who dispensed a pack is seen by the dispenser, the manufacturer and regulators:
not by other holders of the batch. So is a partner's captured event, as it was
sent, with the eventID it was captured under, the capture's recordTime and what
its document's @context added to ours: by whoever captured it, the batch's
manufacturer and regulators (two organisations' events under one eventID are
both returned: each is what that partner said). One of our own events sent back (its eventID is
ours: ``own_event_ids`` at capture) is returned once, as ours.

Paging is by keyset on (eventTime, source, id): each source is read from the
token on, at most a page plus one row, and the sources are merged. A page costs
the same whatever its depth.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import heapq
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import Avg, Count, F, Max, Min, Q, QuerySet, Value
from django.db.models.functions import Concat
from django.utils import timezone

from ledger.models import Entry, PendingEvent
from traceability import selectors
from traceability.epcis import hashing
from traceability.epcis import vocabulary as v
from traceability.models import (
    Batch,
    CapturedEvent,
    CustodyEvent,
    Dispensing,
    Excursion,
    Organisation,
    RecallItem,
    SerialNumber,
    Shipment,
)
from traceability.services.recalls import range_serials

# Sources in the order they break ties at the same eventTime.
COMMISSION, CUSTODY, REJECTION, LEDGER, PENDING, RECALL, DISPENSING, CAPTURED = range(8)
DISPOSITION_TYPES = ("batch.quarantined", "batch.released")
EARLIEST = datetime.datetime.min.replace(tzinfo=datetime.UTC)
LATEST = datetime.datetime.max.replace(tzinfo=datetime.UTC)
OWN_AT_ONCE = 1000  # of a batch's own events in one millisecond, more than it can have
TEMPERATURE = "temperature"  # iot_ingest.models.Reading.Kind.TEMPERATURE; traceability imports no iot_ingest


class TokenError(ValueError):
    """A nextPageToken this server did not write."""


@dataclass(frozen=True, order=True)
class Key:
    """Where an event stands in the result order."""

    time: datetime.datetime
    source: int
    pk: int

    def token(self) -> str:
        raw = json.dumps([self.time.isoformat(), self.source, self.pk], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str) -> Key:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            time, source, pk = json.loads(raw)
            moment = datetime.datetime.fromisoformat(time)
            if moment.tzinfo is None or type(source) is not int or type(pk) is not int:
                raise ValueError(token)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as error:
            raise TokenError("is not a token this server gave; start again without it.") from error
        return cls(moment, source, pk)


@dataclass(frozen=True)
class Query:
    """What the caller asked for; every field already checked."""

    organisation: Organisation
    per_page: int
    batch: int | None = None
    gtin: str | None = None
    lot: str | None = None
    classes: tuple[tuple[str, str | None], ...] = ()  # MATCH_anyEPCClass: (gtin, lot or None)
    since: datetime.datetime | None = None  # GE_eventTime
    until: datetime.datetime | None = None  # LT_eventTime
    object_events: bool = True  # eventType names ObjectEvent (or is absent)
    after: Key | None = None  # nextPageToken
    captured: bool = True  # partners' captured events too, not only the platform's own


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    next: Key | None


def events_page(query: Query) -> Page:
    """One page of the organisation's events, oldest first, each with its CBV 2.0 hash eventID."""
    if not query.object_events:
        return Page([], None)
    keys = list(heapq.merge(*(_keys(source, query) for source in _sources(query))))
    more = len(keys) > query.per_page
    keys = keys[: query.per_page]
    events = _build(keys)
    for event in events:
        if "eventID" not in event:  # a captured event keeps the ID it was captured under
            event["eventID"] = hashing.event_id(event, context=v.CONTEXT)
    return Page(events, keys[-1] if more else None)


def own_event_ids(batch: Batch, moment: datetime.datetime) -> set[str]:
    """The IDs of the platform's own events about the batch in the millisecond of ``moment`` (events give their
    time to the millisecond), all of them: as the batch's manufacturer sees them."""
    start = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    try:
        until: datetime.datetime | None = start + datetime.timedelta(milliseconds=1)
    except OverflowError:  # the last millisecond of year 9999: nothing comes after it
        until = None
    query = Query(
        organisation=batch.product.manufacturer,
        per_page=OWN_AT_ONCE,
        batch=batch.pk,
        since=start,
        until=until,
        captured=False,
    )
    return {event["eventID"] for event in events_page(query).events}


def document(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@context": v.CONTEXT,
        "type": "EPCISQueryDocument",
        "schemaVersion": v.SCHEMA_VERSION,
        "creationDate": v.when(timezone.now()),
        "epcisBody": {"queryResults": {"queryName": "SimpleEventQuery", "resultsBody": {"eventList": events}}},
    }


# Which rows -----------------------------------------------------------------------------


def _batches(query: Query) -> QuerySet[Batch]:
    batches = selectors.visible_batches(query.organisation)
    if query.batch is not None:
        batches = batches.filter(pk=query.batch)
    if query.gtin is not None:
        batches = batches.filter(product__gtin=query.gtin)
    if query.lot is not None:
        batches = batches.filter(lot=query.lot)
    if query.classes:
        wanted = Q()
        for gtin, lot in query.classes:
            wanted |= Q(product__gtin=gtin, lot=lot) if lot is not None else Q(product__gtin=gtin)
        batches = batches.filter(wanted)
    return batches


def _filtered(query: Query) -> bool:
    return query.batch is not None or query.gtin is not None or query.lot is not None or bool(query.classes)


def _shipments(query: Query) -> QuerySet[Shipment]:
    shipments = selectors.visible_shipments(query.organisation)
    if _filtered(query):
        shipments = shipments.filter(items__batch__in=_batches(query))
    return shipments


def _sources(query: Query) -> list[tuple[int, QuerySet[Any], str]]:
    """Each source: its rank, its rows for this caller and filter, the field holding its eventTime."""
    batches = _batches(query)
    shipments = _shipments(query)
    custody = CustodyEvent.objects.filter(shipment__in=shipments.values("pk"))
    rejected = Shipment.objects.filter(
        pk__in=shipments.values("pk"), status=Shipment.Status.REJECTED, closed_at__isnull=False
    )
    recalls = RecallItem.objects.filter(batch__in=batches.values("pk"))
    found: list[tuple[int, QuerySet[Any], str]] = [
        (COMMISSION, Batch.objects.filter(pk__in=batches.values("pk")), "created_at"),
        (CUSTODY, custody, "occurred_at"),
        (REJECTION, rejected, "closed_at"),
        (RECALL, recalls, "recall__issued_at"),
    ]
    own = batches if query.organisation.is_regulator else batches.filter(product__manufacturer=query.organisation)
    subjects = own.annotate(ledger_subject=Concat(Value("batch:"), F("product__gtin"), Value(":"), F("lot"))).values(
        "ledger_subject"
    )
    wanted = Q(type__in=DISPOSITION_TYPES, subject__in=subjects)
    found.append((LEDGER, Entry.objects.filter(wanted), "time"))
    found.append((PENDING, PendingEvent.objects.filter(wanted), "time"))
    dispensed = Dispensing.objects.filter(serial__batch__in=batches.values("pk"))
    if not query.organisation.is_regulator:
        mine = Q(organisation=query.organisation) | Q(serial__batch__product__manufacturer=query.organisation)
        dispensed = dispensed.filter(mine)
    found.append((DISPENSING, dispensed, "dispensed_at"))
    if query.captured:
        captured = CapturedEvent.objects.filter(batch__in=batches.values("pk"), ours=False)
        if not query.organisation.is_regulator:
            mine = Q(captured_by=query.organisation) | Q(batch__product__manufacturer=query.organisation)
            captured = captured.filter(mine)
        found.append((CAPTURED, captured, "event_time"))
    return found


def _keys(source: tuple[int, QuerySet[Any], str], query: Query) -> Iterator[Key]:
    rank, rows, time_field = source
    # PostgreSQL keeps times Python cannot read (year 0, say, from a capture before it checked): never read them.
    rows = rows.filter(**{f"{time_field}__range": (EARLIEST, LATEST)})
    if query.since is not None:
        rows = rows.filter(**{f"{time_field}__gte": query.since})
    if query.until is not None:
        rows = rows.filter(**{f"{time_field}__lt": query.until})
    after = query.after
    if after is not None:
        if rank > after.source:
            rows = rows.filter(**{f"{time_field}__gte": after.time})
        elif rank < after.source:
            rows = rows.filter(**{f"{time_field}__gt": after.time})
        else:
            rows = rows.filter(
                Q(**{f"{time_field}__gt": after.time}) | Q(**{time_field: after.time, "pk__gt": after.pk})
            )
    rows = rows.order_by(time_field, "pk").values_list(time_field, "pk")[: query.per_page + 1]
    return (Key(time, rank, pk) for time, pk in rows)


# What each row says -----------------------------------------------------------------------


def _build(keys: list[Key]) -> list[dict[str, Any]]:
    wanted: dict[int, list[int]] = defaultdict(list)
    for key in keys:
        wanted[key.source].append(key.pk)
    built: dict[tuple[int, int], dict[str, Any]] = {}
    for source, builder in _BUILDERS.items():
        if wanted[source]:
            built |= {(source, pk): event for pk, event in builder(wanted[source])}
    return [built[(key.source, key.pk)] for key in keys]


def _commissioning(pks: list[int]) -> Iterable[tuple[int, dict[str, Any]]]:
    batches = Batch.objects.filter(pk__in=pks).select_related("product")
    serials: dict[int, list[str]] = defaultdict(list)
    for batch_id, serial in (
        SerialNumber.objects.filter(batch__in=pks).order_by("serial").values_list("batch", "serial")
    ):
        serials[batch_id].append(serial)
    for batch in batches:
        gtin = batch.product.gtin
        unserialised = batch.quantity - len(serials[batch.pk])
        yield (
            batch.pk,
            v.object_event(
                time=batch.created_at,
                action="ADD",
                biz_step="commissioning",
                disposition="active",
                epcList=[v.product_instance(gtin, serial) for serial in serials[batch.pk]],
                quantityList=[{"epcClass": v.product_class(gtin, batch.lot), "quantity": unserialised}]
                if unserialised > 0
                else None,
                ilmd={"cbvmda:lotNumber": batch.lot, "cbvmda:itemExpirationDate": batch.expires_on.isoformat()},
            ),
        )


def _shipment_rows(pks: Iterable[int]) -> dict[int, Shipment]:
    related = ("shipper", "carrier", "consignee", "origin", "destination")
    return Shipment.objects.select_related(*related).prefetch_related("items__batch__product").in_bulk(list(pks))


def _quantities(shipment: Shipment) -> list[dict[str, Any]]:
    return [
        {"epcClass": v.product_class(item.batch.product.gtin, item.batch.lot), "quantity": item.quantity}
        for item in shipment.items.all()
    ]


def _leg(shipment: Shipment) -> dict[str, Any]:
    """The parties of the whole transfer: from the shipper at the origin to the consignee at the destination."""
    return {
        "bizTransactionList": [v.shipment_transaction(shipment.shipper.gln, shipment.reference)],
        "sourceList": v.sources(owner=shipment.shipper.gln, holder=shipment.shipper.gln, site=shipment.origin.gln),
        "destinationList": v.destinations(
            owner=shipment.consignee.gln, holder=shipment.consignee.gln, site=shipment.destination.gln
        ),
    }


def _custody(pks: list[int]) -> Iterable[tuple[int, dict[str, Any]]]:
    related = ("from_organisation", "to_organisation", "site")
    events = list(CustodyEvent.objects.filter(pk__in=pks).select_related(*related))
    shipments = _shipment_rows({event.shipment_id for event in events})
    closing = [shipments[e.shipment_id] for e in events if e.kind == CustodyEvent.Kind.RECEIPT]
    sensors = _sensor_elements(closing)
    for event in events:
        shipment = shipments[event.shipment_id]
        site = event.site.gln if event.site else None
        common = {
            "quantityList": _quantities(shipment),
            **v.located(site),
        }
        if event.kind == CustodyEvent.Kind.DISPATCH:
            body = v.object_event(
                time=event.occurred_at,
                action="OBSERVE",
                biz_step="shipping",
                disposition="in_transit",
                **common,
                **_leg(shipment),
            )
        elif event.kind == CustodyEvent.Kind.HANDOVER:
            body = v.object_event(
                time=event.occurred_at,
                action="OBSERVE",
                biz_step="accepting",
                disposition="in_transit",
                **common,
                bizTransactionList=[v.shipment_transaction(shipment.shipper.gln, shipment.reference)],
                sourceList=[{"source": v.party(event.from_organisation.gln), "type": "possessing_party"}],
                destinationList=[{"destination": v.party(event.to_organisation.gln), "type": "possessing_party"}],
            )
        else:
            body = v.object_event(
                time=event.occurred_at,
                action="OBSERVE",
                biz_step="receiving",
                disposition="in_progress",
                **common,
                **_leg(shipment),
                sensorElementList=sensors.get(shipment.pk),
            )
        yield event.pk, body


def _rejections(pks: list[int]) -> Iterable[tuple[int, dict[str, Any]]]:
    shipments = _shipment_rows(pks)
    sensors = _sensor_elements(list(shipments.values()))
    for shipment in shipments.values():
        assert shipment.closed_at is not None  # the source selects closed shipments only
        site = shipment.destination.gln
        yield (
            shipment.pk,
            v.object_event(
                time=shipment.closed_at,
                action="OBSERVE",
                biz_step="receiving",
                disposition="non_conformant",
                quantityList=_quantities(shipment),
                **v.located(site),
                **_leg(shipment),
                sensorElementList=sensors.get(shipment.pk),
            ),
        )


def _sensor_elements(shipments: list[Shipment]) -> dict[int, list[dict[str, Any]]]:
    """Each closed leg's temperature summary and excursion alarms, aggregated in the database."""
    if not shipments:
        return {}
    leg = Q(
        readings__kind=TEMPERATURE,
        readings__measured_at__gte=F("dispatched_at"),
        readings__measured_at__lte=F("closed_at"),
    )
    summaries = (
        Shipment.objects.filter(pk__in=[s.pk for s in shipments])
        .annotate(
            low=Min("readings__value", filter=leg),
            high=Max("readings__value", filter=leg),
            mean=Avg("readings__value", filter=leg),
            count=Count("readings", filter=leg),
        )
        .values_list("pk", "dispatched_at", "closed_at", "low", "high", "mean", "count")
    )
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for pk, dispatched_at, closed_at, low, high, mean, count in summaries:
        if count and dispatched_at and closed_at:
            found[pk].append(v.temperature_summary(start=dispatched_at, end=closed_at, low=low, high=high, mean=mean))
    closed = {s.pk: s.closed_at for s in shipments}
    excursions = Excursion.objects.filter(shipment__in=list(closed)).order_by("started_at", "id")
    for pk, started_at, ended_at, direction, peak in excursions.values_list(
        "shipment", "started_at", "ended_at", "direction", "peak_celsius"
    ):
        end = ended_at or closed[pk] or started_at
        found[pk].append(v.excursion_alarm(start=started_at, end=end, direction=direction, peak=peak))
    return found


def _batches_by_subject(subjects: Iterable[str]) -> dict[str, Batch]:
    wanted = {tuple(subject.split(":", 2)[1:]) for subject in subjects}
    query = Q()
    for gtin, lot in wanted:
        query |= Q(product__gtin=gtin, lot=lot)
    batches = Batch.objects.filter(query).select_related("product") if wanted else []
    return {f"batch:{batch.product.gtin}:{batch.lot}": batch for batch in batches}


def _dispositions(rows: list[tuple[int, datetime.datetime, str, str]]) -> Iterable[tuple[int, dict[str, Any]]]:
    batches = _batches_by_subject(subject for _pk, _time, _type, subject in rows)
    for pk, time, event_type, subject in rows:
        batch = batches[subject]
        held = event_type == "batch.quarantined"
        yield (
            pk,
            v.object_event(
                time=time,
                action="OBSERVE",
                biz_step="holding" if held else "inspecting",
                disposition="non_sellable_other" if held else "sellable_not_accessible",
                quantityList=[{"epcClass": v.product_class(batch.product.gtin, batch.lot)}],
            ),
        )


def _ledger(pks: list[int]) -> Iterable[tuple[int, dict[str, Any]]]:
    return _dispositions(list(Entry.objects.filter(pk__in=pks).values_list("pk", "time", "type", "subject")))


def _pending(pks: list[int]) -> Iterable[tuple[int, dict[str, Any]]]:
    return _dispositions(list(PendingEvent.objects.filter(pk__in=pks).values_list("pk", "time", "type", "subject")))


def _recalls(pks: list[int]) -> Iterable[tuple[int, dict[str, Any]]]:
    items = list(RecallItem.objects.filter(pk__in=pks).select_related("recall", "batch__product"))
    for item in items:
        gtin, lot = item.batch.product.gtin, item.batch.lot
        if item.whole_batch:
            epcs: list[str] = []
            quantities = [{"epcClass": v.product_class(gtin, lot)}]
        else:
            serials = sorted(range_serials(item.batch, item.serial_from, item.serial_to).values())
            epcs = [v.product_instance(gtin, serial) for serial in serials]
            quantities = [] if epcs else [{"epcClass": v.product_class(gtin, lot)}]
        yield (
            item.pk,
            v.object_event(
                time=item.recall.issued_at,
                action="OBSERVE",
                biz_step="holding",
                disposition="recalled",
                epcList=epcs,
                quantityList=quantities,
            ),
        )


def _dispensings(pks: list[int]) -> Iterable[tuple[int, dict[str, Any]]]:
    for dispensing in Dispensing.objects.filter(pk__in=pks).select_related("serial__batch__product", "site"):
        serial = dispensing.serial
        yield (
            dispensing.pk,
            v.object_event(
                time=dispensing.dispensed_at,
                action="OBSERVE",
                biz_step="dispensing",
                disposition="dispensed",
                epcList=[v.product_instance(serial.batch.product.gtin, serial.serial)],
                **v.located(dispensing.site.gln),
            ),
        )


def _captured(pks: list[int]) -> Iterable[tuple[int, dict[str, Any]]]:
    for row in CapturedEvent.objects.filter(pk__in=pks):
        event = {key: value for key, value in row.event.items() if key not in ("@context", "recordTime")}
        contexts = [*(row.context or []), *_parts(row.event.get("@context"))]
        unique = [part for n, part in enumerate(contexts) if part not in contexts[:n]]
        event = {"@context": unique, **event} if unique else event
        yield row.pk, {**event, "eventID": row.event_id, "recordTime": v.when(row.captured_at)}


def _parts(context: Any) -> list[Any]:
    return [] if context is None else list(context) if isinstance(context, list) else [context]


def context_beyond_ours(context: Any) -> list[Any] | None:
    """What a captured document's @context adds to the one our query documents carry, or None."""
    extra = [part for part in _parts(context) if part not in v.CONTEXT]
    return extra or None


_BUILDERS = {
    COMMISSION: _commissioning,
    CUSTODY: _custody,
    REJECTION: _rejections,
    LEDGER: _ledger,
    PENDING: _pending,
    RECALL: _recalls,
    DISPENSING: _dispensings,
    CAPTURED: _captured,
}
