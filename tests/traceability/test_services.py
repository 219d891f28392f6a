"""The cold-chain services against the database, told through the personas.

``manufacturer`` makes a freeze-sensitive 2-8 °C vaccine, ``carrier`` and
``carrier2`` move it, ``wholesaler`` and ``pharmacy`` receive and pass it on,
``competitor`` makes its own products and must learn nothing of ours,
``regulator`` sees everything.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import time_machine
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, IntegrityError
from django.utils import timezone

from tests.conftest import Persona, make_persona
from tests.factories import BatchFactory, MembershipFactory, ProductFactory, SiteFactory
from traceability import coldchain, selectors, services
from traceability.models import (
    Batch,
    ContractRule,
    CustodyEvent,
    Membership,
    Organisation,
    Product,
    SerialNumber,
    Shipment,
    ShipmentItem,
    Site,
    TemperatureContract,
)
from traceability.services import ItemSpec, catalogue

Kind = Organisation.Kind
MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# Digits and capitals without I and O, which people misread (services.py).
SERIAL_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
# int(..., 34) reads 0-9A-X; this maps the serial alphabet (which skips I and O) onto it.
_AS_BASE34 = str.maketrans(SERIAL_ALPHABET, "0123456789ABCDEFGHIJKLMNOPQRSTUVWX")


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Personas never log in with a password here; Argon2 would only cost time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def wholesaler(personas: dict[str, Persona]) -> Persona:
    return make_persona("wholesaler", Kind.WHOLESALER)


@pytest.fixture
def vaccine(manufacturer: Persona) -> Product:
    return ProductFactory(
        manufacturer=manufacturer.organisation,
        name="Measles vaccine",
        storage_profile=coldchain.StorageProfile.REFRIGERATED,
        freeze_sensitive=True,
        stability_budget_minutes=240,
    )


@pytest.fixture
def batch(vaccine: Product) -> Batch:
    return BatchFactory(product=vaccine, lot="MV2501", quantity=1000)


@pytest.fixture
def shipment(manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch) -> Shipment:
    """300 doses planned from the manufacturer to the pharmacy, by road with ``carrier``."""
    return plan(manufacturer, to=pharmacy, via=carrier, items={batch: 300})


@pytest.fixture
def in_transit(shipment: Shipment, manufacturer: Persona) -> Shipment:
    return services.shipment_dispatch(actor=manufacturer.user, shipment=shipment)


# --- helpers --------------------------------------------------------------------


@contextmanager
def refused(*fields: str) -> Iterator[None]:
    """The service refuses the input with a ValidationError naming exactly ``fields``."""
    with pytest.raises(ValidationError) as excinfo:
        yield
    assert set(excinfo.value.message_dict) == set(fields), excinfo.value.message_dict


def denied() -> Any:
    return pytest.raises(PermissionDenied)


def today() -> datetime.date:
    return timezone.localdate()


def days(n: int) -> datetime.timedelta:
    return datetime.timedelta(days=n)


def colleague(of: Persona, role: str) -> Any:
    """Another user of ``of``'s organisation, in ``role``."""
    return MembershipFactory(organisation=of.organisation, role=role).user


def plan(shipper: Persona, *, to: Persona, via: Persona, items: dict[Batch, int], **kwargs: Any) -> Shipment:
    return services.shipment_create(
        actor=shipper.user,
        carrier=via.organisation,
        consignee=to.organisation,
        origin=shipper.site,
        destination=to.site,
        items=[ItemSpec(batch=batch, quantity=quantity) for batch, quantity in items.items()],
        **kwargs,
    )


def deliver(shipment: Shipment, *, shipper: Persona, consignee: Persona) -> Shipment:
    services.shipment_dispatch(actor=shipper.user, shipment=shipment)
    return services.shipment_receive(actor=consignee.user, shipment=shipment, accept=True)


def stock(persona: Persona, batch: Batch) -> int:
    return selectors.batch_available(organisation=persona.organisation, batch=batch)


def register_product(persona: Persona, **overrides: Any) -> Product:
    fields: dict[str, Any] = {
        "gtin": "4006381333931",
        "name": "Measles vaccine",
        "dosage_form": "powder for injection",
        "storage_profile": coldchain.StorageProfile.REFRIGERATED,
    }
    fields.update(overrides)
    return services.product_register(actor=persona.user, **fields)


def register_batch(persona: Persona, product: Product, **overrides: Any) -> Batch:
    fields: dict[str, Any] = {
        "lot": "MV2502",
        "manufactured_on": today() - days(30),
        "expires_on": today() + days(365),
        "quantity": 1000,
    }
    fields.update(overrides)
    return services.batch_register(actor=persona.user, product=product, **fields)


def serials(batch: Batch) -> list[str]:
    return list(SerialNumber.objects.filter(batch=batch).order_by("id").values_list("serial", flat=True))


def nothing_planned() -> bool:
    return not (
        Shipment.objects.exists()
        or ShipmentItem.objects.exists()
        or TemperatureContract.objects.exists()
        or ContractRule.objects.exists()
    )


# --- product_register ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("96385074", "00000096385074"),  # GTIN-8 (EAN-8)
        ("036000291452", "00036000291452"),  # GTIN-12 (UPC-A)
        ("4006381333931", "04006381333931"),  # GTIN-13 (EAN-13)
        ("09506000134352", "09506000134352"),  # GTIN-14
        (" 4006381333931 ", "04006381333931"),  # pasted with spaces
    ],
)
def test_a_manufacturer_registers_a_product_under_its_gtin_14(manufacturer: Persona, given: str, stored: str) -> None:
    product = register_product(manufacturer, gtin=given, freeze_sensitive=True, stability_budget_minutes=120)

    product.refresh_from_db()
    assert product.gtin == stored
    assert product.manufacturer == manufacturer.organisation
    assert (product.storage_profile, product.freeze_sensitive, product.stability_budget_minutes) == ("2-8C", True, 120)


def test_the_same_gtin_written_short_and_long_is_one_product(manufacturer: Persona) -> None:
    register_product(manufacturer, gtin="4006381333931")

    with refused("gtin"):
        register_product(manufacturer, gtin="04006381333931", name="Measles vaccine, again")

    assert Product.objects.count() == 1


def test_a_competitor_cannot_register_a_gtin_already_taken(manufacturer: Persona, competitor: Persona) -> None:
    register_product(manufacturer, gtin="4006381333931")

    with refused("gtin"):
        register_product(competitor, gtin="4006381333931")

    assert Product.objects.get().manufacturer == manufacturer.organisation


@pytest.mark.parametrize("bad_gtin", ["4006381333932", "400638133393", "40063813339A1", ""])
def test_a_mistyped_gtin_is_refused_naming_the_gtin(manufacturer: Persona, bad_gtin: str) -> None:
    with refused("gtin"):
        register_product(manufacturer, gtin=bad_gtin)

    assert not Product.objects.exists()


def test_a_wrong_check_digit_tells_the_user_what_to_fix(manufacturer: Persona) -> None:
    with pytest.raises(ValidationError) as excinfo:
        register_product(manufacturer, gtin="4006381333932")

    assert "check digit" in excinfo.value.message_dict["gtin"][0]


def test_an_unknown_storage_profile_is_refused(manufacturer: Persona) -> None:
    with refused("storage_profile"):
        register_product(manufacturer, storage_profile="fridge")


@pytest.mark.parametrize("persona", ["carrier", "pharmacy", "regulator"])
def test_only_a_manufacturer_registers_products(personas: dict[str, Persona], persona: str) -> None:
    with denied():
        register_product(personas[persona])

    assert not Product.objects.exists()


def test_a_wholesaler_does_not_register_products(wholesaler: Persona) -> None:
    with denied():
        register_product(wholesaler)


def test_a_viewer_at_the_manufacturer_cannot_register_products(manufacturer: Persona) -> None:
    viewer = colleague(manufacturer, Membership.Role.VIEWER)

    with denied():
        services.product_register(actor=viewer, gtin="4006381333931", name="x", dosage_form="x", storage_profile="2-8C")

    assert not Product.objects.exists()


# --- batch_register -------------------------------------------------------------------


def test_a_manufacturer_registers_a_batch_of_its_product(manufacturer: Persona, vaccine: Product) -> None:
    batch = register_batch(
        manufacturer,
        vaccine,
        lot="MV-25/06.1",
        manufactured_on=today() - days(10),
        expires_on=today() + days(700),
        quantity=5000,
    )

    batch.refresh_from_db()
    assert (batch.product, batch.lot, batch.quantity, batch.status) == (vaccine, "MV-25/06.1", 5000, "active")
    assert (batch.manufactured_on, batch.expires_on) == (today() - days(10), today() + days(700))
    assert serials(batch) == []
    assert stock(manufacturer, batch) == 5000


def test_a_competitor_cannot_register_a_batch_of_our_product(competitor: Persona, vaccine: Product) -> None:
    with denied():
        register_batch(competitor, vaccine)

    assert not Batch.objects.exists()


@pytest.mark.parametrize("persona", ["carrier", "pharmacy", "regulator"])
def test_only_a_manufacturer_registers_batches(personas: dict[str, Persona], vaccine: Product, persona: str) -> None:
    with denied():
        register_batch(personas[persona], vaccine)


def test_a_viewer_at_the_manufacturer_cannot_register_batches(manufacturer: Persona, vaccine: Product) -> None:
    viewer = colleague(manufacturer, Membership.Role.VIEWER)

    with denied():
        services.batch_register(
            actor=viewer,
            product=vaccine,
            lot="MV1",
            manufactured_on=today() - days(1),
            expires_on=today() + days(1),
            quantity=1,
        )


@pytest.mark.parametrize("bad_lot", ["", "MV 2501", "MV#2501", "MVÖ2501", "M" * 21])
def test_a_lot_outside_gs1_character_set_82_is_refused(manufacturer: Persona, vaccine: Product, bad_lot: str) -> None:
    with refused("lot"):
        register_batch(manufacturer, vaccine, lot=bad_lot)

    assert not Batch.objects.exists()


def test_a_batch_manufactured_tomorrow_is_refused(manufacturer: Persona, vaccine: Product) -> None:
    with refused("manufactured_on"):
        register_batch(manufacturer, vaccine, manufactured_on=today() + days(1))


@pytest.mark.parametrize("offset", [0, -1])
def test_a_batch_must_expire_after_it_was_made(manufacturer: Persona, vaccine: Product, offset: int) -> None:
    made = today() - days(30)

    with refused("expires_on"):
        register_batch(manufacturer, vaccine, manufactured_on=made, expires_on=made + days(offset))


def test_an_already_expired_batch_is_refused(manufacturer: Persona, vaccine: Product) -> None:
    with refused("expires_on"):
        register_batch(manufacturer, vaccine, manufactured_on=today() - days(400), expires_on=today() - days(1))

    assert not Batch.objects.exists()


def test_a_batch_usable_until_today_is_not_yet_expired(manufacturer: Persona, vaccine: Product) -> None:
    # Batch.is_expired, and so shipment_create, hold a batch usable through its
    # expiry date; registration must agree, not call it "passed".
    batch = register_batch(manufacturer, vaccine, manufactured_on=today() - days(400), expires_on=today())

    assert not batch.is_expired()


def test_a_batch_needs_at_least_one_unit(manufacturer: Persona, vaccine: Product) -> None:
    with refused("quantity"):
        register_batch(manufacturer, vaccine, quantity=0)


def test_a_lot_is_registered_once_per_product(manufacturer: Persona, vaccine: Product) -> None:
    register_batch(manufacturer, vaccine, lot="MV2502")
    other = ProductFactory(manufacturer=manufacturer.organisation)

    with refused("lot"):
        register_batch(manufacturer, vaccine, lot="MV2502", quantity=10)
    register_batch(manufacturer, other, lot="MV2502")

    assert Batch.objects.filter(lot="MV2502").count() == 2


def test_a_batch_gets_exactly_the_serial_numbers_asked_for(manufacturer: Persona, vaccine: Product) -> None:
    batch = register_batch(manufacturer, vaccine, quantity=1000, serial_count=250)

    numbers = serials(batch)
    assert len(numbers) == 250
    assert len(set(numbers)) == 250
    assert all(len(serial) == 12 and set(serial) <= set(SERIAL_ALPHABET) for serial in numbers)
    assert set(SerialNumber.objects.filter(batch=batch).values_list("product", flat=True)) == {vaccine.pk}
    assert set(SerialNumber.objects.filter(batch=batch).values_list("status", flat=True)) == {"active"}


def test_serial_numbers_cannot_be_guessed_from_one_another(manufacturer: Persona, vaccine: Product) -> None:
    """A counterfeiter holding one genuine pack must not be able to derive others.

    Read as base-34 numbers, 200 random 12-character serials lie, with
    overwhelming probability, more than 34**4 apart; sequential or
    counter-based serials would be neighbours. Random serials also spread
    over the alphabet from their first character on.
    """
    numbers = serials(register_batch(manufacturer, vaccine, quantity=1000, serial_count=200))

    values = sorted(int(serial.translate(_AS_BASE34), 34) for serial in numbers)
    assert min(b - a for a, b in itertools.pairwise(values)) > 34**4
    assert len({serial[0] for serial in numbers}) >= 20
    assert not any(char in serial for serial in numbers for char in "IO")


def test_a_serial_number_already_used_for_the_gtin_is_never_drawn_again(
    manufacturer: Persona, vaccine: Product, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One-character serials make collisions certain: 34 possible values, 30 taken.
    monkeypatch.setattr(catalogue, "SERIAL_LENGTH", 1)
    first = register_batch(manufacturer, vaccine, lot="MV1", serial_count=30)

    second = register_batch(manufacturer, vaccine, lot="MV2", serial_count=4)

    assert set(serials(first)).isdisjoint(serials(second))
    assert set(serials(first)) | set(serials(second)) == set(SERIAL_ALPHABET)


def test_as_many_serials_as_units_is_allowed(manufacturer: Persona, vaccine: Product) -> None:
    batch = register_batch(manufacturer, vaccine, quantity=20, serial_count=20)

    assert len(serials(batch)) == 20


@pytest.mark.parametrize("serial_count", [11, -1])
def test_more_serials_than_units_is_refused(manufacturer: Persona, vaccine: Product, serial_count: int) -> None:
    with refused("serial_count"):
        register_batch(manufacturer, vaccine, quantity=10, serial_count=serial_count)

    assert not Batch.objects.exists()
    assert not SerialNumber.objects.exists()


def test_a_batch_whose_serials_cannot_be_stored_is_not_registered(
    manufacturer: Persona, vaccine: Product, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Serials one character too long for the column fail after the batch row was written.
    monkeypatch.setattr(catalogue, "SERIAL_LENGTH", 21)

    with pytest.raises(DatabaseError):
        register_batch(manufacturer, vaccine, serial_count=5)

    assert not Batch.objects.exists()
    assert not SerialNumber.objects.exists()


# --- shipment_create --------------------------------------------------------------------


def test_a_manufacturer_plans_a_shipment_of_its_stock(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    shipment = plan(manufacturer, to=pharmacy, via=carrier, items={batch: 300})

    shipment.refresh_from_db()
    assert shipment.status == Shipment.Status.PLANNED
    assert (shipment.shipper, shipment.carrier, shipment.consignee) == (
        manufacturer.organisation,
        carrier.organisation,
        pharmacy.organisation,
    )
    assert shipment.custodian == manufacturer.organisation  # nothing has left the warehouse yet
    assert (shipment.origin, shipment.destination) == (manufacturer.site, pharmacy.site)
    assert shipment.created_by == manufacturer.user
    assert (shipment.dispatched_at, shipment.closed_at) == (None, None)
    assert [(item.batch, item.quantity) for item in shipment.items.all()] == [(batch, 300)]
    assert shipment.reference.startswith(f"SHP-{timezone.now():%Y%m%d}-")
    assert not shipment.custody_events.exists()


def test_two_shipments_get_different_references(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    first = plan(manufacturer, to=pharmacy, via=carrier, items={batch: 1})
    second = plan(manufacturer, to=pharmacy, via=carrier, items={batch: 1})

    assert first.reference != second.reference


def test_goods_leave_from_a_site_of_the_shipper(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    with refused("origin"):
        services.shipment_create(
            actor=manufacturer.user,
            carrier=carrier.organisation,
            consignee=pharmacy.organisation,
            origin=carrier.site,
            destination=pharmacy.site,
            items=[ItemSpec(batch, 10)],
        )

    assert nothing_planned()


def test_goods_go_to_a_site_of_the_consignee(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    with refused("destination"):
        services.shipment_create(
            actor=manufacturer.user,
            carrier=carrier.organisation,
            consignee=pharmacy.organisation,
            origin=manufacturer.site,
            destination=carrier.site,
            items=[ItemSpec(batch, 10)],
        )


def test_goods_cannot_be_shipped_to_the_site_they_are_at(manufacturer: Persona, carrier: Persona, batch: Batch) -> None:
    with refused("destination"):
        services.shipment_create(
            actor=manufacturer.user,
            carrier=carrier.organisation,
            consignee=manufacturer.organisation,
            origin=manufacturer.site,
            destination=manufacturer.site,
            items=[ItemSpec(batch, 10)],
        )


def test_a_manufacturer_may_move_stock_between_its_own_sites(
    manufacturer: Persona, carrier: Persona, batch: Batch
) -> None:
    warehouse = SiteFactory(organisation=manufacturer.organisation, name="Cold store 2")

    shipment = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=manufacturer.organisation,
        origin=manufacturer.site,
        destination=warehouse,
        items=[ItemSpec(batch, 10)],
    )

    assert shipment.destination == warehouse


@pytest.mark.parametrize("carrier_name", ["pharmacy", "competitor", "regulator"])
def test_the_carrier_is_a_logistics_provider(
    personas: dict[str, Persona], manufacturer: Persona, pharmacy: Persona, batch: Batch, carrier_name: str
) -> None:
    with refused("carrier"):
        plan(manufacturer, to=pharmacy, via=personas[carrier_name], items={batch: 10})

    assert nothing_planned()


def test_a_shipper_may_carry_its_own_goods(manufacturer: Persona, pharmacy: Persona, batch: Batch) -> None:
    shipment = plan(manufacturer, to=pharmacy, via=manufacturer, items={batch: 10})

    dispatched = services.shipment_dispatch(actor=manufacturer.user, shipment=shipment)

    assert dispatched.carrier == dispatched.custodian == manufacturer.organisation


def test_a_regulator_does_not_receive_goods(
    manufacturer: Persona, carrier: Persona, regulator: Persona, batch: Batch
) -> None:
    with refused("consignee"):
        plan(manufacturer, to=regulator, via=carrier, items={batch: 10})


def test_a_shipment_carries_at_least_one_batch(manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> None:
    with refused("items"):
        plan(manufacturer, to=pharmacy, via=carrier, items={})


def test_each_batch_is_listed_once(manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch) -> None:
    with refused("items"):
        services.shipment_create(
            actor=manufacturer.user,
            carrier=carrier.organisation,
            consignee=pharmacy.organisation,
            origin=manufacturer.site,
            destination=pharmacy.site,
            items=[ItemSpec(batch, 10), ItemSpec(batch, 20)],
        )

    assert nothing_planned()


def test_a_regulator_does_not_ship_goods(regulator: Persona, carrier: Persona, pharmacy: Persona, batch: Batch) -> None:
    with denied():
        plan(regulator, to=pharmacy, via=carrier, items={batch: 10})


def test_a_viewer_cannot_plan_shipments(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    viewer = colleague(manufacturer, Membership.Role.VIEWER)

    with denied():
        services.shipment_create(
            actor=viewer,
            carrier=carrier.organisation,
            consignee=pharmacy.organisation,
            origin=manufacturer.site,
            destination=pharmacy.site,
            items=[ItemSpec(batch, 10)],
        )


@pytest.mark.parametrize("quantity", [0, 1001])
def test_a_shipment_cannot_carry_more_than_the_stock(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch, quantity: int
) -> None:
    with refused("items"):
        plan(manufacturer, to=pharmacy, via=carrier, items={batch: quantity})

    assert nothing_planned()


def test_the_whole_batch_can_be_shipped_at_once(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    plan(manufacturer, to=pharmacy, via=carrier, items={batch: 1000})

    assert stock(manufacturer, batch) == 0


def test_planned_in_transit_and_delivered_shipments_all_leave_the_manufacturers_stock(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    plan(manufacturer, to=pharmacy, via=carrier, items={batch: 100})
    moving = plan(manufacturer, to=pharmacy, via=carrier, items={batch: 200})
    services.shipment_dispatch(actor=manufacturer.user, shipment=moving)
    deliver(plan(manufacturer, to=pharmacy, via=carrier, items={batch: 300}), shipper=manufacturer, consignee=pharmacy)

    assert stock(manufacturer, batch) == 1000 - 100 - 200 - 300
    with refused("items"):
        plan(manufacturer, to=pharmacy, via=carrier, items={batch: 401})
    plan(manufacturer, to=pharmacy, via=carrier, items={batch: 400})
    assert stock(manufacturer, batch) == 0


def test_a_rejected_delivery_returns_to_the_shippers_stock(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch, in_transit: Shipment
) -> None:
    assert stock(manufacturer, batch) == 700

    services.shipment_receive(actor=pharmacy.user, shipment=in_transit, accept=False, reason="logger shows 14 °C")

    assert stock(manufacturer, batch) == 1000
    assert stock(pharmacy, batch) == 0
    plan(manufacturer, to=pharmacy, via=carrier, items={batch: 1000})


@pytest.mark.parametrize(("first", "second"), [("wholesaler", "pharmacy"), ("pharmacy", "wholesaler")])
def test_a_consignee_ships_on_what_it_received_and_no_more(
    personas: dict[str, Persona],
    wholesaler: Persona,
    manufacturer: Persona,
    carrier: Persona,
    batch: Batch,
    first: str,
    second: str,
) -> None:
    parties = {**personas, "wholesaler": wholesaler}
    receiver, onward = parties[first], parties[second]
    deliver(plan(manufacturer, to=receiver, via=carrier, items={batch: 300}), shipper=manufacturer, consignee=receiver)
    assert stock(receiver, batch) == 300

    with refused("items"):
        plan(receiver, to=onward, via=carrier, items={batch: 301})
    plan(receiver, to=onward, via=carrier, items={batch: 120})

    assert stock(receiver, batch) == 180
    assert stock(manufacturer, batch) == 700  # the onward shipment is not the manufacturer's
    assert stock(onward, batch) == 0  # nothing is the next holder's until delivered


def test_goods_still_in_transit_are_not_yet_the_consignees_to_ship(
    wholesaler: Persona, manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    services.shipment_dispatch(
        actor=manufacturer.user, shipment=plan(manufacturer, to=wholesaler, via=carrier, items={batch: 300})
    )

    with refused("items"):
        plan(wholesaler, to=pharmacy, via=carrier, items={batch: 1})


def test_a_competitor_cannot_ship_our_batch(
    competitor: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    with refused("items"):
        plan(competitor, to=pharmacy, via=carrier, items={batch: 1})


@pytest.mark.parametrize(
    "status", [Batch.Status.QUARANTINED, Batch.Status.RECALLED, Batch.Status.EXPIRED, Batch.Status.DESTROYED]
)
def test_a_batch_that_is_not_active_is_not_shipped(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch, status: str
) -> None:
    Batch.objects.filter(pk=batch.pk).update(status=status)

    with pytest.raises(ValidationError) as excinfo:
        plan(manufacturer, to=pharmacy, via=carrier, items={batch: 10})

    assert status in excinfo.value.message_dict["items"][0]
    assert nothing_planned()


def test_a_batch_past_its_expiry_date_is_not_shipped(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, vaccine: Product
) -> None:
    expired = BatchFactory(product=vaccine, manufactured_on=today() - days(400), expires_on=today() - days(1))

    with pytest.raises(ValidationError) as excinfo:
        plan(manufacturer, to=pharmacy, via=carrier, items={expired: 10})

    assert "expired" in excinfo.value.message_dict["items"][0]


def test_products_needing_different_storage_travel_separately(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    tablets = BatchFactory(
        product__manufacturer=manufacturer.organisation,
        product__storage_profile=coldchain.StorageProfile.CONTROLLED_ROOM,
    )

    with refused("items"):
        plan(manufacturer, to=pharmacy, via=carrier, items={batch: 10, tablets: 10})

    assert nothing_planned()


def test_a_refused_second_item_leaves_nothing_planned_and_nothing_reserved(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch, vaccine: Product
) -> None:
    quarantined = BatchFactory(product=vaccine, status=Batch.Status.QUARANTINED)

    with refused("items"):
        plan(manufacturer, to=pharmacy, via=carrier, items={batch: 300, quarantined: 10})

    assert nothing_planned()
    assert stock(manufacturer, batch) == 1000


def test_a_shipment_whose_contract_cannot_be_stored_is_not_planned(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The contract is written last, after the shipment and its items; the
    # database refuses an inverted range, and everything before must go too.
    real = coldchain.default_contract
    monkeypatch.setattr(
        coldchain, "default_contract", lambda *a, **kw: dataclasses.replace(real(*a, **kw), min_celsius=9.0)
    )

    with pytest.raises(IntegrityError):
        plan(manufacturer, to=pharmacy, via=carrier, items={batch: 300})

    assert nothing_planned()
    assert stock(manufacturer, batch) == 1000


# --- the contract a shipment gets from its products ------------------------------------------


def contract_of(shipment: Shipment) -> TemperatureContract:
    return TemperatureContract.objects.get(shipment=shipment)


def rule_named(contract: TemperatureContract, name: str) -> ContractRule:
    return contract.rules.get(name=name)


def test_a_freeze_sensitive_vaccine_travels_under_a_critical_freeze_rule(shipment: Shipment) -> None:
    contract = contract_of(shipment)

    assert contract.storage_profile == "2-8C"
    assert (float(contract.min_celsius), float(contract.max_celsius)) == (2.0, 8.0)
    assert contract.arming_seconds == 10 * MINUTE
    freeze = rule_named(contract, "freeze")
    assert (freeze.band, float(freeze.threshold_celsius), freeze.duration_seconds) == ("below", -0.5, HOUR)
    assert freeze.severity == "critical"
    assert contract.freeze_thaw_limit == 0
    assert (float(contract.mkt_limit_celsius), contract.mkt_window_seconds) == (8.0, DAY)


def test_a_vaccine_that_tolerates_freezing_raises_an_alarm_and_has_no_freeze_thaw_limit(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    tolerant = BatchFactory(product__manufacturer=manufacturer.organisation, product__freeze_sensitive=False)

    contract = contract_of(plan(manufacturer, to=pharmacy, via=carrier, items={tolerant: 10}))

    assert rule_named(contract, "freeze").severity == "alarm"
    assert contract.freeze_thaw_limit is None


def test_a_room_temperature_tablet_travels_under_a_30_day_mkt(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    tablets = BatchFactory(
        product__manufacturer=manufacturer.organisation,
        product__storage_profile=coldchain.StorageProfile.CONTROLLED_ROOM,
        product__freeze_sensitive=False,
    )

    contract = contract_of(plan(manufacturer, to=pharmacy, via=carrier, items={tablets: 10}))

    assert contract.storage_profile == "15-25C"
    assert (float(contract.min_celsius), float(contract.max_celsius)) == (15.0, 25.0)
    assert (float(contract.mkt_limit_celsius), contract.mkt_window_seconds) == (25.0, 30 * DAY)
    assert not contract.rules.filter(name="freeze").exists()


def test_a_frozen_product_travels_without_mkt(manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> None:
    frozen = BatchFactory(
        product__manufacturer=manufacturer.organisation,
        product__storage_profile=coldchain.StorageProfile.FROZEN,
        product__freeze_sensitive=False,
    )

    contract = contract_of(plan(manufacturer, to=pharmacy, via=carrier, items={frozen: 10}))

    assert contract.storage_profile == "frozen"
    assert (float(contract.min_celsius), float(contract.max_celsius)) == (-25.0, -15.0)
    assert (contract.mkt_limit_celsius, contract.mkt_window_seconds) == (None, None)


def test_the_stability_budget_warns_at_half_and_four_fifths_and_breaches_when_spent(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    batch = BatchFactory(product__manufacturer=manufacturer.organisation, product__stability_budget_minutes=100)

    contract = contract_of(plan(manufacturer, to=pharmacy, via=carrier, items={batch: 10}))

    budget = contract.rules.filter(mode="cumulative").order_by("duration_seconds")
    assert [(r.duration_seconds, r.severity) for r in budget] == [
        (50 * MINUTE, "warning"),
        (80 * MINUTE, "warning"),
        (100 * MINUTE, "breach"),
    ]
    assert {(r.band, float(r.threshold_celsius)) for r in budget} == {("above", 8.0)}


def test_products_sharing_a_shipment_get_the_strictest_terms(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    robust = BatchFactory(
        product__manufacturer=manufacturer.organisation,
        product__freeze_sensitive=False,
        product__stability_budget_minutes=600,
    )
    fragile = BatchFactory(
        product__manufacturer=manufacturer.organisation,
        product__freeze_sensitive=True,
        product__stability_budget_minutes=60,
    )

    contract = contract_of(plan(manufacturer, to=pharmacy, via=carrier, items={robust: 10, fragile: 10}))

    assert rule_named(contract, "stability budget spent").duration_seconds == 60 * MINUTE
    assert rule_named(contract, "freeze").severity == "critical"
    assert contract.freeze_thaw_limit == 0


def test_a_product_without_a_stability_budget_gets_no_budget_rules(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    batch = BatchFactory(product__manufacturer=manufacturer.organisation, product__stability_budget_minutes=0)

    contract = contract_of(plan(manufacturer, to=pharmacy, via=carrier, items={batch: 10}))

    assert not contract.rules.filter(mode="cumulative").exists()
    assert contract.rules.filter(name="hard ceiling").exists()


def test_a_data_gap_is_twice_the_loggers_interval(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    contract = contract_of(plan(manufacturer, to=pharmacy, via=carrier, items={batch: 10}, logging_interval_seconds=60))

    assert (contract.logging_interval_seconds, contract.max_gap_seconds) == (60, 120)


def test_the_stored_contract_reads_back_as_the_rules_it_was_made_from(shipment: Shipment) -> None:
    expected = coldchain.default_contract(
        coldchain.StorageProfile.REFRIGERATED, stability_budget_minutes=240, freeze_sensitive=True
    )

    stored = contract_of(shipment).as_rules()

    assert dataclasses.replace(stored, rules=()) == dataclasses.replace(expected, rules=())
    assert set(stored.rules) == set(expected.rules)


# --- shipment_dispatch -------------------------------------------------------------------


def test_dispatch_hands_the_goods_to_the_carrier_at_the_origin(
    manufacturer: Persona, carrier: Persona, shipment: Shipment
) -> None:
    services.shipment_dispatch(actor=manufacturer.user, shipment=shipment)

    shipment.refresh_from_db()
    assert shipment.status == Shipment.Status.IN_TRANSIT
    assert shipment.custodian == carrier.organisation
    event = shipment.custody_events.get()
    assert event.kind == CustodyEvent.Kind.DISPATCH
    assert (event.from_organisation, event.to_organisation) == (manufacturer.organisation, carrier.organisation)
    assert event.site == manufacturer.site
    assert event.recorded_by == manufacturer.user
    assert shipment.dispatched_at == event.occurred_at
    assert shipment.closed_at is None


def test_a_dispatch_recorded_late_keeps_the_time_it_happened(manufacturer: Persona, shipment: Shipment) -> None:
    with time_machine.travel(timezone.now() + datetime.timedelta(hours=3), tick=False):
        left_at = timezone.now() - datetime.timedelta(hours=2)
        services.shipment_dispatch(actor=manufacturer.user, shipment=shipment, occurred_at=left_at)

    shipment.refresh_from_db()
    assert shipment.dispatched_at == left_at
    assert shipment.custody_events.get().occurred_at == left_at


@pytest.mark.parametrize("persona", ["carrier", "pharmacy", "competitor", "regulator"])
def test_only_the_shipper_dispatches(personas: dict[str, Persona], shipment: Shipment, persona: str) -> None:
    with denied():
        services.shipment_dispatch(actor=personas[persona].user, shipment=shipment)

    shipment.refresh_from_db()
    assert shipment.status == Shipment.Status.PLANNED


def test_a_viewer_at_the_shipper_cannot_dispatch(manufacturer: Persona, shipment: Shipment) -> None:
    with denied():
        services.shipment_dispatch(actor=colleague(manufacturer, Membership.Role.VIEWER), shipment=shipment)


def test_a_shipment_is_dispatched_once(manufacturer: Persona, in_transit: Shipment) -> None:
    with refused("status"):
        services.shipment_dispatch(actor=manufacturer.user, shipment=in_transit)

    assert in_transit.custody_events.count() == 1


def test_a_batch_quarantined_after_planning_blocks_dispatch(
    manufacturer: Persona, shipment: Shipment, batch: Batch
) -> None:
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.QUARANTINED)

    with refused("items"):
        services.shipment_dispatch(actor=manufacturer.user, shipment=shipment)

    shipment.refresh_from_db()
    assert shipment.status == Shipment.Status.PLANNED
    assert shipment.custodian == manufacturer.organisation
    assert not shipment.custody_events.exists()


def test_a_batch_that_expired_after_planning_blocks_dispatch(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, vaccine: Product
) -> None:
    short_dated = BatchFactory(product=vaccine, expires_on=today() + days(1))
    shipment = plan(manufacturer, to=pharmacy, via=carrier, items={short_dated: 10})

    with time_machine.travel(timezone.now() + datetime.timedelta(days=3), tick=False), refused("items"):
        services.shipment_dispatch(actor=manufacturer.user, shipment=shipment)

    shipment.refresh_from_db()
    assert shipment.status == Shipment.Status.PLANNED


def test_a_dispatch_in_the_future_is_refused(manufacturer: Persona, shipment: Shipment) -> None:
    with refused("occurred_at"):
        services.shipment_dispatch(
            actor=manufacturer.user, shipment=shipment, occurred_at=timezone.now() + datetime.timedelta(hours=1)
        )

    shipment.refresh_from_db()
    assert shipment.status == Shipment.Status.PLANNED


def test_a_clock_a_minute_fast_is_tolerated(manufacturer: Persona, shipment: Shipment) -> None:
    ahead = timezone.now() + datetime.timedelta(minutes=1)

    dispatched = services.shipment_dispatch(actor=manufacturer.user, shipment=shipment, occurred_at=ahead)

    assert dispatched.dispatched_at == ahead


def test_a_dispatch_recorded_after_the_fact_keeps_its_real_time(manufacturer: Persona, shipment: Shipment) -> None:
    earlier = shipment.created_at - datetime.timedelta(hours=1)
    dispatched = services.shipment_dispatch(actor=manufacturer.user, shipment=shipment, occurred_at=earlier)
    assert dispatched.dispatched_at == earlier


def test_a_dispatch_more_than_a_week_old_is_refused(manufacturer: Persona, shipment: Shipment) -> None:
    with refused("occurred_at"):
        services.shipment_dispatch(
            actor=manufacturer.user, shipment=shipment, occurred_at=timezone.now() - datetime.timedelta(days=8)
        )


# --- custody_transfer ------------------------------------------------------------------------


def test_the_carrier_hands_the_goods_to_another_carrier_at_its_cross_dock(
    carrier: Persona, carrier2: Persona, in_transit: Shipment
) -> None:
    event = services.custody_transfer(
        actor=carrier.user,
        shipment=in_transit,
        to_organisation=carrier2.organisation,
        site=carrier2.site,
        note="seal 00417 intact",
    )

    in_transit.refresh_from_db()
    assert in_transit.custodian == carrier2.organisation
    assert in_transit.status == Shipment.Status.IN_TRANSIT
    assert event.kind == CustodyEvent.Kind.HANDOVER
    assert (event.from_organisation, event.to_organisation) == (carrier.organisation, carrier2.organisation)
    assert (event.site, event.note, event.recorded_by) == (carrier2.site, "seal 00417 intact", carrier.user)
    assert list(in_transit.custody_events.values_list("kind", flat=True)) == ["dispatch", "handover"]


def test_goods_can_be_handed_over_at_a_place_that_is_not_a_site(
    carrier: Persona, carrier2: Persona, in_transit: Shipment
) -> None:
    event = services.custody_transfer(
        actor=carrier.user, shipment=in_transit, to_organisation=carrier2.organisation, location="A2 services, km 212"
    )

    assert (event.site, event.location) == (None, "A2 services, km 212")


@pytest.mark.parametrize("persona", ["carrier2", "manufacturer", "pharmacy", "regulator"])
def test_only_the_organisation_holding_the_goods_hands_them_over(
    personas: dict[str, Persona], in_transit: Shipment, persona: str
) -> None:
    with denied():
        services.custody_transfer(
            actor=personas[persona].user, shipment=in_transit, to_organisation=personas["carrier2"].organisation
        )

    in_transit.refresh_from_db()
    assert in_transit.custodian == personas["carrier"].organisation


def test_a_planned_shipment_is_not_handed_over_but_dispatched(
    manufacturer: Persona, carrier: Persona, shipment: Shipment
) -> None:
    with refused("status"):
        services.custody_transfer(actor=manufacturer.user, shipment=shipment, to_organisation=carrier.organisation)


def test_a_delivered_shipment_is_not_handed_over(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, shipment: Shipment
) -> None:
    deliver(shipment, shipper=manufacturer, consignee=pharmacy)

    with refused("status"):
        services.custody_transfer(actor=pharmacy.user, shipment=shipment, to_organisation=carrier.organisation)


@pytest.mark.parametrize("receiver", ["pharmacy", "manufacturer", "competitor", "regulator"])
def test_goods_in_transit_pass_only_to_a_logistics_provider_or_wholesaler(
    personas: dict[str, Persona], carrier: Persona, in_transit: Shipment, receiver: str
) -> None:
    with refused("to_organisation"):
        services.custody_transfer(
            actor=carrier.user, shipment=in_transit, to_organisation=personas[receiver].organisation
        )

    assert in_transit.custody_events.count() == 1


def test_goods_in_transit_may_pass_to_a_wholesalers_cross_dock(
    carrier: Persona, wholesaler: Persona, in_transit: Shipment
) -> None:
    services.custody_transfer(
        actor=carrier.user, shipment=in_transit, to_organisation=wholesaler.organisation, site=wholesaler.site
    )

    in_transit.refresh_from_db()
    assert in_transit.custodian == wholesaler.organisation


def test_a_carrier_cannot_hand_goods_to_itself(carrier: Persona, in_transit: Shipment) -> None:
    with refused("to_organisation"):
        services.custody_transfer(actor=carrier.user, shipment=in_transit, to_organisation=carrier.organisation)


def test_the_handover_site_belongs_to_the_organisation_taking_the_goods(
    carrier: Persona, carrier2: Persona, in_transit: Shipment
) -> None:
    with refused("site"):
        services.custody_transfer(
            actor=carrier.user, shipment=in_transit, to_organisation=carrier2.organisation, site=carrier.site
        )

    in_transit.refresh_from_db()
    assert in_transit.custodian == carrier.organisation


def test_a_handover_before_the_previous_custody_event_is_refused(
    carrier: Persona, carrier2: Persona, in_transit: Shipment
) -> None:
    dispatched_at = in_transit.dispatched_at
    assert dispatched_at is not None

    with refused("occurred_at"):
        services.custody_transfer(
            actor=carrier.user,
            shipment=in_transit,
            to_organisation=carrier2.organisation,
            occurred_at=dispatched_at - datetime.timedelta(minutes=1),
        )


def test_a_handover_in_the_future_is_refused(carrier: Persona, carrier2: Persona, in_transit: Shipment) -> None:
    with refused("occurred_at"):
        services.custody_transfer(
            actor=carrier.user,
            shipment=in_transit,
            to_organisation=carrier2.organisation,
            occurred_at=timezone.now() + datetime.timedelta(hours=1),
        )


def test_the_new_holder_sees_the_shipment_and_can_pass_it_on(
    carrier: Persona, carrier2: Persona, wholesaler: Persona, pharmacy: Persona, in_transit: Shipment
) -> None:
    assert in_transit not in selectors.visible_shipments(carrier2.organisation)

    services.custody_transfer(actor=carrier.user, shipment=in_transit, to_organisation=carrier2.organisation)

    assert in_transit in selectors.visible_shipments(carrier2.organisation)
    with denied():  # the first carrier no longer holds the goods
        services.custody_transfer(actor=carrier.user, shipment=in_transit, to_organisation=wholesaler.organisation)
    services.custody_transfer(actor=carrier2.user, shipment=in_transit, to_organisation=wholesaler.organisation)
    received = services.shipment_receive(actor=pharmacy.user, shipment=in_transit, accept=True)

    receipt = received.custody_events.get(kind=CustodyEvent.Kind.RECEIPT)
    assert receipt.from_organisation == wholesaler.organisation
    assert [(e.from_organisation.name, e.to_organisation.name) for e in received.custody_events.all()] == [
        ("Manufacturer", "Carrier"),
        ("Carrier", "Carrier2"),
        ("Carrier2", "Wholesaler"),
        ("Wholesaler", "Pharmacy"),
    ]


# --- shipment_receive -----------------------------------------------------------------------


def test_the_pharmacy_accepts_a_delivery_and_takes_custody_at_its_door(
    carrier: Persona, pharmacy: Persona, in_transit: Shipment
) -> None:
    services.shipment_receive(actor=pharmacy.user, shipment=in_transit, accept=True)

    in_transit.refresh_from_db()
    assert in_transit.status == Shipment.Status.DELIVERED
    assert in_transit.custodian == pharmacy.organisation
    receipt = in_transit.custody_events.get(kind=CustodyEvent.Kind.RECEIPT)
    assert (receipt.from_organisation, receipt.to_organisation) == (carrier.organisation, pharmacy.organisation)
    assert (receipt.site, receipt.recorded_by) == (pharmacy.site, pharmacy.user)
    assert in_transit.closed_at == receipt.occurred_at
    assert in_transit.rejection_reason == ""


def test_the_pharmacy_rejects_a_delivery_that_got_warm_and_the_carrier_keeps_it(
    carrier: Persona, pharmacy: Persona, in_transit: Shipment
) -> None:
    services.shipment_receive(
        actor=pharmacy.user, shipment=in_transit, accept=False, reason="  logger shows 14 °C for 3 h  "
    )

    in_transit.refresh_from_db()
    assert in_transit.status == Shipment.Status.REJECTED
    assert in_transit.rejection_reason == "logger shows 14 °C for 3 h"
    assert in_transit.custodian == carrier.organisation
    assert not in_transit.custody_events.filter(kind=CustodyEvent.Kind.RECEIPT).exists()
    assert in_transit.closed_at is not None


@pytest.mark.parametrize("reason", ["", "   \n"])
def test_a_rejection_says_why(pharmacy: Persona, in_transit: Shipment, reason: str) -> None:
    with refused("reason"):
        services.shipment_receive(actor=pharmacy.user, shipment=in_transit, accept=False, reason=reason)

    in_transit.refresh_from_db()
    assert in_transit.status == Shipment.Status.IN_TRANSIT


@pytest.mark.parametrize("persona", ["carrier", "manufacturer", "competitor", "regulator"])
def test_only_the_consignee_receives(personas: dict[str, Persona], in_transit: Shipment, persona: str) -> None:
    with denied():
        services.shipment_receive(actor=personas[persona].user, shipment=in_transit, accept=True)

    in_transit.refresh_from_db()
    assert in_transit.status == Shipment.Status.IN_TRANSIT


def test_a_viewer_at_the_pharmacy_cannot_receive(pharmacy: Persona, in_transit: Shipment) -> None:
    with denied():
        services.shipment_receive(actor=colleague(pharmacy, Membership.Role.VIEWER), shipment=in_transit, accept=True)


def test_a_shipment_not_yet_dispatched_cannot_be_received(pharmacy: Persona, shipment: Shipment) -> None:
    with refused("status"):
        services.shipment_receive(actor=pharmacy.user, shipment=shipment, accept=True)


@pytest.mark.parametrize("accept", [True, False])
def test_a_closed_shipment_is_not_received_again(pharmacy: Persona, in_transit: Shipment, accept: bool) -> None:
    services.shipment_receive(actor=pharmacy.user, shipment=in_transit, accept=accept, reason="damaged")

    with refused("status"):
        services.shipment_receive(actor=pharmacy.user, shipment=in_transit, accept=True)


def test_a_receipt_before_the_goods_were_dispatched_is_refused(pharmacy: Persona, in_transit: Shipment) -> None:
    assert in_transit.dispatched_at is not None

    with refused("occurred_at"):
        services.shipment_receive(
            actor=pharmacy.user,
            shipment=in_transit,
            accept=True,
            occurred_at=in_transit.dispatched_at - datetime.timedelta(minutes=5),
        )


# --- site_create -----------------------------------------------------------------------------


def add_site(actor: Any, **overrides: Any) -> Site:
    fields: dict[str, Any] = {"name": "Cold store Muttenz", "gln": "7612345000008", "city": "Muttenz", "country": "CH"}
    fields.update(overrides)
    return services.site_create(actor=actor, **fields)


def test_an_administrator_adds_a_site_to_their_organisation(manufacturer: Persona) -> None:
    admin = colleague(manufacturer, Membership.Role.ADMIN)

    site = add_site(admin, gln=" 7612345000008 ", country="ch", street="Hofackerstrasse 1", postal_code="4132")

    site.refresh_from_db()
    assert site.organisation == manufacturer.organisation
    assert (site.gln, site.country) == ("7612345000008", "CH")
    assert (site.name, site.street, site.postal_code, site.city) == (
        "Cold store Muttenz",
        "Hofackerstrasse 1",
        "4132",
        "Muttenz",
    )


@pytest.mark.parametrize("role", [Membership.Role.OPERATOR, Membership.Role.VIEWER])
def test_only_an_administrator_adds_sites(manufacturer: Persona, role: str) -> None:
    with denied():
        add_site(colleague(manufacturer, role))

    assert not Site.objects.filter(gln="7612345000008").exists()


@pytest.mark.parametrize("bad_gln", ["7612345000007", "761234500000", "76123450000080", "761234500000X"])
def test_a_site_gln_is_checked(manufacturer: Persona, bad_gln: str) -> None:
    with refused("gln"):
        add_site(colleague(manufacturer, Membership.Role.ADMIN), gln=bad_gln)


def test_a_gln_already_in_use_is_refused(manufacturer: Persona, competitor: Persona) -> None:
    add_site(colleague(competitor, Membership.Role.ADMIN), gln="7612345000008")

    with refused("gln"):
        add_site(colleague(manufacturer, Membership.Role.ADMIN), gln="7612345000008")

    assert Site.objects.get(gln="7612345000008").organisation == competitor.organisation


# --- who sees what (selectors) ------------------------------------------------------------------


@pytest.fixture
def supply_chain(
    manufacturer: Persona,
    competitor: Persona,
    carrier: Persona,
    carrier2: Persona,
    wholesaler: Persona,
    pharmacy: Persona,
    vaccine: Product,
    batch: Batch,
) -> dict[str, Any]:
    """The manufacturer sells to the wholesaler, which ships on to the pharmacy;
    the manufacturer also supplies the pharmacy directly with another lot.
    """
    direct_lot = BatchFactory(product=vaccine, lot="MV2502")
    unshipped = BatchFactory(product=vaccine, lot="MV2503")
    rival_batch = BatchFactory(product__manufacturer=competitor.organisation)
    to_wholesaler = plan(manufacturer, to=wholesaler, via=carrier, items={batch: 300})
    deliver(to_wholesaler, shipper=manufacturer, consignee=wholesaler)
    onward = plan(wholesaler, to=pharmacy, via=carrier, items={batch: 100})
    direct = plan(manufacturer, to=pharmacy, via=carrier2, items={direct_lot: 50})
    return {
        "to_wholesaler": to_wholesaler,
        "onward": onward,
        "direct": direct,
        "batch": batch,
        "direct_lot": direct_lot,
        "unshipped": unshipped,
        "rival_batch": rival_batch,
        "vaccine": vaccine,
        "rival_product": rival_batch.product,
    }


def test_a_manufacturer_follows_its_batches_even_when_a_wholesaler_ships_them_on(
    manufacturer: Persona, supply_chain: dict[str, Any]
) -> None:
    org = manufacturer.organisation
    chain = supply_chain

    assert set(selectors.visible_shipments(org)) == {chain["to_wholesaler"], chain["onward"], chain["direct"]}
    assert set(selectors.visible_batches(org)) == {chain["batch"], chain["direct_lot"], chain["unshipped"]}
    assert set(selectors.visible_products(org)) == {chain["vaccine"]}


def test_a_competitor_sees_nothing_of_ours(competitor: Persona, supply_chain: dict[str, Any]) -> None:
    org = competitor.organisation

    assert not selectors.visible_shipments(org).exists()
    assert set(selectors.visible_batches(org)) == {supply_chain["rival_batch"]}
    assert set(selectors.visible_products(org)) == {supply_chain["rival_product"]}


def test_a_wholesaler_sees_what_it_bought_and_sold_but_not_the_manufacturers_other_business(
    wholesaler: Persona, supply_chain: dict[str, Any]
) -> None:
    org = wholesaler.organisation

    assert set(selectors.visible_shipments(org)) == {supply_chain["to_wholesaler"], supply_chain["onward"]}
    assert set(selectors.visible_batches(org)) == {supply_chain["batch"]}
    assert set(selectors.visible_products(org)) == {supply_chain["vaccine"]}


def test_a_pharmacy_sees_the_shipments_coming_to_it(pharmacy: Persona, supply_chain: dict[str, Any]) -> None:
    org = pharmacy.organisation

    assert set(selectors.visible_shipments(org)) == {supply_chain["onward"], supply_chain["direct"]}
    assert set(selectors.visible_batches(org)) == {supply_chain["batch"], supply_chain["direct_lot"]}


def test_a_carrier_sees_the_shipments_it_is_booked_for(
    carrier: Persona, carrier2: Persona, supply_chain: dict[str, Any]
) -> None:
    assert set(selectors.visible_shipments(carrier.organisation)) == {
        supply_chain["to_wholesaler"],
        supply_chain["onward"],
    }
    assert set(selectors.visible_shipments(carrier2.organisation)) == {supply_chain["direct"]}
    assert set(selectors.visible_batches(carrier2.organisation)) == {supply_chain["direct_lot"]}


def test_a_regulator_sees_everything(regulator: Persona, supply_chain: dict[str, Any]) -> None:
    org = regulator.organisation

    assert set(selectors.visible_shipments(org)) == set(Shipment.objects.all())
    assert selectors.visible_shipments(org).count() == 3
    assert set(selectors.visible_batches(org)) == set(Batch.objects.all())
    assert set(selectors.visible_products(org)) == {supply_chain["vaccine"], supply_chain["rival_product"]}


def test_a_second_carrier_sees_a_shipment_once_it_took_custody_and_after_passing_it_on(
    carrier: Persona, carrier2: Persona, wholesaler: Persona, in_transit: Shipment, batch: Batch
) -> None:
    assert in_transit not in selectors.visible_shipments(carrier2.organisation)
    assert batch not in selectors.visible_batches(carrier2.organisation)

    services.custody_transfer(actor=carrier.user, shipment=in_transit, to_organisation=carrier2.organisation)
    assert in_transit in selectors.visible_shipments(carrier2.organisation)
    assert batch in selectors.visible_batches(carrier2.organisation)

    services.custody_transfer(actor=carrier2.user, shipment=in_transit, to_organisation=wholesaler.organisation)
    assert in_transit in selectors.visible_shipments(carrier2.organisation)  # it has held the goods
