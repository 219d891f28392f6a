"""The database itself refuses rows that break the domain's invariants.

Rows are written straight through the ORM, past the services, as a buggy
migration, admin action or script would write them. Each refusal is checked
next to a valid row, so a test fails if the constraint is missing, not
merely if the row is odd.

PostgreSQL refuses a value longer than its column with ``DataError`` before
any CHECK runs; SQLite does not enforce lengths, so there the CHECK refuses
it with ``IntegrityError``. Either way the row is not written.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from django.db import DataError, IntegrityError, transaction
from django.utils import timezone

from tests.conftest import Persona
from tests.factories import BatchFactory, OrganisationFactory, ProductFactory, SiteFactory
from traceability.models import (
    Batch,
    CustodyEvent,
    Organisation,
    Product,
    SerialNumber,
    Shipment,
    Site,
    TemperatureContract,
)

TODAY = datetime.date(2025, 6, 15)
VALID_GLN = "4000000000013"  # 400000000001 -> check digit 3


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Personas never log in with a password here; Argon2 would only cost time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@contextmanager
def refused_by_the_database(*, too_long: bool = False) -> Iterator[None]:
    errors: tuple[type[Exception], ...] = (IntegrityError, DataError) if too_long else (IntegrityError,)
    with pytest.raises(errors), transaction.atomic():
        yield


# --- organisations and sites -------------------------------------------------


@pytest.mark.django_db
def test_an_organisation_with_a_13_digit_gln_is_stored() -> None:
    OrganisationFactory(gln=VALID_GLN)

    assert Organisation.objects.filter(gln=VALID_GLN).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad_gln", "too_long"),
    [
        ("400000000001", False),  # 12 digits
        ("40000000000130", True),  # 14 digits
        ("400000000001A", False),  # a letter
        ("4000-00000001", False),  # punctuation
        ("", False),
        ("4000000000013\n", True),  # a pasted line break
    ],
)
def test_an_organisation_gln_must_be_exactly_13_digits(bad_gln: str, too_long: bool) -> None:
    with refused_by_the_database(too_long=too_long):
        OrganisationFactory(gln=bad_gln)

    assert not Organisation.objects.filter(gln=bad_gln).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("country", "too_long"), [("ch", False), ("C1", False), ("CHE", True), ("CH\n", True)])
def test_a_site_country_must_be_an_upper_case_iso_code(country: str, too_long: bool) -> None:
    SiteFactory(country="CH")

    with refused_by_the_database(too_long=too_long):
        SiteFactory(country=country)

    assert not Site.objects.filter(country=country).exists()


# --- products -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad_gtin", "too_long"),
    [
        ("4006381333931", False),  # a GTIN-13 not padded to 14 digits
        ("040063813339310", True),  # 15 digits
        ("0400638133393X", False),
        ("04006381333931\n", True),
    ],
)
def test_a_product_gtin_is_stored_as_exactly_14_digits(bad_gtin: str, too_long: bool) -> None:
    ProductFactory(gtin="04006381333931")

    with refused_by_the_database(too_long=too_long):
        ProductFactory(gtin=bad_gtin)

    assert list(Product.objects.values_list("gtin", flat=True)) == ["04006381333931"]


@pytest.mark.django_db
def test_two_products_cannot_share_a_gtin() -> None:
    ProductFactory(gtin="04006381333931")

    with refused_by_the_database():
        ProductFactory(gtin="04006381333931")


# --- batches ---------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("lot", ["A", "LOT-2025/06.1", "!\"%&'()*+,-./:;<=>?_", "12345678901234567890"])
def test_a_lot_of_1_to_20_gs1_characters_is_stored(lot: str) -> None:
    BatchFactory(lot=lot)

    assert Batch.objects.get().lot == lot


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad_lot", "too_long"),
    [
        ("", False),
        ("LOT 1", False),  # a space is not in GS1 character set 82
        ("LOT#1", False),
        ("LÖT1", False),
        ("LOT\\1", False),  # the backslash that escapes '"' in the pattern is not itself allowed
        ("123456789012345678901", True),  # 21 characters
        ("LOT1\n", False),  # a trailing line break must not slip past an anchored pattern
    ],
)
def test_a_lot_outside_gs1_character_set_82_is_refused(bad_lot: str, too_long: bool) -> None:
    with refused_by_the_database(too_long=too_long):
        BatchFactory(lot=bad_lot)

    assert not Batch.objects.exists()


@pytest.mark.django_db
def test_a_lot_is_unique_per_product_but_may_repeat_across_products() -> None:
    first = BatchFactory(lot="L1")
    BatchFactory(lot="L1")  # another product

    with refused_by_the_database():
        BatchFactory(product=first.product, lot="L1")

    assert Batch.objects.filter(lot="L1").count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("quantity", [0, -1])
def test_a_batch_holds_at_least_one_unit(quantity: int) -> None:
    with refused_by_the_database():
        BatchFactory(quantity=quantity)

    assert not Batch.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("days_after_manufacture", [0, -1])
def test_a_batch_expires_after_it_was_made(days_after_manufacture: int) -> None:
    made = TODAY - datetime.timedelta(days=30)
    BatchFactory(manufactured_on=made, expires_on=made + datetime.timedelta(days=1))

    with refused_by_the_database():
        BatchFactory(manufactured_on=made, expires_on=made + datetime.timedelta(days=days_after_manufacture))

    assert Batch.objects.count() == 1


# --- serial numbers ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_serial_number_cannot_repeat_within_a_gtin_even_in_another_batch() -> None:
    first = BatchFactory()
    second = BatchFactory(product=first.product)
    SerialNumber.objects.create(product=first.product, batch=first, serial="7Q2K9X4M1T8B")

    with refused_by_the_database():
        SerialNumber.objects.create(product=second.product, batch=second, serial="7Q2K9X4M1T8B")

    assert SerialNumber.objects.filter(serial="7Q2K9X4M1T8B").count() == 1


@pytest.mark.django_db
def test_the_same_serial_number_under_two_gtins_is_two_packs() -> None:
    vaccine, tablet = BatchFactory(), BatchFactory()

    SerialNumber.objects.create(product=vaccine.product, batch=vaccine, serial="7Q2K9X4M1T8B")
    SerialNumber.objects.create(product=tablet.product, batch=tablet, serial="7Q2K9X4M1T8B")

    assert SerialNumber.objects.filter(serial="7Q2K9X4M1T8B").count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(("bad_serial", "too_long"), [("", False), ("SN 1", False), ("S" * 21, True), ("SN1\n", False)])
def test_a_serial_outside_gs1_character_set_82_is_refused(bad_serial: str, too_long: bool) -> None:
    batch = BatchFactory()

    with refused_by_the_database(too_long=too_long):
        SerialNumber.objects.create(product=batch.product, batch=batch, serial=bad_serial)

    assert not SerialNumber.objects.exists()


# --- shipments ---------------------------------------------------------------------


def shipment_row(personas: dict[str, Persona], **overrides: Any) -> Shipment:
    """A shipment row written straight to the table; valid unless ``overrides`` break it."""
    manufacturer, carrier, pharmacy = personas["manufacturer"], personas["carrier"], personas["pharmacy"]
    fields: dict[str, Any] = {
        "reference": f"SHP-TEST-{Shipment.objects.count() + 1}",
        "shipper": manufacturer.organisation,
        "carrier": carrier.organisation,
        "consignee": pharmacy.organisation,
        "custodian": manufacturer.organisation,
        "origin": manufacturer.site,
        "destination": pharmacy.site,
        "created_by": manufacturer.user,
    }
    fields.update(overrides)
    return Shipment.objects.create(**fields)


def in_transit() -> dict[str, Any]:
    return {"status": Shipment.Status.IN_TRANSIT, "dispatched_at": timezone.now()}


def closed(status: str, reason: str = "") -> dict[str, Any]:
    now = timezone.now()
    return {"status": status, "dispatched_at": now, "closed_at": now, "rejection_reason": reason}


@pytest.mark.django_db
def test_shipments_in_every_consistent_state_are_stored(personas: dict[str, Persona]) -> None:
    shipment_row(personas)
    shipment_row(personas, **in_transit())
    shipment_row(personas, **closed(Shipment.Status.DELIVERED))
    shipment_row(personas, **closed(Shipment.Status.REJECTED, reason="logger shows 14 °C for 3 h"))

    assert sorted(Shipment.objects.values_list("status", flat=True)) == [
        "delivered",
        "in_transit",
        "planned",
        "rejected",
    ]


@pytest.mark.django_db
def test_a_shipment_cannot_leave_from_where_it_is_going(personas: dict[str, Persona]) -> None:
    with refused_by_the_database():
        shipment_row(personas, destination=personas["manufacturer"].site)

    assert not Shipment.objects.exists()


@pytest.mark.django_db
def test_a_rejected_shipment_says_why(personas: dict[str, Persona]) -> None:
    with refused_by_the_database():
        shipment_row(personas, **closed(Shipment.Status.REJECTED, reason=""))

    assert not Shipment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("status", [Shipment.Status.PLANNED, Shipment.Status.IN_TRANSIT, Shipment.Status.DELIVERED])
def test_only_a_rejected_shipment_carries_a_rejection_reason(personas: dict[str, Persona], status: str) -> None:
    now = timezone.now()
    fields = {
        Shipment.Status.PLANNED: {},
        Shipment.Status.IN_TRANSIT: {"dispatched_at": now},
        Shipment.Status.DELIVERED: {"dispatched_at": now, "closed_at": now},
    }[status]

    with refused_by_the_database():
        shipment_row(personas, status=status, rejection_reason="damaged", **fields)


@pytest.mark.django_db
def test_a_shipment_in_transit_records_when_it_was_dispatched(personas: dict[str, Persona]) -> None:
    with refused_by_the_database():
        shipment_row(personas, status=Shipment.Status.IN_TRANSIT, dispatched_at=None)

    assert not Shipment.objects.exists()


@pytest.mark.django_db
def test_a_planned_shipment_has_not_been_dispatched(personas: dict[str, Persona]) -> None:
    with refused_by_the_database():
        shipment_row(personas, status=Shipment.Status.PLANNED, dispatched_at=timezone.now())


@pytest.mark.django_db
def test_a_delivered_shipment_records_when_it_was_closed(personas: dict[str, Persona]) -> None:
    with refused_by_the_database():
        shipment_row(personas, status=Shipment.Status.DELIVERED, dispatched_at=timezone.now(), closed_at=None)


@pytest.mark.django_db
def test_a_shipment_in_transit_is_not_closed(personas: dict[str, Persona]) -> None:
    with refused_by_the_database():
        shipment_row(personas, **in_transit(), closed_at=timezone.now())


@pytest.mark.django_db
def test_a_shipment_status_outside_the_lifecycle_is_refused(personas: dict[str, Persona]) -> None:
    with refused_by_the_database():
        shipment_row(personas, status="lost")


# --- temperature contracts --------------------------------------------------------------


def contract_row(shipment: Shipment, **overrides: Any) -> TemperatureContract:
    fields: dict[str, Any] = {
        "shipment": shipment,
        "storage_profile": "2-8C",
        "min_celsius": Decimal("2.00"),
        "max_celsius": Decimal("8.00"),
        "arming_seconds": 600,
        "mkt_limit_celsius": Decimal("8.00"),
        "mkt_window_seconds": 86400,
        "logging_interval_seconds": 300,
        "max_gap_seconds": 600,
    }
    fields.update(overrides)
    return TemperatureContract.objects.create(**fields)


@pytest.mark.django_db
def test_a_2_8_c_contract_is_stored(personas: dict[str, Persona]) -> None:
    contract_row(shipment_row(personas))

    assert TemperatureContract.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(("low", "high"), [("8.00", "8.00"), ("8.00", "2.00")])
def test_a_contract_range_must_have_its_minimum_below_its_maximum(
    personas: dict[str, Persona], low: str, high: str
) -> None:
    with refused_by_the_database():
        contract_row(shipment_row(personas), min_celsius=Decimal(low), max_celsius=Decimal(high))

    assert not TemperatureContract.objects.exists()


@pytest.mark.django_db
def test_a_data_gap_limit_shorter_than_the_logging_interval_is_refused(personas: dict[str, Persona]) -> None:
    with refused_by_the_database():
        contract_row(shipment_row(personas), logging_interval_seconds=300, max_gap_seconds=299)


@pytest.mark.django_db
def test_a_frozen_contract_has_neither_mkt_limit_nor_window(personas: dict[str, Persona]) -> None:
    contract_row(shipment_row(personas), storage_profile="frozen", mkt_limit_celsius=None, mkt_window_seconds=None)

    assert TemperatureContract.objects.get().mkt_limit_celsius is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("limit", "window"),
    [
        (Decimal("8.00"), None),  # a limit with no window cannot be evaluated
        (Decimal("8.00"), 0),
        (None, 86400),  # a window with no limit means nothing
    ],
)
def test_an_mkt_limit_and_its_window_come_together(
    personas: dict[str, Persona], limit: Decimal | None, window: int | None
) -> None:
    with refused_by_the_database():
        contract_row(shipment_row(personas), mkt_limit_celsius=limit, mkt_window_seconds=window)

    assert not TemperatureContract.objects.exists()


# --- custody -------------------------------------------------------------------------------


def custody_row(shipment: Shipment, kind: str, sender: Persona, receiver: Persona) -> CustodyEvent:
    return CustodyEvent.objects.create(
        shipment=shipment,
        kind=kind,
        from_organisation=sender.organisation,
        to_organisation=receiver.organisation,
        occurred_at=timezone.now(),
        recorded_by=sender.user,
    )


@pytest.mark.django_db
def test_a_handover_passes_the_goods_to_another_organisation(personas: dict[str, Persona]) -> None:
    shipment = shipment_row(personas, **in_transit())
    custody_row(shipment, CustodyEvent.Kind.HANDOVER, personas["carrier"], personas["carrier2"])

    with refused_by_the_database():
        custody_row(shipment, CustodyEvent.Kind.HANDOVER, personas["carrier"], personas["carrier"])

    assert shipment.custody_events.count() == 1


@pytest.mark.django_db
def test_a_shipper_dispatching_on_its_own_trucks_hands_nothing_over(personas: dict[str, Persona]) -> None:
    shipment = shipment_row(personas, **in_transit())

    custody_row(shipment, CustodyEvent.Kind.DISPATCH, personas["manufacturer"], personas["manufacturer"])

    assert shipment.custody_events.get().kind == CustodyEvent.Kind.DISPATCH


@pytest.mark.django_db
def test_a_custody_event_kind_outside_dispatch_handover_receipt_is_refused(personas: dict[str, Persona]) -> None:
    shipment = shipment_row(personas, **in_transit())

    with refused_by_the_database():
        custody_row(shipment, "theft", personas["carrier"], personas["carrier2"])
