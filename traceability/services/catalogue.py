"""Products, batches with their serial numbers, and sites."""

from __future__ import annotations

import datetime
import hashlib
import re
import secrets

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from traceability import coldchain, gs1
from traceability.models import (
    Batch,
    Membership,
    Product,
    SerialNumber,
    Site,
)
from traceability.services._common import Kind, _gs1, _record, actor_organisation

MAX_SERIALS_PER_CALL = 100_000
MAX_BUDGET_MINUTES = 365 * 24 * 60
# Serial alphabet: digits and capitals without I and O, which people misread.
SERIAL_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
SERIAL_LENGTH = 12  # 34**12 ~ 2.4e18: guessing a valid serial is hopeless


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
