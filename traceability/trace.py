"""Where a batch went and where its units are now; what passed through a shipment or a site.

Everything here is read from the domain tables (shipments, their items and
custody events, excursions, alerts, recalls) and the batch's status entries in
the ledger, in a fixed number of queries whatever the batch's size. Callers
decide who may see a trace; nothing here checks access.
"""

from __future__ import annotations

import datetime
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.db.models import Count, Min, Q
from django.db.models.functions import TruncHour
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ledger.models import Entry
from traceability.models import (
    Alert,
    Batch,
    CustodyEvent,
    Dispensing,
    Excursion,
    Organisation,
    RecallDepth,
    RecallItem,
    RecallNotice,
    Shipment,
    ShipmentItem,
    Site,
)

STATUS_EVENTS = ("batch.quarantined", "batch.released")
SHIPMENT_PARTIES = ("shipper", "carrier", "consignee", "custodian", "origin", "destination")
ORGANISATION_PARTIES = ("shipper", "carrier", "consignee", "custodian")
SITE_PASSAGES_SHOWN = 1000


# Where the units are ---------------------------------------------------------------------


@dataclass(frozen=True)
class Stock:
    """What one organisation holds of the batch."""

    organisation: Organisation
    sites: tuple[tuple[Site | None, int], ...]  # units on hand by site; None: made here, at no recorded site
    free: int  # what it may still ship: selectors.batch_available

    @property
    def on_hand(self) -> int:
        return sum(units for _, units in self.sites)


@dataclass(frozen=True)
class Whereabouts:
    stock: tuple[Stock, ...]  # the manufacturer first, then by name
    moving: tuple[ShipmentItem, ...]  # in transit, or refused and still with the carrier


def batch_whereabouts(batch: Batch, items: Iterable[ShipmentItem]) -> Whereabouts:
    """Where the batch's units are, from the shipments that carried them (``items``, shipments joined).

    Units are on hand where a delivery brought them (its destination site) or,
    for the manufacturer, where they were made, less what left from there:
    dispatched, delivered or refused, and what was dispensed there. Refused
    units stay with their carrier but count back to the shipper's free stock;
    planned ones are still on hand but no longer free (the rules of
    ``selectors.batch_available``). One query, for the dispensed units.
    """
    manufacturer = batch.product.manufacturer
    organisations = {manufacturer.pk: manufacturer}
    sites: dict[int | None, Site | None] = {None: None}
    balance: dict[int, dict[int | None, int]] = defaultdict(lambda: defaultdict(int))
    free: dict[int, int] = defaultdict(int)
    balance[manufacturer.pk][None] += batch.quantity
    free[manufacturer.pk] += batch.quantity
    moving = []
    for item in items:
        shipment, units = item.shipment, item.quantity
        organisations |= {shipment.shipper_id: shipment.shipper, shipment.consignee_id: shipment.consignee}
        sites |= {shipment.origin_id: shipment.origin, shipment.destination_id: shipment.destination}
        if shipment.status != Shipment.Status.REJECTED:
            free[shipment.shipper_id] -= units
        if shipment.status == Shipment.Status.PLANNED:
            continue
        balance[shipment.shipper_id][shipment.origin_id] -= units
        if shipment.status == Shipment.Status.DELIVERED:
            balance[shipment.consignee_id][shipment.destination_id] += units
            free[shipment.consignee_id] += units
        else:
            moving.append(item)
    dispensed = Dispensing.objects.filter(serial__batch=batch).values_list("organisation", "site")
    for organisation, site, units in dispensed.annotate(units=Count("id")).order_by():
        balance[organisation][site] -= units
        free[organisation] -= units
    stock = []
    for pk in sorted(balance.keys() | free.keys(), key=lambda pk: (pk != manufacturer.pk, organisations[pk].name)):
        on_hand = tuple((sites[site], units) for site, units in _settled(balance[pk], sites))
        if on_hand or free[pk]:
            stock.append(Stock(organisations[pk], on_hand, free[pk]))
    return Whereabouts(tuple(stock), tuple(moving))


def _settled(balance: dict[int | None, int], sites: dict[int | None, Site | None]) -> list[tuple[int | None, int]]:
    """Site balances with no site below zero.

    Units shipped from a site no delivery brought them to were kept elsewhere
    in the organisation: they are taken from its stock at no recorded site
    first, then from its other sites by name.
    """
    deficit = -sum(units for units in balance.values() if units < 0)
    order = sorted(
        (pk for pk, units in balance.items() if units > 0),
        key=lambda pk: (pk is not None, getattr(sites[pk], "name", "")),
    )
    settled = []
    for pk in order:
        taken = min(balance[pk], deficit)
        deficit -= taken
        if balance[pk] > taken:
            settled.append((pk, balance[pk] - taken))
    return settled


def carrying(batches: Iterable[Batch]) -> list[ShipmentItem]:
    """Every shipment item of the batches, oldest shipment first, with the shipment's parties and sites.

    Three plain queries rather than one seven-table join, which PostgreSQL
    takes longer to plan than to run.
    """
    items = list(
        ShipmentItem.objects.filter(batch__in=list(batches))
        .select_related("shipment")
        .order_by("shipment__created_at", "shipment__id", "id")
    )
    shipments = [item.shipment for item in items]
    organisations = Organisation.objects.in_bulk(
        {getattr(shipment, f"{name}_id") for shipment in shipments for name in ORGANISATION_PARTIES}
    )
    sites = Site.objects.in_bulk({pk for shipment in shipments for pk in (shipment.origin_id, shipment.destination_id)})
    for shipment in shipments:
        for name in ORGANISATION_PARTIES:
            setattr(shipment, name, organisations[getattr(shipment, f"{name}_id")])
        shipment.origin, shipment.destination = sites[shipment.origin_id], sites[shipment.destination_id]
    return items


# A batch's life, in order ----------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One thing that happened, in plain words, with what it concerns."""

    time: datetime.datetime
    kind: str  # dotted, after the ledger's event types: "shipment.dispatched", "recall.issued", ...
    text: str
    shipment: str = ""  # its reference, when the step belongs to a shipment
    organisation: str = ""  # who did it, or who holds the goods after it
    site: str = ""


@dataclass(frozen=True)
class BatchTrace:
    batch: Batch
    steps: tuple[Step, ...]  # oldest first
    whereabouts: Whereabouts
    items: tuple[ShipmentItem, ...]


def batch_trace(batch: Batch) -> BatchTrace:
    """The batch's whole life in order, and where its units are now (at most 12 queries, whatever its size)."""
    batch = Batch.objects.select_related("product__manufacturer").get(pk=batch.pk)
    items = carrying([batch])
    units = {item.shipment_id: item.quantity for item in items}
    manufacturer = batch.product.manufacturer
    steps = [
        Step(
            batch.created_at,
            "batch.registered",
            _("Batch registered: %(units)d units, expiring %(expiry)s.")
            % {"units": batch.quantity, "expiry": batch.expires_on.isoformat()},
            organisation=manufacturer.name,
        )
    ]
    steps += _shipments_steps([item.shipment for item in items], units)
    steps += _status_steps(batch)
    steps += _recall_steps(batch)
    steps += _dispensing_steps(batch)
    # Registration comes first even when a dispatch was recorded as having happened before it.
    steps.sort(key=lambda step: (step.kind != "batch.registered", step.time))
    return BatchTrace(batch, tuple(steps), batch_whereabouts(batch, items), tuple(items))


def shipment_trace(shipment: Shipment) -> tuple[Step, ...]:
    """A shipment's life: planned, dispatched, every hand-over, excursions and alerts, delivery or refusal."""
    shipment = Shipment.objects.select_related("shipper", "consignee", "origin", "destination").get(pk=shipment.pk)
    total = sum(ShipmentItem.objects.filter(shipment=shipment).values_list("quantity", flat=True))
    return tuple(sorted(_shipments_steps([shipment], {shipment.pk: total}), key=lambda step: step.time))


def _shipments_steps(shipments: Sequence[Shipment], units: dict[int, int]) -> list[Step]:
    """Each shipment's creation, custody events, excursions and alerts (3 queries for any number of shipments)."""
    by_pk = {shipment.pk: shipment for shipment in shipments}
    steps = []
    for shipment in shipments:
        # A dispatch recorded after the fact can predate the shipment's record; it was planned by then.
        planned = min(shipment.created_at, shipment.dispatched_at or shipment.created_at)
        steps.append(
            Step(
                planned,
                "shipment.created",
                _("Shipment planned: %(units)d units from %(origin)s to %(destination)s.")
                % {
                    "units": units.get(shipment.pk, 0),
                    "origin": shipment.origin.name,
                    "destination": shipment.destination.name,
                },
                shipment.reference,
                shipment.shipper.name,
                shipment.origin.name,
            )
        )
    custody = CustodyEvent.objects.filter(shipment__in=list(by_pk)).select_related(
        "from_organisation", "to_organisation", "site"
    )
    for event in custody:
        steps.append(_custody_step(event, by_pk[event.shipment_id]))
    for shipment in shipments:
        if shipment.status == Shipment.Status.REJECTED and shipment.closed_at is not None:
            # A refusal passes no custody: the shipment's own record says when and why.
            text = _("Refused by %(consignee)s: %(reason)s")
            names = {"consignee": shipment.consignee.name, "reason": shipment.rejection_reason}
            steps.append(
                Step(shipment.closed_at, "shipment.rejected", text % names, shipment.reference, shipment.consignee.name)
            )
    for excursion in Excursion.objects.filter(shipment__in=list(by_pk)):
        steps += _excursion_steps(excursion, by_pk[excursion.shipment_id])
    for alert in Alert.objects.filter(shipment__in=list(by_pk)).order_by("triggered_at", "id"):
        steps.append(
            Step(
                alert.triggered_at,
                "alert.raised",
                _("%(severity)s alert: %(message)s (%(status)s).")
                % {
                    "severity": alert.get_severity_display(),
                    "message": alert.message,
                    "status": alert.get_status_display().lower(),
                },
                by_pk[alert.shipment_id].reference,
            )
        )
    return steps


def _custody_step(event: CustodyEvent, shipment: Shipment) -> Step:
    where = event.site.name if event.site else event.location
    if event.kind == CustodyEvent.Kind.DISPATCH:
        kind, text = "shipment.dispatched", _("Dispatched by %(giver)s; %(taker)s takes custody.")
    elif event.kind == CustodyEvent.Kind.HANDOVER:
        kind, text = "custody.transferred", _("Handed over by %(giver)s to %(taker)s.")
    else:
        kind, text = "shipment.delivered", _("Received by %(taker)s.")
    names = {"giver": event.from_organisation.name, "taker": event.to_organisation.name}
    return Step(event.occurred_at, kind, text % names, shipment.reference, event.to_organisation.name, where)


def _excursion_steps(excursion: Excursion, shipment: Shipment) -> list[Step]:
    direction = excursion.get_direction_display().lower()
    steps = [
        Step(
            excursion.started_at,
            "excursion.started",
            _("Temperature excursion %(direction)s began (peak %(peak).1f °C).")
            % {"direction": direction, "peak": excursion.peak_celsius},
            shipment.reference,
        )
    ]
    if excursion.ended_at is not None:
        steps.append(
            Step(
                excursion.ended_at,
                "excursion.ended",
                _("Excursion ended after %(minutes)d min.") % {"minutes": round(excursion.duration_seconds / 60)},
                shipment.reference,
            )
        )
    return steps


def _status_steps(batch: Batch) -> list[Step]:
    """Quarantines and releases, as the ledger records them (with who and why)."""
    entries = Entry.objects.filter(subject=batch_subject(batch), type__in=STATUS_EVENTS).order_by("seq")
    steps = []
    for entry in entries:
        data = json.loads(bytes(entry.leaf))["data"]
        done = _("Quarantined") if entry.type == "batch.quarantined" else _("Released")
        steps.append(
            Step(
                entry.time,
                entry.type,
                _("%(done)s by %(by)s: %(reason)s")
                % {"done": done, "by": data.get("by", ""), "reason": data["reason"]},
                organisation=batch.product.manufacturer.name,
            )
        )
    return steps


def _recall_steps(batch: Batch) -> list[Step]:
    """Each recall naming the batch: issued, every acknowledgement, closed (2 queries)."""
    items = list(RecallItem.objects.filter(batch=batch).select_related("recall__initiated_by"))
    recalls = {item.recall_id: item for item in items}
    steps = []
    for item in items:
        recall = item.recall
        span = (
            _(" (serials %(first)s to %(last)s)") % {"first": item.serial_from, "last": item.serial_to}
            if item.serial_from
            else ""
        )
        steps.append(
            Step(
                recall.issued_at,
                "recall.issued",
                _("Recall %(reference)s, class %(class)s%(span)s: %(reason)s")
                % {
                    "reference": recall.reference,
                    "class": recall.classification,
                    "span": span,
                    "reason": recall.reason,
                },
                organisation=recall.initiated_by.name,
            )
        )
        if recall.closed_at is not None:
            steps.append(
                Step(
                    recall.closed_at,
                    "recall.closed",
                    _("Recall %(reference)s closed.") % {"reference": recall.reference},
                )
            )
    notices = RecallNotice.objects.filter(recall__in=list(recalls), acknowledged_at__isnull=False).select_related(
        "organisation"
    )
    for notice in notices:
        assert notice.acknowledged_at is not None
        steps.append(
            Step(
                notice.acknowledged_at,
                "recall.acknowledged",
                _("%(organisation)s acknowledged recall %(reference)s and found %(units)d units.")
                % {
                    "organisation": notice.organisation.name,
                    "reference": recalls[notice.recall_id].recall.reference,
                    "units": notice.units_found or 0,
                },
                organisation=notice.organisation.name,
            )
        )
    return steps


def _dispensing_steps(batch: Batch) -> list[Step]:
    """Units dispensed, by organisation, site and hour (one query, however many units)."""
    dispensed = (
        Dispensing.objects.filter(serial__batch=batch)
        .annotate(hour=TruncHour("dispensed_at"))
        .values_list("organisation__name", "site__name", "hour")
        .annotate(units=Count("id"), first=Min("dispensed_at"))
        .order_by("first")
    )
    return [
        Step(
            first,
            "unit.dispensed",
            ngettext("%(units)d unit dispensed.", "%(units)d units dispensed.", units) % {"units": units},
            organisation=organisation,
            site=site,
        )
        for organisation, site, _hour, units, first in dispensed
    ]


def batch_subject(batch: Batch) -> str:
    """The ledger subject of the batch's entries (spec/ledger.md)."""
    return f"batch:{batch.product.gtin}:{batch.lot}"


# What passed through a site --------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    """A shipment leaving or reaching a site, or handed over there, with what it carried."""

    time: datetime.datetime
    direction: str  # "out", "in" or "handover"
    shipment: Shipment
    items: tuple[ShipmentItem, ...]


def site_trace(
    site: Site, *, since: datetime.datetime | None = None, until: datetime.datetime | None = None
) -> tuple[list[Passage], bool]:
    """Shipments that left, reached or changed hands at the site, newest first; and whether more were left out.

    At most ``SITE_PASSAGES_SHOWN`` passages; narrow the time range for the rest.
    """
    window = Q()
    if since is not None:
        window &= Q(occurred_at__gte=since)
    if until is not None:
        window &= Q(occurred_at__lt=until)
    events = list(
        CustodyEvent.objects.filter(window)
        .filter(
            Q(site=site)
            | Q(kind=CustodyEvent.Kind.DISPATCH, shipment__origin=site)
            | Q(kind=CustodyEvent.Kind.RECEIPT, shipment__destination=site)
        )
        .select_related(*(f"shipment__{name}" for name in SHIPMENT_PARTIES))
        .order_by("-occurred_at", "-id")[: SITE_PASSAGES_SHOWN + 1]
    )
    more = len(events) > SITE_PASSAGES_SHOWN
    events = events[:SITE_PASSAGES_SHOWN]
    items: dict[int, list[ShipmentItem]] = defaultdict(list)
    shipped = ShipmentItem.objects.filter(shipment__in={event.shipment_id for event in events})
    for item in shipped.select_related("batch__product").order_by("id"):
        items[item.shipment_id].append(item)
    direction = {
        CustodyEvent.Kind.DISPATCH: "out",
        CustodyEvent.Kind.RECEIPT: "in",
        CustodyEvent.Kind.HANDOVER: "handover",
    }
    passages = [
        Passage(
            event.occurred_at, direction[CustodyEvent.Kind(event.kind)], event.shipment, tuple(items[event.shipment_id])
        )
        for event in events
    ]
    return passages, more


# A recall's reach ------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """An organisation a recall concerns: what it holds, carries or is about to receive of the batches."""

    organisation: Organisation
    sites: tuple[tuple[Site | None, int], ...]  # units on hand by site
    in_care: int  # units in its custody in transit (or refused and still with it)
    incoming: int  # units on their way to it
    notified: bool  # within the recall's depth (or the manufacturer, who is always told)

    @property
    def on_hand(self) -> int:
        return sum(units for _, units in self.sites)

    @property
    def units(self) -> int:
        """What is or will be with the organisation: on hand, in its care, on its way to it."""
        return self.on_hand + self.in_care + self.incoming


@dataclass(frozen=True)
class SerialRange:
    """A recall item that names serials, not a whole batch: its batch, ends, and how many serials it covers."""

    batch: Batch
    first: str
    last: str
    serials: int


@dataclass(frozen=True)
class Scope:
    holders: tuple[Holder, ...]  # the manufacturer first, then by name
    shipments: tuple[tuple[Shipment, int], ...]  # planned or moving shipments carrying the batches, with units
    units: int  # units on hand anywhere or moving
    ranges: tuple[SerialRange, ...] = ()  # a recall's serial ranges; holders and units are of whole batches

    @property
    def notified(self) -> tuple[Holder, ...]:
        return tuple(holder for holder in self.holders if holder.notified)


# Dispensers are the retail level (21 CFR 7.42(b)(1)): a wholesale-depth recall stops short of them.
RETAIL_KINDS = frozenset({Organisation.Kind.DISPENSER})


def recall_scope(batches: Sequence[Batch], *, depth: str) -> Scope:
    """Everyone who holds, carries or awaits units of the batches, from one read of their shipments."""
    items = carrying(batches)
    by_batch: dict[int, list[ShipmentItem]] = defaultdict(list)
    for item in items:
        by_batch[item.batch_id].append(item)
    organisations: dict[int, Organisation] = {}
    on_hand: dict[int, dict[Site | None, int]] = defaultdict(lambda: defaultdict(int))
    in_care: dict[int, int] = defaultdict(int)
    incoming: dict[int, int] = defaultdict(int)
    moving: dict[int, tuple[Shipment, int]] = {}
    moving_units = 0
    manufacturers = set()
    for batch in batches:
        manufacturers.add(batch.product.manufacturer_id)
        organisations[batch.product.manufacturer_id] = batch.product.manufacturer
        whereabouts = batch_whereabouts(batch, by_batch[batch.pk])
        for stock in whereabouts.stock:
            organisations[stock.organisation.pk] = stock.organisation
            for site, units in stock.sites:
                on_hand[stock.organisation.pk][site] += units
        for item in whereabouts.moving:
            shipment = item.shipment
            moving_units += item.quantity
            if shipment.status == Shipment.Status.REJECTED:
                # Refused goods go back to their shipper, who is told; not to every carrier that ever refused.
                organisations[shipment.shipper_id] = shipment.shipper
                incoming[shipment.shipper_id] += item.quantity
                continue
            organisations |= {shipment.custodian_id: shipment.custodian, shipment.consignee_id: shipment.consignee}
            in_care[shipment.custodian_id] += item.quantity
            if shipment.consignee_id != shipment.custodian_id:  # a consignee already holding them awaits nothing
                incoming[shipment.consignee_id] += item.quantity
    for item in items:
        if item.shipment.status in (Shipment.Status.PLANNED, Shipment.Status.IN_TRANSIT):
            _, units = moving.get(item.shipment_id, (item.shipment, 0))
            moving[item.shipment_id] = (item.shipment, units + item.quantity)
    holders = []
    for pk in sorted(organisations, key=lambda pk: (pk not in manufacturers, organisations[pk].name)):
        sites = tuple((site, units) for site, units in on_hand[pk].items() if units > 0)
        if not (sites or in_care[pk] or incoming[pk] or pk in manufacturers):
            continue
        organisation = organisations[pk]
        notified = pk in manufacturers or depth != RecallDepth.WHOLESALE or organisation.kind not in RETAIL_KINDS
        holders.append(Holder(organisation, sites, in_care[pk], incoming[pk], notified))
    on_hand_units = sum(units for sites in on_hand.values() for units in sites.values())
    shipments = tuple(sorted(moving.values(), key=lambda pair: (pair[0].created_at, pair[0].pk)))
    return Scope(tuple(holders), shipments, on_hand_units + moving_units)
