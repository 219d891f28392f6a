"""Demo data: organisations, users, products, batches, loggers and shipments (idempotent).

Everything goes through the services, so the demo obeys the same rules as
real use. Running it again changes nothing but, with ``--password``, the
demo users' password.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from iot_ingest import services as ingest
from iot_ingest.models import Device
from traceability import coldchain, gs1, services
from traceability.models import Batch, Membership, Organisation, Product, Site

Kind = Organisation.Kind
DEVICE_KEYS = settings.VAR_DIR / "demo-devices.json"
Profile = coldchain.StorageProfile


def _gln(body: str) -> str:
    return body + gs1.check_digit(body)


@dataclass(frozen=True)
class OrgSpec:
    key: str  # also the demo user's username
    name: str
    kind: str
    gln: str
    sites: tuple[tuple[str, str, str, str], ...]  # name, GLN, city, country


ORGANISATIONS = (
    OrgSpec("manufacturer", "Helvetia Biologics AG", Kind.MANUFACTURER, _gln("760999900001"),
            (("Basel plant", _gln("760999900011"), "Basel", "CH"),)),
    OrgSpec("manufacturer2", "Nordic Insulin A/S", Kind.MANUFACTURER, _gln("570999900001"),
            (("Kalundborg plant", _gln("570999900011"), "Kalundborg", "DK"),)),
    OrgSpec("carrier", "ColdRoute Logistics GmbH", Kind.LOGISTICS, _gln("400999900001"),
            (("Frankfurt hub", _gln("400999900011"), "Frankfurt am Main", "DE"),)),
    OrgSpec("carrier2", "PolarFreight B.V.", Kind.LOGISTICS, _gln("871999900001"),
            (("Rotterdam cross-dock", _gln("871999900011"), "Rotterdam", "NL"),)),
    OrgSpec("pharmacy", "CityCare Pharmacies", Kind.DISPENSER, _gln("400999800001"),
            (("CityCare Berlin Mitte", _gln("400999800011"), "Berlin", "DE"),
             ("CityCare Munich", _gln("400999800021"), "München", "DE"))),
    OrgSpec("regulator", "National Medicines Agency", Kind.REGULATOR, _gln("400999700001"), ()),
)  # fmt: skip


@dataclass(frozen=True)
class ProductSpec:
    maker: str
    gtin_body: str
    name: str
    dosage_form: str
    strength: str
    profile: Profile
    freeze_sensitive: bool
    budget_minutes: int


PRODUCTS = (
    ProductSpec("manufacturer", "0950600013435", "Morbivax measles vaccine", "powder and solvent for injection",
                "1 dose", Profile.REFRIGERATED, True, 240),
    ProductSpec("manufacturer2", "0950600013436", "Glucora insulin", "solution for injection", "100 IU/ml",
                Profile.REFRIGERATED, True, 1440),
    ProductSpec("manufacturer", "0950600013437", "Arthrimab", "solution for injection in pre-filled syringe",
                "40 mg", Profile.REFRIGERATED, True, 480),
    ProductSpec("manufacturer2", "0950600013438", "Cardiolin", "film-coated tablet", "10 mg",
                Profile.CONTROLLED_ROOM, False, 0),
    ProductSpec("manufacturer", "0950600013439", "Spikevir mRNA vaccine", "dispersion for injection", "0.3 ml",
                Profile.FROZEN, False, 0),
    ProductSpec("manufacturer2", "0950600013440", "Hepavax hepatitis B vaccine", "suspension for injection",
                "20 µg", Profile.REFRIGERATED, True, 240),
)  # fmt: skip

BATCHES_PER_PRODUCT = (4, 4, 3, 3, 3, 3)  # twenty batches
SERIALS_PER_BATCH = 25
# (product index, batch index, shipper, carrier, consignee, quantity, what happens)
SHIPMENTS = (
    (0, 0, "manufacturer", "carrier", "pharmacy", 200, "delivered"),
    (0, 1, "manufacturer", "carrier", "pharmacy", 150, "in_transit"),
    (0, 2, "manufacturer", "carrier", "pharmacy", 100, "handed_over"),
    (1, 0, "manufacturer2", "carrier2", "pharmacy", 300, "delivered"),
    (1, 1, "manufacturer2", "carrier2", "pharmacy", 120, "in_transit"),
    (1, 2, "manufacturer2", "carrier", "pharmacy", 80, "planned"),
    (2, 0, "manufacturer", "carrier", "pharmacy", 60, "rejected"),
    (2, 1, "manufacturer", "carrier2", "pharmacy", 90, "in_transit"),
    (3, 0, "manufacturer2", "carrier", "pharmacy", 1000, "delivered"),
    (3, 1, "manufacturer2", "carrier2", "pharmacy", 500, "planned"),
    (4, 0, "manufacturer", "carrier2", "pharmacy", 400, "handed_over"),
    (5, 0, "manufacturer2", "carrier", "pharmacy", 250, "planned"),
)


def travelled_pack_link() -> str | None:
    """The Digital Link of a unit of the batch that travelled the most legs (what a consumer would scan)."""
    batch = (
        Batch.objects.annotate(legs=Count("shipment_items__shipment", distinct=True))
        .select_related("product")
        .order_by("-legs", "id")
        .first()
    )
    if batch is None:
        return None
    return batch.digital_link(serial=batch.serials.values_list("serial", flat=True).first())


class Command(BaseCommand):
    help = "Creates the demo organisations, users, products, batches and shipments (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password", help="password for every demo user (default: generated once, kept in var/)")

    def handle(self, *args: Any, **options: Any) -> None:
        password = options["password"] or _stored_password()
        with transaction.atomic():
            users = {spec.key: self._organisation(spec, password) for spec in ORGANISATIONS}
            products = [self._product(spec, users[spec.maker]) for spec in PRODUCTS]
            if not Batch.objects.filter(product__in=products).exists():
                batches = self._batches(products, users)
                self._shipments(batches, users)
                self._recall(batches, users, password)
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(f"Sign in at {settings.BASE_URL}/ with password {password!r} as:")
        for spec in ORGANISATIONS:
            self.stdout.write(f"  {spec.key:<14} {spec.name} ({spec.kind})")
        link = travelled_pack_link()
        if link:
            self.stdout.write(f"A pack's consumer page (the address in its QR code): {link}")

    def _organisation(self, spec: OrgSpec, password: str) -> Any:
        organisation, _ = Organisation.objects.get_or_create(
            gln=spec.gln, defaults={"name": spec.name, "kind": spec.kind}
        )
        for name, gln, city, country in spec.sites:
            Site.objects.get_or_create(
                gln=gln, defaults={"organisation": organisation, "name": name, "city": city, "country": country}
            )
        user, _ = get_user_model().objects.get_or_create(username=spec.key)
        user.set_password(password)
        user.save()
        Membership.objects.get_or_create(
            user=user, defaults={"organisation": organisation, "role": Membership.Role.ADMIN}
        )
        return user

    def _product(self, spec: ProductSpec, actor: Any) -> Product:
        gtin = spec.gtin_body + gs1.check_digit(spec.gtin_body)
        existing = Product.objects.filter(gtin=gtin).first()
        return existing or services.product_register(
            actor=actor,
            gtin=gtin,
            name=spec.name,
            dosage_form=spec.dosage_form,
            strength=spec.strength,
            storage_profile=spec.profile,
            freeze_sensitive=spec.freeze_sensitive,
            stability_budget_minutes=spec.budget_minutes,
        )

    def _batches(self, products: list[Product], users: dict[str, Any]) -> list[list[Batch]]:
        today = timezone.localdate()
        batches = []
        for index, (product, count) in enumerate(zip(products, BATCHES_PER_PRODUCT, strict=True)):
            maker = users[PRODUCTS[index].maker]
            batches.append(
                [
                    services.batch_register(
                        actor=maker,
                        product=product,
                        lot=f"{product.name[:3].upper()}{today:%y}{number:03d}",
                        manufactured_on=today - datetime.timedelta(days=90 - 20 * number),
                        expires_on=today + datetime.timedelta(days=400 + 30 * number),
                        quantity=2000 + 500 * number,
                        serial_count=SERIALS_PER_BATCH,
                    )
                    for number in range(1, count + 1)
                ]
            )
        return batches

    def _shipments(self, batches: list[list[Batch]], users: dict[str, Any]) -> None:
        """Twelve shipments; those on the road left 12 hours ago, each with a logger on board."""
        now = timezone.now()
        organisations = {spec.key: Organisation.objects.get(gln=spec.gln) for spec in ORGANISATIONS}
        loggers = self._loggers(organisations)
        berlin, munich = Site.objects.filter(organisation=organisations["pharmacy"]).order_by("gln")
        for number, (product, batch, shipper, carrier, consignee, quantity, outcome) in enumerate(SHIPMENTS):
            shipment = services.shipment_create(
                actor=users[shipper],
                carrier=organisations[carrier],
                consignee=organisations[consignee],
                origin=organisations[shipper].sites.get(),
                destination=berlin if number % 2 else munich,
                items=[services.ItemSpec(batch=batches[product][batch], quantity=quantity)],
            )
            if outcome == "planned":
                continue
            moving = outcome in ("in_transit", "handed_over")
            left = now - (datetime.timedelta(hours=12) if moving else datetime.timedelta(days=3))
            services.shipment_dispatch(actor=users[shipper], shipment=shipment, occurred_at=left)
            if moving:
                ingest.device_assign(
                    actor=users[shipper], device=loggers[shipper].pop(0), shipment=shipment, starts_at=left
                )
            if outcome == "handed_over":
                other = "carrier2" if carrier == "carrier" else "carrier"
                services.custody_transfer(
                    actor=users[carrier], shipment=shipment, to_organisation=organisations[other],
                    site=organisations[other].sites.get(), note="cross-dock transfer",
                    occurred_at=now - datetime.timedelta(hours=6),
                )  # fmt: skip
            elif outcome in ("delivered", "rejected"):
                accept = outcome == "delivered"
                reason = "" if accept else "Seal broken on arrival; logger shows 11 °C for 3 h."
                services.shipment_receive(
                    actor=users[consignee], shipment=shipment, accept=accept, reason=reason,
                    occurred_at=now - datetime.timedelta(days=2),
                )  # fmt: skip

    def _recall(self, batches: list[list[Batch]], users: dict[str, Any], password: str) -> None:
        """A voluntary recall of the Cardiolin batch delivered to the pharmacy, which has yet to acknowledge it."""
        services.recall_issue(
            actor=users["manufacturer2"],
            password=password,
            items=[services.RecallItemSpec(batches[3][0])],
            classification="II",
            depth="retail",
            reason="Tablets of this lot may be broken in the blister (packaging line fault).",
            instructions="Stop dispensing this lot and return it to your wholesaler; patients need not act.",
        )

    def _loggers(self, organisations: dict[str, Organisation]) -> dict[str, list[Device]]:
        """Four loggers per manufacturer; their private keys go to var/demo-devices.json for the simulator."""
        loggers: dict[str, list[Device]] = {}
        keys = []
        for number, maker in enumerate(("manufacturer", "manufacturer2", "manufacturer", "manufacturer2") * 2, 1):
            device, private = ingest.device_register(device_id=f"LOG-{number:04d}", organisation=organisations[maker])
            assert private is not None
            loggers.setdefault(maker, []).append(device)
            keys.append({"device_id": device.device_id, "private_key": private.private_bytes_raw().hex()})
        _write_private(DEVICE_KEYS, json.dumps({"devices": keys}, indent=2))
        return loggers


def _stored_password() -> str:
    """One random demo password per checkout, kept in var/ (mode 0600) so every run prints the same."""
    path = settings.VAR_DIR / "demo-password"
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(9))
    return path.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    """Writes a secret file only its owner can read."""
    path.parent.mkdir(exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
