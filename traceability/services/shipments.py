"""Shipments: planning under a temperature contract, dispatch, custody, receipt."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from traceability import coldchain, selectors
from traceability.models import (
    Batch,
    ContractRule,
    CustodyEvent,
    Organisation,
    Shipment,
    ShipmentItem,
    Site,
    TemperatureContract,
)
from traceability.services._common import (
    LATE_RECORDING,
    Kind,
    _locked,
    _occurred_at,
    _shipment_record,
    _when,
    actor_organisation,
)

LOGGING_INTERVALS = range(10, 24 * 3600 + 1)  # seconds


@dataclass(frozen=True)
class ItemSpec:
    batch: Batch
    quantity: int


def _reference() -> str:
    return f"SHP-{timezone.now():%Y%m%d}-{secrets.token_hex(4).upper()}"


@transaction.atomic
def shipment_create(
    *,
    actor: User,
    carrier: Organisation,
    consignee: Organisation,
    origin: Site,
    destination: Site,
    items: Sequence[ItemSpec],
    logging_interval_seconds: int = coldchain.DEFAULT_LOGGING_INTERVAL_SECONDS,
) -> Shipment:
    """Plans a shipment of the actor's stock, with a temperature contract from its products.

    The shipped quantities are reserved from the shipper's stock at once.
    """
    shipper = actor_organisation(actor, kinds=[Kind.MANUFACTURER, Kind.WHOLESALER, Kind.LOGISTICS, Kind.DISPENSER])
    errors: dict[str, str] = {}
    if origin.organisation_id != shipper.pk:
        errors["origin"] = "must be a site of your organisation."
    if destination.organisation_id != consignee.pk:
        errors["destination"] = "must be a site of the consignee."
    if origin.pk == destination.pk:
        errors["destination"] = "must differ from the origin."
    if carrier.kind != Kind.LOGISTICS and carrier.pk != shipper.pk:
        errors["carrier"] = "must be a logistics provider, or your own organisation."
    if consignee.kind == Kind.REGULATOR:
        errors["consignee"] = "a regulator does not receive goods."
    if logging_interval_seconds not in LOGGING_INTERVALS:
        errors["logging_interval_seconds"] = "must be 10 seconds to 24 hours."
    if not items:
        errors["items"] = "a shipment carries at least one batch."
    elif len({item.batch.pk for item in items}) != len(items):
        errors["items"] = "list each batch once."
    if errors:
        raise ValidationError(errors)

    locked = (
        Batch.objects.select_for_update(of=("self",))
        .select_related("product")
        .order_by("pk")  # the order every service locks batches in, so none deadlocks with another
        .in_bulk([item.batch.pk for item in items])
    )
    today = timezone.localdate()
    for index, item in enumerate(items):
        batch = locked[item.batch.pk]
        if batch.status != Batch.Status.ACTIVE or batch.is_expired(today):
            status = "expired" if batch.is_expired(today) else batch.status
            raise ValidationError({"items": f"item {index}: batch {batch} is {status} and may not be shipped."})
        available = selectors.batch_available(organisation=shipper, batch=batch)
        if not 0 < item.quantity <= available:
            raise ValidationError(
                {"items": f"item {index}: quantity must be 1 to {available} (your stock of {batch})."}
            )
    try:
        profile = coldchain.merge_profiles(
            {coldchain.StorageProfile(locked[i.batch.pk].product.storage_profile) for i in items}
        )
    except ValueError as error:
        raise ValidationError({"items": str(error)}) from error

    shipment = Shipment.objects.create(
        reference=_reference(),
        shipper=shipper,
        carrier=carrier,
        consignee=consignee,
        custodian=shipper,
        origin=origin,
        destination=destination,
        created_by=actor,
    )
    ShipmentItem.objects.bulk_create(
        ShipmentItem(shipment=shipment, batch=locked[item.batch.pk], quantity=item.quantity) for item in items
    )
    products = [locked[item.batch.pk].product for item in items]
    _contract_create(
        shipment,
        profile,
        coldchain.default_contract(
            profile,
            stability_budget_minutes=min(product.stability_budget_minutes for product in products),
            freeze_sensitive=any(product.freeze_sensitive for product in products),
            logging_interval_seconds=logging_interval_seconds,
        ),
    )
    _shipment_record(
        "shipment.created",
        shipment,
        shipper=shipper.gln,
        carrier=carrier.gln,
        consignee=consignee.gln,
        origin=origin.gln,
        destination=destination.gln,
        items=[
            {"gtin": locked[item.batch.pk].product.gtin, "lot": locked[item.batch.pk].lot, "quantity": item.quantity}
            for item in items
        ],
        storage_profile=profile.value,
    )
    return shipment


def _celsius(value: float) -> Decimal:
    return Decimal(str(value))


def _contract_create(
    shipment: Shipment, profile: coldchain.StorageProfile, terms: coldchain.Contract
) -> TemperatureContract:
    contract = TemperatureContract.objects.create(
        shipment=shipment,
        storage_profile=profile,
        min_celsius=_celsius(terms.min_celsius),
        max_celsius=_celsius(terms.max_celsius),
        arming_seconds=terms.arming_seconds,
        mkt_limit_celsius=None if terms.mkt_limit_celsius is None else _celsius(terms.mkt_limit_celsius),
        mkt_window_seconds=terms.mkt_window_seconds,
        freeze_thaw_limit=terms.freeze_thaw_limit,
        logging_interval_seconds=terms.logging_interval_seconds,
        max_gap_seconds=terms.max_gap_seconds,
    )
    ContractRule.objects.bulk_create(
        ContractRule(
            contract=contract,
            name=rule.name,
            band=rule.band,
            threshold_celsius=_celsius(rule.threshold_celsius),
            duration_seconds=rule.duration_seconds,
            mode=rule.mode,
            severity=rule.severity,
        )
        for rule in terms.rules
    )
    return contract


@transaction.atomic
def shipment_dispatch(*, actor: User, shipment: Shipment, occurred_at: datetime.datetime | None = None) -> Shipment:
    """The shipper hands a planned shipment to its carrier: in transit, custody to the carrier."""
    shipper = actor_organisation(actor)
    shipment = _locked(shipment)
    _batches_locked(shipment)
    if shipment.shipper_id != shipper.pk:
        raise PermissionDenied("Only the shipper dispatches a shipment.")
    if shipment.status != Shipment.Status.PLANNED:
        raise ValidationError({"status": f"shipment is {shipment.status}; only a planned shipment is dispatched."})
    today = timezone.localdate()
    blocked = [
        f"{item.batch} ({'expired' if item.batch.is_expired(today) else item.batch.status})"
        for item in shipment.items.select_related("batch__product")
        if item.batch.status != Batch.Status.ACTIVE or item.batch.is_expired(today)
    ]
    if blocked:
        raise ValidationError({"items": f"batches no longer active or past expiry: {', '.join(blocked)}."})
    # Dispatches are often recorded after the fact (paper first); a week back is the limit.
    when = _occurred_at(occurred_at, not_before=timezone.now() - LATE_RECORDING)
    CustodyEvent.objects.create(
        shipment=shipment,
        kind=CustodyEvent.Kind.DISPATCH,
        from_organisation_id=shipment.shipper_id,
        to_organisation_id=shipment.carrier_id,
        site_id=shipment.origin_id,
        occurred_at=when,
        recorded_by=actor,
    )
    shipment.status = Shipment.Status.IN_TRANSIT
    shipment.dispatched_at = when
    shipment.custodian_id = shipment.carrier_id
    shipment.save(update_fields=["status", "dispatched_at", "custodian"])
    _shipment_record(
        "shipment.dispatched",
        shipment,
        **{"from": shipment.shipper.gln, "to": shipment.carrier.gln},
        site=shipment.origin.gln,
        occurred_at=_when(when),
    )
    return shipment


def _batches_locked(shipment: Shipment) -> None:
    """Locks the shipment's batches, after the shipment and in id order.

    A recall locks the batches it names while it works out who holds them; a
    dispatch, hand-over or receipt of the same goods at that moment waits for
    it, then sees the recall (a recalled batch is not dispatched) or is seen
    by it (the new holder is told).
    """
    batches = Batch.objects.select_for_update(of=("self",), no_key=True).filter(shipment_items__shipment=shipment)
    list(batches.order_by("pk").values_list("pk", flat=True))


def _last_custody_at(shipment: Shipment) -> datetime.datetime | None:
    return shipment.custody_events.order_by("-occurred_at").values_list("occurred_at", flat=True).first()


@transaction.atomic
def custody_transfer(
    *,
    actor: User,
    shipment: Shipment,
    to_organisation: Organisation,
    occurred_at: datetime.datetime | None = None,
    site: Site | None = None,
    location: str = "",
    note: str = "",
) -> CustodyEvent:
    """The current custodian hands an in-transit shipment to another carrier or a cross-dock."""
    holder = actor_organisation(actor)
    shipment = _locked(shipment)
    _batches_locked(shipment)
    if shipment.custodian_id != holder.pk:
        raise PermissionDenied("Only the organisation holding the goods hands them over.")
    if shipment.status != Shipment.Status.IN_TRANSIT:
        raise ValidationError({"status": f"shipment is {shipment.status}; custody changes only in transit."})
    if to_organisation.pk == holder.pk:
        raise ValidationError({"to_organisation": "you already hold the goods."})
    if to_organisation.kind not in (Kind.LOGISTICS, Kind.WHOLESALER):
        raise ValidationError(
            {
                "to_organisation": "goods in transit pass to a logistics provider or wholesaler; "
                "the consignee receives them instead."
            }
        )
    if site is not None and site.organisation_id != to_organisation.pk:
        raise ValidationError({"site": "must be a site of the organisation taking the goods."})
    event = CustodyEvent.objects.create(
        shipment=shipment,
        kind=CustodyEvent.Kind.HANDOVER,
        from_organisation=holder,
        to_organisation=to_organisation,
        site=site,
        location=location,
        occurred_at=_occurred_at(occurred_at, not_before=_last_custody_at(shipment)),
        recorded_by=actor,
        note=note,
    )
    shipment.custodian = to_organisation
    shipment.save(update_fields=["custodian"])
    _shipment_record(
        "custody.transferred",
        shipment,
        **{"from": holder.gln, "to": to_organisation.gln},
        site=None if site is None else site.gln,
        location=location,
        occurred_at=_when(event.occurred_at),
    )
    return event


@transaction.atomic
def shipment_receive(
    *,
    actor: User,
    shipment: Shipment,
    accept: bool,
    reason: str = "",
    occurred_at: datetime.datetime | None = None,
) -> Shipment:
    """The consignee accepts (custody passes to it) or rejects (with a reason) a delivery.

    A rejected delivery stays with its carrier, and its quantities return to the shipper's stock.
    """
    consignee = actor_organisation(actor)
    shipment = _locked(shipment)
    _batches_locked(shipment)
    if shipment.consignee_id != consignee.pk:
        raise PermissionDenied("Only the consignee receives a shipment.")
    if shipment.status != Shipment.Status.IN_TRANSIT:
        raise ValidationError({"status": f"shipment is {shipment.status}; only a shipment in transit is received."})
    reason = reason.strip()
    if not accept and not reason:
        raise ValidationError({"reason": "say why the delivery is rejected."})
    when = _occurred_at(occurred_at, not_before=_last_custody_at(shipment))
    if accept:
        CustodyEvent.objects.create(
            shipment=shipment,
            kind=CustodyEvent.Kind.RECEIPT,
            from_organisation_id=shipment.custodian_id,
            to_organisation=consignee,
            site_id=shipment.destination_id,
            occurred_at=when,
            recorded_by=actor,
            note=reason,
        )
        shipment.custodian = consignee
        shipment.status = Shipment.Status.DELIVERED
    else:
        shipment.status = Shipment.Status.REJECTED
        shipment.rejection_reason = reason
    shipment.closed_at = when
    shipment.save(update_fields=["status", "custodian", "closed_at", "rejection_reason"])
    _shipment_record(
        "shipment.delivered" if accept else "shipment.rejected",
        shipment,
        consignee=consignee.gln,
        site=shipment.destination.gln,
        occurred_at=_when(when),
        reason=reason,
    )
    return shipment


# Organisations -------------------------------------------------------------
