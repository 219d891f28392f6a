"""Who may see what, and the reads that pages and the API share.

Every object an organisation may see is reached through one of the
``visible_*`` querysets below; anything outside them is a 404, so another
organisation's objects are never confirmed to exist.

- A regulator sees everything.
- A manufacturer sees its own products and batches, and every shipment
  carrying them.
- Any organisation sees the shipments it ships, carries, receives or has held,
  and the batches and products those shipments carry.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest

from traceability.models import (
    Batch,
    CustodyEvent,
    Dispensing,
    Organisation,
    Product,
    Recall,
    RecallNotice,
    Shipment,
    ShipmentItem,
)


def _party_to(organisation: Organisation) -> Q:
    """Shipments the organisation is a party to: shipper, carrier, consignee or any past holder."""
    held = CustodyEvent.objects.filter(shipment=OuterRef("pk")).filter(
        Q(from_organisation=organisation) | Q(to_organisation=organisation)
    )
    parties = Q(shipper=organisation) | Q(carrier=organisation) | Q(consignee=organisation)
    return parties | Q(custodian=organisation) | Q(Exists(held))


def visible_shipments(organisation: Organisation) -> QuerySet[Shipment]:
    shipments = Shipment.objects.all()
    if organisation.is_regulator:
        return shipments
    made_by_us = ShipmentItem.objects.filter(shipment=OuterRef("pk"), batch__product__manufacturer=organisation)
    return shipments.filter(_party_to(organisation) | Q(Exists(made_by_us)))


def visible_batches(organisation: Organisation) -> QuerySet[Batch]:
    batches = Batch.objects.all()
    if organisation.is_regulator:
        return batches
    shipped = ShipmentItem.objects.filter(batch=OuterRef("pk"), shipment__in=visible_shipments(organisation))
    return batches.filter(Q(product__manufacturer=organisation) | Q(Exists(shipped)))


def visible_products(organisation: Organisation) -> QuerySet[Product]:
    products = Product.objects.all()
    if organisation.is_regulator:
        return products
    return products.filter(Q(manufacturer=organisation) | Q(pk__in=visible_batches(organisation).values("product")))


def batch_available(*, organisation: Organisation, batch: Batch) -> int:
    """Units of the batch the organisation holds and has not yet committed to a shipment.

    Made (by its manufacturer) + received (delivered to it) - sent (planned, in
    transit or delivered from it) - dispensed by it. A rejected delivery
    returns to the shipper.
    """
    items = ShipmentItem.objects.filter(batch=batch)
    totals = items.aggregate(
        received=Coalesce(Sum("quantity", filter=Q(shipment__consignee=organisation, shipment__status="delivered")), 0),
        sent=Coalesce(Sum("quantity", filter=Q(shipment__shipper=organisation) & ~Q(shipment__status="rejected")), 0),
    )
    made = batch.quantity if batch.product.manufacturer_id == organisation.pk else 0
    dispensed = Dispensing.objects.filter(serial__batch=batch, organisation=organisation).count()
    return int(made + totals["received"] - totals["sent"] - dispensed)


def ledger_party(organisation_id: int) -> str:
    """How ledger entries name an organisation that may read them."""
    return f"org:{organisation_id}"


def ledger_reader_parties(request: HttpRequest) -> frozenset[str] | None:
    """The ledger parties the caller reads as: None (everything) for a regulator, none when anonymous."""
    membership = getattr(request.user, "membership", None) if request.user.is_authenticated else None
    if membership is None:
        return frozenset()
    if membership.organisation.is_regulator:
        return None
    return frozenset({ledger_party(membership.organisation_id)})


def shipment_parties(shipment: Shipment) -> set[int]:
    """Organisations party to a shipment: shipper, carrier, consignee, every holder, every manufacturer on it."""
    held = CustodyEvent.objects.filter(shipment=shipment).values_list("from_organisation", "to_organisation")
    makers = ShipmentItem.objects.filter(shipment=shipment).values_list("batch__product__manufacturer", flat=True)
    parties = {shipment.shipper_id, shipment.carrier_id, shipment.consignee_id, shipment.custodian_id}
    return parties | {pk for pair in held for pk in pair} | set(makers)


def visible_recalls(organisation: Organisation) -> QuerySet[Recall]:
    """Recalls the organisation issued, made the goods of, or was told about; all of them for a regulator."""
    recalls = Recall.objects.select_related("manufacturer", "initiated_by")
    if organisation.is_regulator:
        return recalls
    noticed = RecallNotice.objects.filter(organisation=organisation).values("recall")
    return recalls.filter(Q(manufacturer=organisation) | Q(initiated_by=organisation) | Q(pk__in=noticed))


def sees_progress(organisation: Organisation, recall: Recall) -> bool:
    """Regulators, the manufacturer and the initiator see every holder's notice; a holder sees its own."""
    return organisation.is_regulator or organisation.pk in (recall.manufacturer_id, recall.initiated_by_id)


def waiting_notices(organisation: Organisation) -> QuerySet[RecallNotice]:
    """The organisation's notices of open recalls that it has not acknowledged yet."""
    return RecallNotice.objects.filter(
        organisation=organisation, acknowledged_at__isnull=True, recall__status=Recall.Status.OPEN
    )
