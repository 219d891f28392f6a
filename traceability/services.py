"""Everything that changes the cold-chain domain goes through these functions.

Each service is one transaction, takes keyword arguments, checks who may do
it, and raises ``ValidationError`` (the input is wrong: a 400 naming the
field) or ``PermissionDenied`` (the actor may see the object but not do
this). Callers look objects up through ``selectors`` first, so an object the
actor may not see never reaches a service.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ledger.services import entry_append
from traceability import coldchain, gs1, selectors
from traceability.models import (
    Alert,
    Batch,
    ContractRule,
    CustodyEvent,
    Excursion,
    Membership,
    Organisation,
    Product,
    SerialNumber,
    Shipment,
    ShipmentItem,
    Site,
    TemperatureContract,
)

Kind = Organisation.Kind

MAX_SERIALS_PER_CALL = 100_000
MAX_BUDGET_MINUTES = 365 * 24 * 60
LOGGING_INTERVALS = range(10, 24 * 3600 + 1)  # seconds
# Serial alphabet: digits and capitals without I and O, which people misread.
SERIAL_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
SERIAL_LENGTH = 12  # 34**12 ~ 2.4e18: guessing a valid serial is hopeless
CLOCK_SKEW = datetime.timedelta(minutes=5)
LATE_RECORDING = datetime.timedelta(days=7)


def actor_organisation(actor: User | AnonymousUser, *, kinds: Sequence[str] = (), write: bool = True) -> Organisation:
    """The actor's organisation, if it is of one of ``kinds`` and the role may write."""
    membership: Membership | None = getattr(actor, "membership", None) if actor.is_authenticated else None
    if membership is None:
        raise PermissionDenied("You are not a member of any organisation.")
    if write and not membership.can_write:
        raise PermissionDenied("Your role is read-only; ask an administrator of your organisation.")
    if kinds and membership.organisation.kind not in kinds:
        raise PermissionDenied(f"Only a {' or '.join(kinds)} organisation may do this.")
    return membership.organisation


def _gs1(field: str, check: object, value: str) -> str:
    try:
        return check(value)  # type: ignore[operator, no-any-return]
    except gs1.GS1Error as error:
        raise ValidationError({field: str(error)}) from error


def _occurred_at(value: datetime.datetime | None, *, not_before: datetime.datetime | None) -> datetime.datetime:
    now = timezone.now()
    when = value or now
    if when > now + CLOCK_SKEW:
        raise ValidationError({"occurred_at": "lies in the future; send the time the event happened."})
    if not_before and when < not_before:
        raise ValidationError({"occurred_at": f"lies before {not_before.isoformat()}, the earliest possible time."})
    return when


def _record(event_type: str, subject: str, data: dict[str, Any], parties: Iterable[int]) -> None:
    """Appends the service's ledger entry, in the service's own transaction."""
    entry_append(type=event_type, subject=subject, data=data, readers=map(selectors.ledger_party, parties))


def _when(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def _shipment_record(event_type: str, shipment: Shipment, **facts: Any) -> None:
    _record(
        event_type,
        f"shipment:{shipment.reference}",
        {"reference": shipment.reference, **facts},
        selectors.shipment_parties(shipment),
    )


# Products and batches ------------------------------------------------------


@transaction.atomic
def product_register(
    *,
    actor: User,
    gtin: str,
    name: str,
    dosage_form: str,
    strength: str = "",
    storage_profile: str,
    freeze_sensitive: bool = False,
    stability_budget_minutes: int = 240,
) -> Product:
    """Registers a product of the actor's manufacturer under a GTIN, stored as GTIN-14."""
    manufacturer = actor_organisation(actor, kinds=[Kind.MANUFACTURER])
    gtin14 = _gs1("gtin", gs1.normalize_gtin, gtin)
    if storage_profile not in coldchain.StorageProfile:
        raise ValidationError({"storage_profile": f"must be one of {', '.join(coldchain.StorageProfile)}."})
    if not 0 <= stability_budget_minutes <= MAX_BUDGET_MINUTES:
        raise ValidationError({"stability_budget_minutes": f"must be 0 to {MAX_BUDGET_MINUTES} (a year)."})
    if Product.objects.filter(gtin=gtin14).exists():
        raise ValidationError({"gtin": f"GTIN {gtin14} is already registered."})
    product = Product.objects.create(
        gtin=gtin14,
        name=name,
        dosage_form=dosage_form,
        strength=strength,
        manufacturer=manufacturer,
        storage_profile=storage_profile,
        freeze_sensitive=freeze_sensitive,
        stability_budget_minutes=stability_budget_minutes,
    )
    _record(
        "product.registered",
        f"product:{product.gtin}",
        {
            "gtin": product.gtin,
            "name": name,
            "dosage_form": dosage_form,
            "strength": strength,
            "manufacturer": manufacturer.gln,
            "storage_profile": storage_profile,
            "freeze_sensitive": freeze_sensitive,
            "stability_budget_minutes": stability_budget_minutes,
        },
        [manufacturer.pk],
    )
    return product


@transaction.atomic
def batch_register(
    *,
    actor: User,
    product: Product,
    lot: str,
    manufactured_on: datetime.date,
    expires_on: datetime.date,
    quantity: int,
    serial_count: int = 0,
) -> Batch:
    """Registers a batch of the actor's product, with ``serial_count`` random serial numbers.

    Serials are random and non-sequential (DSCSA, EU FMD), unique per GTIN.
    """
    manufacturer = actor_organisation(actor, kinds=[Kind.MANUFACTURER])
    if product.manufacturer_id != manufacturer.pk:
        raise PermissionDenied("Only the product's manufacturer registers its batches.")
    lot = _gs1("lot", gs1.validate_lot, lot)
    today = timezone.localdate()
    errors = {}
    if manufactured_on > today:
        errors["manufactured_on"] = "lies in the future."
    if expires_on <= manufactured_on:
        errors["expires_on"] = "must be after the manufacturing date."
    elif expires_on < today:
        errors["expires_on"] = "has passed; an expired batch cannot be registered."
    if quantity < 1:
        errors["quantity"] = "must be at least 1."
    if not 0 <= serial_count <= min(quantity, MAX_SERIALS_PER_CALL):
        errors["serial_count"] = f"must be between 0 and the quantity (at most {MAX_SERIALS_PER_CALL})."
    if errors:
        raise ValidationError(errors)
    if Batch.objects.filter(product=product, lot=lot).exists():
        raise ValidationError({"lot": f"lot {lot} is already registered for GTIN {product.gtin}."})
    batch = Batch.objects.create(
        product=product, lot=lot, manufactured_on=manufactured_on, expires_on=expires_on, quantity=quantity
    )
    serials = _serials_create(batch, serial_count)
    _record(
        "batch.registered",
        f"batch:{product.gtin}:{lot}",
        {
            "gtin": product.gtin,
            "lot": lot,
            "manufactured_on": manufactured_on.isoformat(),
            "expiry": expires_on.isoformat(),
            "quantity": quantity,
            "serial_count": len(serials),
            # The entry is public: it commits to the serials without revealing them to counterfeiters.
            "serials_sha256": hashlib.sha256("\n".join(sorted(serials)).encode()).hexdigest(),
        },
        [manufacturer.pk],
    )
    return batch


def _serials_create(batch: Batch, count: int) -> set[str]:
    """Draws ``count`` fresh serials for the batch's GTIN, retrying the rare collision."""
    wanted: set[str] = set()
    while len(wanted) < count:
        while len(wanted) < count:
            wanted.add("".join(secrets.choice(SERIAL_ALPHABET) for _ in range(SERIAL_LENGTH)))
        for start in range(0, count, 5000):
            chunk = sorted(wanted)[start : start + 5000]
            taken = SerialNumber.objects.filter(product=batch.product, serial__in=chunk)
            wanted.difference_update(taken.values_list("serial", flat=True))
    SerialNumber.objects.bulk_create(
        (SerialNumber(product=batch.product, batch=batch, serial=serial) for serial in wanted), batch_size=2000
    )
    return wanted


# Shipments -----------------------------------------------------------------


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


def _locked(shipment: Shipment) -> Shipment:
    """Re-reads the shipment under a row lock, so two transitions cannot interleave."""
    related = ("shipper", "carrier", "consignee", "custodian", "origin", "destination")
    return Shipment.objects.select_for_update(of=("self",)).select_related(*related).get(pk=shipment.pk)


@transaction.atomic
def shipment_dispatch(*, actor: User, shipment: Shipment, occurred_at: datetime.datetime | None = None) -> Shipment:
    """The shipper hands a planned shipment to its carrier: in transit, custody to the carrier."""
    shipper = actor_organisation(actor)
    shipment = _locked(shipment)
    if shipment.shipper_id != shipper.pk:
        raise PermissionDenied("Only the shipper dispatches a shipment.")
    if shipment.status != Shipment.Status.PLANNED:
        raise ValidationError({"status": f"shipment is {shipment.status}; only a planned shipment is dispatched."})
    today = timezone.localdate()
    blocked = [
        str(item.batch)
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


@transaction.atomic
def site_create(
    *, actor: User, name: str, gln: str, city: str, country: str, street: str = "", postal_code: str = ""
) -> Site:
    """Adds a site (a GLN-identified location) to the actor's organisation; administrators only."""
    organisation = actor_organisation(actor)
    if actor.membership.role != Membership.Role.ADMIN:
        raise PermissionDenied("Only an administrator adds sites.")
    gln = _gs1("gln", gs1.validate_gln, gln)
    if not re.fullmatch(r"[A-Za-z]{2}", country):
        raise ValidationError({"country": "an ISO 3166-1 alpha-2 code, e.g. DE."})
    if Site.objects.filter(gln=gln).exists():
        raise ValidationError({"gln": f"GLN {gln} is already in use."})
    return Site.objects.create(
        organisation=organisation,
        name=name,
        gln=gln,
        city=city,
        country=country.upper(),
        street=street,
        postal_code=postal_code,
    )


# Monitoring: excursions and alerts ---------------------------------------------

# The contract's rule severities, as an alert's.
ALERT_SEVERITY = {
    coldchain.Severity.WARNING: Alert.Severity.WARNING,
    coldchain.Severity.ALARM: Alert.Severity.ALARM,
    coldchain.Severity.BREACH: Alert.Severity.CRITICAL,
    coldchain.Severity.CRITICAL: Alert.Severity.CRITICAL,
}
BREACHES = (coldchain.Severity.BREACH, coldchain.Severity.CRITICAL)


@transaction.atomic
def monitoring_apply(*, shipment: Shipment, evaluation: coldchain.Evaluation) -> list[Alert]:
    """Brings a shipment's excursions and alerts in line with an evaluation of all its readings.

    Idempotent: applying the same evaluation twice changes nothing and appends
    nothing. Appends ``excursion.started`` when an excursion is first seen,
    ``excursion.ended`` when it first has an end, and ``contract.breached`` for
    every new alert of a breach or critical rule. Returns the alerts it raised.
    """
    shipment = _locked(shipment)
    for excursion in evaluation.excursions:
        _excursion_apply(shipment, excursion)
    return [alert for trigger in evaluation.triggers if (alert := _alert_raise(shipment, trigger))]


def _excursion_apply(shipment: Shipment, found: coldchain.Excursion) -> None:
    """Records an excursion once, and its end once; updates it as late readings refine it.

    A late reading can move an excursion's start or end, so the stored
    excursion it overlaps is the same one, updated rather than recorded twice.
    """
    overlapping = Excursion.objects.filter(shipment=shipment, direction=found.direction.value).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gte=found.started_at)
    )
    if found.ended_at is not None:
        overlapping = overlapping.filter(started_at__lte=found.ended_at)
    rules = sorted({trigger.key for trigger in found.triggers})
    facts = {"direction": found.direction.value, "started_at": _when(found.started_at)}
    stored = overlapping.order_by("started_at").first()
    if stored is None:
        stored = Excursion.objects.create(
            shipment=shipment,
            direction=found.direction.value,
            started_at=found.started_at,
            peak_celsius=found.peak_celsius,
            duration_seconds=found.duration_seconds,
            rules=rules,
        )
        _shipment_record("excursion.started", shipment, **facts, peak_celsius=found.peak_celsius, rules=rules)
    ended_now = stored.ended_at is None
    stored.started_at = min(stored.started_at, found.started_at)
    if found.ended_at is not None:
        stored.ended_at = max(stored.ended_at or found.ended_at, found.ended_at)
    stored.peak_celsius = found.peak_celsius
    stored.duration_seconds = found.duration_seconds
    stored.rules = sorted(set(stored.rules) | set(rules))
    stored.save(update_fields=["started_at", "ended_at", "peak_celsius", "duration_seconds", "rules"])
    if ended_now and found.ended_at is not None:
        _shipment_record(
            "excursion.ended",
            shipment,
            **facts,
            ended_at=_when(found.ended_at),
            peak_celsius=found.peak_celsius,
            duration_seconds=found.duration_seconds,
        )


def _alert_raise(shipment: Shipment, trigger: coldchain.Trigger) -> Alert | None:
    """A new alert for the trigger, unless it was raised before or one for its rule is still open."""
    alerts = Alert.objects.filter(shipment=shipment, key=trigger.key)
    if alerts.filter(
        Q(triggered_at=trigger.at) | Q(status__in=[Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED])
    ).exists():
        return None
    alert = Alert.objects.create(
        shipment=shipment,
        key=trigger.key,
        severity=ALERT_SEVERITY[trigger.severity],
        message=trigger.detail[:500],
        triggered_at=trigger.at,
    )
    if trigger.severity in BREACHES:
        _shipment_record("contract.breached", shipment, rule=trigger.key, at=_when(trigger.at), detail=trigger.detail)
    return alert


def _alert_for_party(actor: User, alert: Alert) -> Organisation:
    organisation = actor_organisation(actor)
    if organisation.pk not in selectors.shipment_parties(alert.shipment):
        raise PermissionDenied("Only the organisations party to the shipment handle its alerts.")
    return organisation


@transaction.atomic
def alert_acknowledge(*, actor: User, alert: Alert, comment: str = "") -> Alert:
    """Someone responsible has seen the alert and says what they do about it; a ledger entry."""
    _alert_for_party(actor, alert)
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.status != Alert.Status.OPEN:
        raise ValidationError({"status": f"the alert is {alert.status}; only an open alert is acknowledged."})
    alert.status = Alert.Status.ACKNOWLEDGED
    alert.acknowledged_by = actor
    alert.acknowledged_at = timezone.now()
    alert.acknowledgement = comment.strip()
    alert.save(update_fields=["status", "acknowledged_by", "acknowledged_at", "acknowledgement"])
    _shipment_record(
        "alert.acknowledged",
        alert.shipment,
        alert=alert.key,
        triggered_at=_when(alert.triggered_at),
        by=actor.get_username(),
        comment=alert.acknowledgement,
    )
    return alert


@transaction.atomic
def alert_resolve(*, actor: User, alert: Alert, comment: str) -> Alert:
    """Closes an alert with what was done; the rule can alert again afterwards. A ledger entry."""
    _alert_for_party(actor, alert)
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.status == Alert.Status.RESOLVED:
        raise ValidationError({"status": "the alert is already resolved."})
    if not comment.strip():
        raise ValidationError({"comment": "say how the alert was resolved."})
    alert.status = Alert.Status.RESOLVED
    alert.resolved_by = actor
    alert.resolved_at = timezone.now()
    alert.resolution = comment.strip()
    alert.save(update_fields=["status", "resolved_by", "resolved_at", "resolution"])
    _shipment_record(
        "alert.resolved",
        alert.shipment,
        alert=alert.key,
        triggered_at=_when(alert.triggered_at),
        by=actor.get_username(),
        comment=alert.resolution,
    )
    return alert


def readings_committed(
    *,
    shipment: Shipment,
    commit_id: int,
    count: int,
    root: str,
    first_measured_at: datetime.datetime,
    last_measured_at: datetime.datetime,
) -> None:
    """Appends a ``readings.committed`` entry: the Merkle root of a batch of the shipment's readings."""
    _shipment_record(
        "readings.committed",
        shipment,
        commit=commit_id,
        count=count,
        root=root,
        first_measured_at=_when(first_measured_at),
        last_measured_at=_when(last_measured_at),
    )
