"""Steps many tests take through the real services: a batch registered, a leg's temperatures logged."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from django.utils import timezone

from tests.conftest import Persona
from traceability import coldchain, services
from traceability.models import Batch, Product, Shipment, Site

HOUR = 3600


def register_batch(
    persona: Persona, product: Product, lot: str = "MV2405", serials: int = 3, quantity: int = 1000
) -> Batch:
    """A batch made a month ago, expiring in 400 days."""
    today = timezone.localdate()
    return services.batch_register(
        actor=persona.user,
        product=product,
        lot=lot,
        manufactured_on=today - datetime.timedelta(days=30),
        expires_on=today + datetime.timedelta(days=400),
        quantity=quantity,
        serial_count=serials,
    )


def log_temperatures(shipment: Shipment, temperature: Callable[[float], float | None]) -> None:
    """A logger on the leg reads every 5 minutes; ``temperature(hours since dispatch)`` (None: silent).

    The readings go through the real evaluation and monitoring service, as the ingest worker's do.
    """
    assert shipment.dispatched_at is not None
    contract = shipment.contract.as_rules()
    armed = shipment.dispatched_at + datetime.timedelta(seconds=contract.arming_seconds)
    until = shipment.closed_at or timezone.now()
    samples, at = [], armed + datetime.timedelta(minutes=1)
    while at <= until:
        value = temperature((at - shipment.dispatched_at).total_seconds() / HOUR)
        if value is not None:
            samples.append(coldchain.Sample(at, value))
        at += datetime.timedelta(minutes=5)
    evaluation = coldchain.evaluate(contract, samples, armed_from=armed, until=until)
    services.monitoring_apply(shipment=shipment, evaluation=evaluation)


def ship(
    batch: Batch,
    shipper: Persona,
    carrier: Persona,
    consignee: Persona,
    *,
    quantity: int = 10,
    hours: float = 10,
    outcome: str = "delivered",
    origin: Site | None = None,
    destination: Site | None = None,
) -> Shipment:
    """A shipment of ``hours``, left ``planned``, ``in_transit``, or ``delivered`` or ``rejected`` at the end."""
    shipment = services.shipment_create(
        actor=shipper.user,
        carrier=carrier.organisation,
        consignee=consignee.organisation,
        origin=origin or shipper.site,
        destination=destination or consignee.site,
        items=[services.ItemSpec(batch=batch, quantity=quantity)],
    )
    if outcome == "planned":
        return shipment
    now = timezone.now()
    start = now - datetime.timedelta(hours=hours)
    shipment = services.shipment_dispatch(actor=shipper.user, shipment=shipment, occurred_at=start)
    if outcome == "in_transit":
        return shipment
    accept = outcome == "delivered"
    return services.shipment_receive(
        actor=consignee.user, shipment=shipment, accept=accept, reason="" if accept else "Too warm on arrival."
    )
