"""The trace and recall figures' world: 10,000 shipments, one batch spread over 1,000 of them.

Rows are written in bulk (fixtures, not the services, which the other tables
measure): 200 pharmacies with a site each; 900 batches of 10 legs each (one in
ten with an excursion and an alert) and one wide batch shipped 1,000 times to
those pharmacies, 900 delivered, 50 in transit and 50 planned. The 1,000,000
readings come from ``bench_pages.readings_load``, spread over every dispatched
shipment.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from traceability import gs1
from traceability.models import (
    Alert,
    Batch,
    CustodyEvent,
    Excursion,
    Organisation,
    Product,
    Shipment,
    ShipmentItem,
    Site,
)

PHARMACIES = 200
NARROW_BATCHES = 900
LEGS = 10
WIDE_LEGS = 1000
WIDE_MOVING = 50  # in transit; as many again planned
Status = Shipment.Status


@dataclass(frozen=True)
class World:
    narrow: Batch  # a batch of LEGS shipments
    wide: Batch  # a batch of WIDE_LEGS shipments
    regulator: User
    shipments: int


def world_build() -> World:
    """Adds the bench's organisations, batches and shipments to the demo data (seed_demo)."""
    maker = Product.objects.select_related("manufacturer").order_by("id").first()
    carrier = Organisation.objects.filter(kind=Organisation.Kind.LOGISTICS).order_by("id").first()
    regulator = User.objects.get(username="regulator")
    if maker is None or carrier is None:
        raise RuntimeError("the trace bench needs the demo data (seed_demo)")
    manufacturer = maker.manufacturer
    origin = Site.objects.filter(organisation=manufacturer).order_by("id").first()
    assert origin is not None
    pharmacies = Organisation.objects.bulk_create(
        Organisation(name=f"Bench pharmacy {n:03}", kind=Organisation.Kind.DISPENSER, gln=_gln(1, n))
        for n in range(PHARMACIES)
    )
    sites = Site.objects.bulk_create(
        Site(organisation=pharmacy, name=f"{pharmacy.name} shop", gln=_gln(2, n), city="Basel", country="CH")
        for n, pharmacy in enumerate(pharmacies)
    )
    today = timezone.localdate()
    batches = Batch.objects.bulk_create(
        Batch(
            product=maker,
            lot=f"BENCH{n:05}",
            manufactured_on=today - datetime.timedelta(days=60),
            expires_on=today + datetime.timedelta(days=300),
            quantity=100_000,
        )
        for n in range(NARROW_BATCHES + 1)
    )
    wide, narrow = batches[-1], batches[:-1]
    now = timezone.now()
    plans: list[tuple[Batch, int, str]] = [(batch, leg, Status.DELIVERED) for batch in narrow for leg in range(LEGS)]
    for leg in range(WIDE_LEGS):
        status: str = Status.DELIVERED
        if leg < 2 * WIDE_MOVING:
            status = Status.PLANNED if leg < WIDE_MOVING else Status.IN_TRANSIT
        plans.append((wide, leg, status))
    shipments = []
    for number, (_, leg, status) in enumerate(plans):
        destination = sites[number % PHARMACIES]
        dispatched = None if status == Status.PLANNED else now - datetime.timedelta(days=30, hours=-leg)
        closed = dispatched + datetime.timedelta(hours=20) if dispatched and status == Status.DELIVERED else None
        custodian = destination.organisation if status == Status.DELIVERED else carrier
        if status == Status.PLANNED:
            custodian = manufacturer
        shipments.append(
            Shipment(
                reference=f"BENCH-{number:06}",
                shipper=manufacturer,
                carrier=carrier,
                consignee=destination.organisation,
                custodian=custodian,
                origin=origin,
                destination=destination,
                status=status,
                created_by=regulator,
                created_at=(dispatched or now) - datetime.timedelta(hours=1),
                dispatched_at=dispatched,
                closed_at=closed,
            )
        )
    shipments = Shipment.objects.bulk_create(shipments, batch_size=2000)
    pairs = zip(shipments, plans, strict=True)
    ShipmentItem.objects.bulk_create(
        (ShipmentItem(shipment=shipment, batch=batch, quantity=10) for shipment, (batch, _, _) in pairs),
        batch_size=5000,
    )
    CustodyEvent.objects.bulk_create(_custody(shipments, carrier, regulator), batch_size=5000)
    troubled = [shipment for number, shipment in enumerate(shipments[: NARROW_BATCHES * LEGS]) if number % 10 == 3]
    Excursion.objects.bulk_create(_excursions(troubled), batch_size=5000)
    Alert.objects.bulk_create(_alerts(troubled), batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # as autovacuum would after such a load
    return World(narrow[0], wide, regulator, Shipment.objects.count())


def _custody(shipments: list[Shipment], carrier: Organisation, actor: User) -> list[CustodyEvent]:
    events = []
    for shipment in shipments:
        if shipment.dispatched_at is None:
            continue
        events.append(
            CustodyEvent(
                shipment=shipment,
                kind=CustodyEvent.Kind.DISPATCH,
                from_organisation=shipment.shipper,
                to_organisation=carrier,
                site=shipment.origin,
                occurred_at=shipment.dispatched_at,
                recorded_by=actor,
            )
        )
        if shipment.closed_at is not None:
            events.append(
                CustodyEvent(
                    shipment=shipment,
                    kind=CustodyEvent.Kind.RECEIPT,
                    from_organisation=carrier,
                    to_organisation=shipment.consignee,
                    site=shipment.destination,
                    occurred_at=shipment.closed_at,
                    recorded_by=actor,
                )
            )
    return events


def _excursions(shipments: list[Shipment]) -> list[Excursion]:
    return [
        Excursion(
            shipment=shipment,
            direction=Excursion.Direction.ABOVE,
            started_at=shipment.dispatched_at + datetime.timedelta(hours=5),
            ended_at=shipment.dispatched_at + datetime.timedelta(hours=6),
            peak_celsius=11.5,
            duration_seconds=3600,
            rules=["above 8 °C for 30 min"],
            end_recorded=True,
        )
        for shipment in shipments
        if shipment.dispatched_at is not None
    ]


def _alerts(shipments: list[Shipment]) -> list[Alert]:
    return [
        Alert(
            shipment=shipment,
            key="rule:above 8 °C for 30 min",
            severity=Alert.Severity.ALARM,
            status=Alert.Status.RESOLVED,
            message="Above 8 °C for 30 min",
            triggered_at=shipment.dispatched_at + datetime.timedelta(hours=5, minutes=30),
            resolved_at=shipment.dispatched_at + datetime.timedelta(hours=7),
            resolution="Stability data cover it.",
        )
        for shipment in shipments
        if shipment.dispatched_at is not None
    ]


def _gln(kind: int, number: int) -> str:
    body = f"99{kind}{number:09}"
    return body + gs1.check_digit(body)
