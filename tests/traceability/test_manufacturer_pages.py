"""The manufacturer's pages, and quarantine and release, as the people using them notice.

``manufacturer`` (Manufacturer) makes a vaccine and ships it by ``carrier``
to ``pharmacy``; ``competitor`` is another manufacturer; ``regulator`` reads
everything. Each persona is an operator of its organisation.
"""

from __future__ import annotations

import datetime
import html
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import png
import pytest
import zxingcpp
from django.contrib.staticfiles import finders
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from ledger import services as ledger
from ledger.models import Entry, EntryReader, PendingEvent
from tests import factories
from tests.conftest import Persona
from tests.scenarios import log_temperatures as log
from tests.scenarios import register_batch as register
from tests.scenarios import ship
from traceability import gs1, qr, selectors, services, trace
from traceability.models import Batch, Membership, Product, SerialNumber, Shipment
from traceability.pages import manufacturer as pages
from traceability.services.batch_status import MAX_REASON_LENGTH, batch_quarantine, batch_release

pytestmark = pytest.mark.django_db
HOUR = 3600
STATUS_EVENTS = {"batch.quarantined", "batch.released"}


# The world -------------------------------------------------------------------------


def signed_in(persona: Persona) -> Client:
    client = Client()
    client.force_login(persona.user)
    return client


def member_of(persona: Persona, role: str, username: str) -> Persona:
    membership = factories.MembershipFactory(organisation=persona.organisation, role=role, user__username=username)
    return Persona(username, membership.user, persona.organisation, persona.site)


def register_product(persona: Persona, name: str = "Morbivax measles vaccine") -> Product:
    return services.product_register(
        actor=persona.user,
        gtin=factories.gtin(),
        name=name,
        dosage_form="suspension for injection",
        strength="0.5 ml",
        storage_profile="2-8C",
        freeze_sensitive=True,
    )


@pytest.fixture
def product(manufacturer: Persona) -> Product:
    return register_product(manufacturer)


@pytest.fixture
def batch(manufacturer: Persona, product: Product) -> Batch:
    batch = register(manufacturer, product)
    ledger.ledger_commit()
    return batch


def text_of(markup: str) -> str:
    """The page as read: tags dropped, entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", markup))).strip()


def section(markup: str, heading_id: str) -> str:
    found = re.search(rf'<section aria-labelledby="{heading_id}".*?</section>', markup, re.S)
    assert found, f"no section {heading_id}"
    return text_of(found.group())


def field_errors(markup: str, field: str) -> str:
    """The errors shown next to a form field (Django renders them just above the input)."""
    found = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', markup, re.S)
    return text_of(found.group(1)) if found else ""


def batch_url(batch: Batch, name: str = "manufacturer-batch") -> str:
    return reverse(name, args=[batch.pk])


# Access -----------------------------------------------------------------------------


def test_anonymous_visitors_are_asked_to_sign_in(batch: Batch) -> None:
    urls = [
        reverse("manufacturer-products"),
        reverse("manufacturer-batches"),
        reverse("manufacturer-batch-new"),
        batch_url(batch),
        batch_url(batch, "manufacturer-batch-labels"),
    ]
    for url in urls:
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"] == f"{reverse('login')}?next={url}"
    for name in ("manufacturer-batch-quarantine", "manufacturer-batch-release"):
        response = Client().post(batch_url(batch, name), {"reason": "Excursion on the way."})
        assert response.status_code == 302
    assert Batch.objects.get().status == Batch.Status.ACTIVE


def test_the_pages_are_for_manufacturers_and_the_batch_page_for_the_regulator_too(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona, regulator: Persona
) -> None:
    ship(batch, manufacturer, carrier, pharmacy)  # carrier and pharmacy see the batch in the API, not here
    lists = [reverse("manufacturer-products"), reverse("manufacturer-batches"), reverse("manufacturer-batch-new")]
    for url in lists:
        assert signed_in(manufacturer).get(url).status_code == 200
        for persona in (carrier, pharmacy, regulator):
            assert signed_in(persona).get(url).status_code == 404, (persona.name, url)
    assert signed_in(carrier).get(batch_url(batch)).status_code == 404
    assert signed_in(pharmacy).get(batch_url(batch)).status_code == 404
    assert signed_in(regulator).get(batch_url(batch)).status_code == 200
    # Labels are the manufacturer's to print.
    assert signed_in(manufacturer).get(batch_url(batch, "manufacturer-batch-labels")).status_code == 200
    assert signed_in(regulator).get(batch_url(batch, "manufacturer-batch-labels")).status_code == 404


def test_another_manufacturers_batch_does_not_exist_for_the_competitor(batch: Batch, competitor: Persona) -> None:
    client = signed_in(competitor)
    for name in ("manufacturer-batch", "manufacturer-batch-labels"):
        assert client.get(batch_url(batch, name)).status_code == 404
    for name in ("manufacturer-batch-quarantine", "manufacturer-batch-release"):
        assert client.post(batch_url(batch, name), {"reason": "Sabotage."}).status_code == 404
    assert "MV2405" not in text_of(client.get(reverse("manufacturer-batches")).content.decode())
    assert "Morbivax" not in text_of(client.get(reverse("manufacturer-products")).content.decode())
    assert Batch.objects.get().status == Batch.Status.ACTIVE


def test_a_user_of_no_organisation_finds_nothing(batch: Batch) -> None:
    client = Client()
    client.force_login(factories.UserFactory(username="loner"))
    for url in (reverse("manufacturer-products"), reverse("manufacturer-batches"), batch_url(batch)):
        assert client.get(url).status_code == 404


def test_a_viewer_reads_everything_but_changes_nothing(batch: Batch, manufacturer: Persona, product: Product) -> None:
    viewer = signed_in(member_of(manufacturer, Membership.Role.VIEWER, "qa-viewer"))
    for url in (reverse("manufacturer-products"), reverse("manufacturer-batches"), batch_url(batch)):
        response = viewer.get(url)
        assert response.status_code == 200
        assert "Register a batch" not in response.content.decode()
    page = viewer.get(batch_url(batch)).content.decode()
    assert "<textarea" not in page
    assert "Your role is read-only" in page

    assert viewer.get(reverse("manufacturer-batch-new")).status_code == 403
    response = viewer.post(reverse("manufacturer-batch-new"), registration(product, lot="VIEW1"))
    assert response.status_code == 403
    assert viewer.post(batch_url(batch, "manufacturer-batch-quarantine"), {"reason": "Excursion."}).status_code == 403
    assert Batch.objects.get().status == Batch.Status.ACTIVE
    assert Batch.objects.count() == 1


def test_the_regulator_reads_the_batch_page_but_cannot_quarantine(batch: Batch, regulator: Persona) -> None:
    client = signed_in(regulator)
    page = client.get(batch_url(batch)).content.decode()
    assert "<textarea" not in page
    assert "The manufacturer quarantines and releases its batches." in page
    assert client.post(batch_url(batch, "manufacturer-batch-quarantine"), {"reason": "Audit."}).status_code == 403
    assert Batch.objects.get().status == Batch.Status.ACTIVE


def test_the_navigation_links_a_manufacturers_pages(manufacturer: Persona, carrier: Persona) -> None:
    page = signed_in(manufacturer).get(reverse("home")).content.decode()
    for name in ("manufacturer-products", "manufacturer-batches", "manufacturer-batch-new"):
        assert f'href="{reverse(name)}"' in page
    assert reverse("manufacturer-batches") not in signed_in(carrier).get(reverse("home")).content.decode()


# The lists ---------------------------------------------------------------------------


def test_the_products_page_lists_the_organisations_products_with_their_batches(
    manufacturer: Persona, competitor: Persona, product: Product
) -> None:
    register(manufacturer, product, lot="A1")
    register(manufacturer, product, lot="A2")
    register_product(manufacturer, "Arthrimab")
    register_product(competitor, "Glucora insulin")

    body = text_of(signed_in(manufacturer).get(reverse("manufacturer-products")).content.decode())

    row = f"{product.gtin} Morbivax measles vaccine suspension for injection 0.5 ml 2-8C do not freeze 2 batches"
    assert row in body
    assert "Arthrimab" in body
    assert "0 batches" in body
    assert "Glucora" not in body


def test_the_batches_page_lists_newest_first_and_filters_by_product_and_status(
    manufacturer: Persona, product: Product
) -> None:
    other = register_product(manufacturer, "Arthrimab")
    for lot in ("OLD1", "MID1"):
        register(manufacturer, product, lot=lot)
    newest = register(manufacturer, other, lot="NEW1")
    batch_quarantine(actor=manufacturer.user, batch=newest, reason="Freezer failure at the plant.")
    client = signed_in(manufacturer)

    def lots(**query: Any) -> list[str]:
        response = client.get(reverse("manufacturer-batches"), query)
        assert response.status_code == 200
        return re.findall(r'<a href="/manufacturer/batches/\d+/">([^<]+)</a>', response.content.decode())

    assert lots() == ["NEW1", "MID1", "OLD1"]
    assert lots(product=product.pk) == ["MID1", "OLD1"]
    assert lots(status="quarantined") == ["NEW1"]
    assert lots(product=product.pk, status="quarantined") == []


def test_a_filter_naming_something_unknown_is_a_400_that_says_so(
    manufacturer: Persona, competitor: Persona, batch: Batch
) -> None:
    theirs = register_product(competitor, "Glucora insulin")
    client = signed_in(manufacturer)
    for query, field in (({"status": "lost"}, "status"), ({"product": theirs.pk}, "product")):
        response = client.get(reverse("manufacturer-batches"), query)
        assert response.status_code == 400
        assert "Select a valid choice" in field_errors(response.content.decode(), field)
        assert "MV2405" not in response.content.decode()


def test_the_batches_page_is_paginated(manufacturer: Persona, product: Product) -> None:
    for number in range(pages.PAGE_SIZE + 1):
        factories.BatchFactory(product=product, lot=f"P{number:03d}")
    client = signed_in(manufacturer)
    first = client.get(reverse("manufacturer-batches")).content.decode()
    second = client.get(reverse("manufacturer-batches"), {"page": 2}).content.decode()
    assert len(re.findall(r'<a href="/manufacturer/batches/\d+/">', first)) == pages.PAGE_SIZE
    assert len(re.findall(r'<a href="/manufacturer/batches/\d+/">', second)) == 1
    assert "Page 1 of 2" in text_of(first)
    assert 'href="?page=2"' in first


@pytest.mark.parametrize("url_name", ["manufacturer-products", "manufacturer-batches"])
def test_the_lists_take_the_same_number_of_queries_for_many_rows(
    manufacturer: Persona, product: Product, url_name: str
) -> None:
    def queries() -> int:
        client = signed_in(manufacturer)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse(url_name)).status_code == 200
        return len(captured)

    register(manufacturer, product, lot="Q1")
    few = queries()
    for number in range(2, 8):
        register(manufacturer, register_product(manufacturer, f"Vaccine {number}"), lot=f"Q{number}", serials=2)
    assert queries() == few


# Registering a batch -------------------------------------------------------------------


def registration(of: Product, **changes: Any) -> dict[str, Any]:
    today = timezone.localdate()
    return {
        "product": of.pk,
        "lot": "MV2406",
        "manufactured_on": (today - datetime.timedelta(days=2)).isoformat(),
        "expires_on": (today + datetime.timedelta(days=700)).isoformat(),
        "quantity": 500,
        "serial_count": 20,
    } | changes


def test_a_registered_batch_opens_on_its_page_with_its_serials_and_ledger_entry(
    manufacturer: Persona, product: Product
) -> None:
    client = signed_in(manufacturer)
    form = client.get(reverse("manufacturer-batch-new"), {"product": product.pk}).content.decode()
    assert f'<option value="{product.pk}" selected>' in form

    response = client.post(reverse("manufacturer-batch-new"), registration(product))

    batch = Batch.objects.get()
    assert response.status_code == 302
    assert response["Location"] == batch_url(batch)
    assert (batch.lot, batch.quantity, batch.serials.count()) == ("MV2406", 500, 20)
    assert PendingEvent.objects.filter(type="batch.registered", subject=f"batch:{product.gtin}:MV2406").exists()
    page = client.get(response["Location"]).content.decode()
    assert "Batch MV2406 registered." in page
    assert "Batch MV2406" in text_of(page)


def _days(days: int) -> str:
    return (timezone.localdate() + datetime.timedelta(days=days)).isoformat()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"lot": ""}, "lot", "This field is required."),
        ({"lot": "MV 2406"}, "lot", "which GS1 does not allow (character set 82)"),
        ({"lot": "L" * 21}, "lot", "21 characters long; the maximum is 20"),
        ({"lot": "MV2405"}, "lot", "lot MV2405 is already registered"),
        ({"manufactured_on": _days(1)}, "manufactured_on", "lies in the future."),
        ({"manufactured_on": "31.12.2025x"}, "manufactured_on", "Enter a valid date."),
        ({"expires_on": _days(-3)}, "expires_on", "must be after the manufacturing date."),
        ({"manufactured_on": _days(-800), "expires_on": _days(-1)}, "expires_on", "has passed"),
        ({"quantity": 0}, "quantity", "must be at least 1."),
        ({"quantity": "many"}, "quantity", "Enter a whole number."),
        ({"serial_count": 501}, "serial_count", "must be between 0 and the quantity"),
        ({"serial_count": -1}, "serial_count", "must be between 0 and the quantity"),
        ({"product": ""}, "product", "This field is required."),
    ],
)
def test_a_wrong_registration_is_a_400_naming_the_field_and_saves_nothing(
    manufacturer: Persona, product: Product, batch: Batch, changes: dict[str, Any], field: str, message: str
) -> None:
    pending = PendingEvent.objects.count()

    response = signed_in(manufacturer).post(reverse("manufacturer-batch-new"), registration(product, **changes))

    assert response.status_code == 400
    page = response.content.decode()
    assert message in field_errors(page, field)
    assert "The batch was not registered." in page
    assert Batch.objects.count() == 1
    assert SerialNumber.objects.count() == 3
    assert PendingEvent.objects.count() == pending


def test_a_competitors_product_cannot_be_chosen(manufacturer: Persona, competitor: Persona) -> None:
    theirs = register_product(competitor, "Glucora insulin")
    response = signed_in(manufacturer).post(reverse("manufacturer-batch-new"), registration(theirs))
    assert response.status_code == 400
    assert "Select a valid choice" in field_errors(response.content.decode(), "product")
    assert "Glucora" not in response.content.decode()
    assert not Batch.objects.exists()


# Quarantine and release: the service -----------------------------------------------------


def entries_of(batch: Batch, event_type: str) -> list[Entry]:
    ledger.ledger_commit()
    return list(Entry.objects.filter(type=event_type, subject=f"batch:{batch.product.gtin}:{batch.lot}"))


def test_quarantine_holds_the_batch_back_with_its_reason_in_the_ledger(manufacturer: Persona, batch: Batch) -> None:
    quarantined = batch_quarantine(actor=manufacturer.user, batch=batch, reason="  Excursion on SHP-1: 12.4 °C.  ")

    assert quarantined.status == Batch.Status.QUARANTINED
    batch.refresh_from_db()
    assert batch.status == Batch.Status.QUARANTINED
    [entry] = entries_of(batch, "batch.quarantined")
    data = json.loads(bytes(entry.leaf))["data"]
    assert data == {
        "gtin": batch.product.gtin,
        "lot": "MV2405",
        "status": "quarantined",
        "previous_status": "active",
        "reason": "Excursion on SHP-1: 12.4 °C.",
        "by": "manufacturer",
    }
    # Like the batch's registration, the manufacturer reads it; the free-text reason is not public.
    assert list(EntryReader.objects.filter(entry=entry).values_list("party", flat=True)) == [
        selectors.ledger_party(manufacturer.organisation.pk)
    ]
    assert entry.public is False


def test_release_makes_a_quarantined_batch_active_again_in_the_ledger(manufacturer: Persona, batch: Batch) -> None:
    batch_quarantine(actor=manufacturer.user, batch=batch, reason="Excursion on the way to Berlin.")

    released = batch_release(actor=manufacturer.user, batch=batch, reason="Stability data cover the excursion.")

    assert released.status == Batch.Status.ACTIVE
    [entry] = entries_of(batch, "batch.released")
    data = json.loads(bytes(entry.leaf))["data"]
    assert (data["status"], data["previous_status"], data["reason"]) == (
        "active",
        "quarantined",
        "Stability data cover the excursion.",
    )


def test_a_quarantined_batch_cannot_be_shipped_until_released(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    batch_quarantine(actor=manufacturer.user, batch=batch, reason="Excursion.")
    with pytest.raises(ValidationError, match="quarantined and may not be shipped"):
        ship(batch, manufacturer, carrier, pharmacy, outcome="planned")
    batch_release(actor=manufacturer.user, batch=batch, reason="Investigation closed.")
    assert ship(batch, manufacturer, carrier, pharmacy, outcome="planned").status == Shipment.Status.PLANNED


@pytest.mark.parametrize("reason", ["", "   \n "])
def test_a_change_without_a_reason_is_refused(manufacturer: Persona, batch: Batch, reason: str) -> None:
    with pytest.raises(ValidationError) as refused:
        batch_quarantine(actor=manufacturer.user, batch=batch, reason=reason)
    assert "say why the batch is quarantined" in refused.value.message_dict["reason"][0]
    batch.refresh_from_db()
    assert batch.status == Batch.Status.ACTIVE
    assert not PendingEvent.objects.filter(type="batch.quarantined").exists()


def test_a_reason_longer_than_the_limit_is_refused(manufacturer: Persona, batch: Batch) -> None:
    with pytest.raises(ValidationError) as refused:
        batch_quarantine(actor=manufacturer.user, batch=batch, reason="x" * (MAX_REASON_LENGTH + 1))
    assert f"keep it to {MAX_REASON_LENGTH}" in refused.value.message_dict["reason"][0]


@pytest.mark.parametrize(
    ("status", "change", "message"),
    [
        ("quarantined", batch_quarantine, "the batch is already quarantined."),
        ("active", batch_release, "the batch is already active."),
        ("recalled", batch_release, "the batch is recalled; only a batch that is quarantined can be released."),
        ("destroyed", batch_release, "the batch is destroyed; only a batch that is quarantined can be released."),
        ("expired", batch_release, "the batch is expired; only a batch that is quarantined can be released."),
        ("recalled", batch_quarantine, "the batch is recalled; only a batch that is active can be quarantined."),
        ("destroyed", batch_quarantine, "the batch is destroyed; only a batch that is active can be quarantined."),
    ],
)
def test_only_active_to_quarantined_and_back_are_allowed(
    manufacturer: Persona, batch: Batch, status: str, change: Callable[..., Batch], message: str
) -> None:
    Batch.objects.filter(pk=batch.pk).update(status=status)  # recalls and destruction have no service yet
    with pytest.raises(ValidationError) as refused:
        change(actor=manufacturer.user, batch=batch, reason="Because.")
    assert refused.value.message_dict["status"] == [message]
    batch.refresh_from_db()
    assert batch.status == status
    assert not PendingEvent.objects.filter(type__in=STATUS_EVENTS).exists()


def test_a_quarantined_batch_past_its_expiry_is_not_released(manufacturer: Persona, batch: Batch) -> None:
    batch_quarantine(actor=manufacturer.user, batch=batch, reason="Excursion.")
    Batch.objects.filter(pk=batch.pk).update(
        manufactured_on=timezone.localdate() - datetime.timedelta(days=400),
        expires_on=timezone.localdate() - datetime.timedelta(days=1),
    )
    with pytest.raises(ValidationError, match="an expired batch cannot be released"):
        batch_release(actor=manufacturer.user, batch=batch, reason="Investigation closed.")


def test_only_the_manufacturers_administrators_and_operators_change_the_status(
    manufacturer: Persona, competitor: Persona, carrier: Persona, regulator: Persona, batch: Batch
) -> None:
    viewer = member_of(manufacturer, Membership.Role.VIEWER, "qa-viewer")
    admin = member_of(manufacturer, Membership.Role.ADMIN, "qa-admin")
    for persona, message in (
        (viewer, "read-only"),
        (competitor, "Only the batch's manufacturer"),
        (carrier, "Only a manufacturer"),
        (regulator, "Only a manufacturer"),
    ):
        with pytest.raises(PermissionDenied, match=message):
            batch_quarantine(actor=persona.user, batch=batch, reason="Excursion.")
    batch.refresh_from_db()
    assert batch.status == Batch.Status.ACTIVE
    assert batch_quarantine(actor=admin.user, batch=batch, reason="Excursion.").status == Batch.Status.QUARANTINED


def test_the_change_locks_the_batch_row(manufacturer: Persona, batch: Batch) -> None:
    if not connection.features.has_select_for_update:
        pytest.skip(f"{connection.vendor} has no row locks; its transactions are serialised")
    with CaptureQueriesContext(connection) as captured:
        batch_quarantine(actor=manufacturer.user, batch=batch, reason="Excursion.")
    assert any("FOR UPDATE" in query["sql"] and "traceability_batch" in query["sql"] for query in captured)


# Quarantine and release: the page -----------------------------------------------------------


def test_quarantine_from_the_batch_page_and_release_again(manufacturer: Persona, batch: Batch) -> None:
    client = signed_in(manufacturer)
    page = client.get(batch_url(batch)).content.decode()
    assert f'action="{batch_url(batch, "manufacturer-batch-quarantine")}"' in page

    response = client.post(batch_url(batch, "manufacturer-batch-quarantine"), {"reason": "Excursion on SHP-1."})

    assert response.status_code == 302
    assert response["Location"] == batch_url(batch)
    batch.refresh_from_db()
    assert batch.status == Batch.Status.QUARANTINED
    ledger.ledger_commit()
    page = client.get(batch_url(batch)).content.decode()
    assert "Batch MV2405 quarantined." in page
    assert f'action="{batch_url(batch, "manufacturer-batch-release")}"' in page
    history = section(page, "status-heading")
    assert "batch.quarantined Quarantined manufacturer Excursion on SHP-1." in history

    response = client.post(batch_url(batch, "manufacturer-batch-release"), {"reason": "Within stability budget."})
    assert response.status_code == 302
    batch.refresh_from_db()
    assert batch.status == Batch.Status.ACTIVE


def test_a_quarantine_without_a_reason_is_a_400_with_the_error_at_the_field(
    manufacturer: Persona, batch: Batch
) -> None:
    response = signed_in(manufacturer).post(batch_url(batch, "manufacturer-batch-quarantine"), {"reason": " "})
    assert response.status_code == 400
    assert "say why the batch is quarantined" in field_errors(response.content.decode(), "reason")
    batch.refresh_from_db()
    assert batch.status == Batch.Status.ACTIVE


def test_releasing_an_active_batch_is_a_400_saying_why(manufacturer: Persona, batch: Batch) -> None:
    response = signed_in(manufacturer).post(batch_url(batch, "manufacturer-batch-release"), {"reason": "Fine."})
    assert response.status_code == 400
    assert "the batch is already active." in section(response.content.decode(), "status-heading")
    assert not PendingEvent.objects.filter(type__in=STATUS_EVENTS).exists()


def test_a_recalled_batch_offers_no_release(manufacturer: Persona, batch: Batch) -> None:
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.RECALLED)
    page = signed_in(manufacturer).get(batch_url(batch)).content.decode()
    assert "<textarea" not in page
    assert "This batch is Recalled; it can no longer be quarantined or released." in page


# The batch page ------------------------------------------------------------------------


def test_the_batch_page_shows_its_facts_and_qr_code_which_the_browser_can_load(
    manufacturer: Persona, regulator: Persona, batch: Batch, settings: Any
) -> None:
    client = signed_in(manufacturer)
    page = client.get(batch_url(batch)).content.decode()
    facts = section(page, "facts-heading")
    expiry = batch.expires_on.isoformat()
    assert f"GTIN {batch.product.gtin} Lot MV2405" in facts
    assert f"Expires on {expiry} Quantity 1000 Serial numbers 3" in facts
    assert f"Digital Link {batch.digital_link()}" in facts
    assert batch.digital_link().startswith(settings.BASE_URL)
    qr_url = reverse("api-batch-qr", args=[batch.pk, "svg"])
    assert f'<img class="qr" src="{qr_url}"' in page
    # The image is fetched with the page's session cookie, not a token.
    for persona in (manufacturer, regulator):
        response = signed_in(persona).get(qr_url)
        assert response.status_code == 200
        assert response["Content-Type"] == "image/svg+xml"


def test_the_batch_page_gives_every_shipments_cold_chain_verdict_and_the_alerts(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    cold = ship(batch, manufacturer, carrier, pharmacy, hours=20)
    log(cold, lambda hours: 5.0)
    warm = ship(batch, manufacturer, carrier, pharmacy, hours=12)
    log(warm, lambda hours: 12.4 if 4 <= hours < 7 else 5.0)  # a reefer failure from hour 4 to hour 7
    planned = ship(batch, manufacturer, carrier, pharmacy, outcome="planned")

    page = signed_in(manufacturer).get(batch_url(batch)).content.decode()

    shipments = section(page, "shipments-heading")
    assert f"{cold.reference} 10 Manufacturer, Manufacturer site" in shipments
    assert "Delivered Kept in range Kept between 2 and 8 °C, 20 h." in shipments
    assert "Excursion Too warm: 8 °C or more for 3 h, up to 12.4 °C." in shipments
    assert f"{planned.reference} 10" in shipments
    assert "Planned Not dispatched yet" in shipments
    alerts = section(page, "alerts-heading")
    for alert in warm.alerts.all():
        assert f"{warm.reference} {alert.get_severity_display()} Open {alert.message}" in alerts
    assert warm.alerts.exists()
    assert cold.reference not in alerts


def test_the_batch_page_links_each_shipment_to_its_page_which_the_maker_and_a_regulator_may_open(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, regulator: Persona, batch: Batch
) -> None:
    delivered = ship(batch, manufacturer, carrier, pharmacy)
    moving = ship(batch, manufacturer, carrier, pharmacy, outcome="in_transit")
    links = {
        shipment: f'<a href="/logistics/shipments/{shipment.pk}/">{shipment.reference}</a>'
        for shipment in (delivered, moving)
    }
    for persona in (manufacturer, regulator):
        client = signed_in(persona)
        page = client.get(batch_url(batch)).content.decode()
        carried = re.search(r'<section aria-labelledby="shipments-heading".*?</section>', page, re.S)
        where = re.search(r'<section aria-labelledby="where-heading".*?</section>', page, re.S)
        assert carried is not None
        assert where is not None
        assert all(link in carried.group() for link in links.values())
        assert links[moving] in where.group()  # on the move
        for shipment in links:
            assert client.get(f"/logistics/shipments/{shipment.pk}/").status_code == 200


def test_a_flash_message_is_shown_once_in_the_layout_above_the_page(manufacturer: Persona, batch: Batch) -> None:
    client = signed_in(manufacturer)
    client.post(batch_url(batch, "manufacturer-batch-quarantine"), {"reason": "Excursion under review."})
    page = client.get(batch_url(batch)).content.decode()
    main = re.search(r"<main>(.*)</main>", page, re.S)
    assert main is not None
    assert main.group(1).count('role="status"') == 1
    assert main.group(1).index("Batch MV2405 quarantined.") < main.group(1).index("<h1>")
    assert 'role="status"' not in client.get(batch_url(batch)).content.decode()  # shown once, then gone


def test_the_batch_page_takes_the_same_number_of_queries_for_many_shipments(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    def queries() -> int:
        client = signed_in(manufacturer)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(batch_url(batch)).status_code == 200
        return len(captured)

    log(ship(batch, manufacturer, carrier, pharmacy, hours=5), lambda hours: 12.0)
    few = queries()
    for outcome in ("delivered", "in_transit", "rejected", "planned"):
        log_it = outcome != "planned"
        shipment = ship(batch, manufacturer, carrier, pharmacy, hours=6, outcome=outcome)
        if log_it:
            log(shipment, lambda hours: 12.0 if hours > 2 else 5.0)
    batch_quarantine(actor=manufacturer.user, batch=batch, reason="Excursions.")
    ledger.ledger_commit()
    assert queries() == few


# Where the units are ---------------------------------------------------------------------


def test_units_are_where_deliveries_brought_them_less_what_left_and_refused_loads_stay_with_the_carrier(
    manufacturer: Persona, carrier: Persona, carrier2: Persona, pharmacy: Persona, batch: Batch
) -> None:
    munich = factories.SiteFactory(organisation=pharmacy.organisation, name="Munich branch")
    ship(batch, manufacturer, carrier, pharmacy, quantity=100)  # to the pharmacy's first site
    # The pharmacy sends 30 on from another of its sites than the one they arrived at.
    onward = ship(batch, pharmacy, carrier, carrier2, quantity=30, origin=munich)
    moving = ship(batch, manufacturer, carrier, pharmacy, quantity=50, outcome="in_transit")
    refused = ship(batch, manufacturer, carrier, pharmacy, quantity=20, outcome="rejected")
    ship(batch, manufacturer, carrier, pharmacy, quantity=10, outcome="planned")

    found = trace.batch_whereabouts(batch, pages._carrying(batch))

    stock = {entry.organisation.name: (entry.sites, entry.on_hand, entry.free) for entry in found.stock}
    assert stock == {
        # 1000 made; 100, 50 and 20 left; the refused 20 and not the planned 10 are free again.
        "Manufacturer": (((None, 830),), 830, 840),
        "Pharmacy": (((pharmacy.site, 70),), 70, 70),
        "Carrier2": (((carrier2.site, 30),), 30, 30),
    }
    assert [(item.shipment, item.quantity) for item in found.moving] == [(moving, 50), (refused, 20)]
    assert onward.status == Shipment.Status.DELIVERED
    # What each may still ship is exactly what the shipment service allows.
    for entry in found.stock:
        assert entry.free == selectors.batch_available(organisation=entry.organisation, batch=batch)
    assert sum(entry.on_hand for entry in found.stock) + 50 + 20 == batch.quantity

    page = signed_in(manufacturer).get(batch_url(batch)).content.decode()
    where = section(page, "where-heading")
    assert "Manufacturer where it was made (no site recorded): 830 830 840" in where
    assert "Pharmacy Pharmacy site: 70 70 70" in where
    assert f"{refused.reference} 20 Carrier" in where
    assert "delivery refused; counted back to Manufacturer's stock" in where
    assert f"{moving.reference} 50 Carrier" in where


def test_a_batch_never_shipped_is_all_at_its_maker(manufacturer: Persona, batch: Batch) -> None:
    found = trace.batch_whereabouts(batch, [])
    assert [(entry.organisation, entry.on_hand, entry.free) for entry in found.stock] == [
        (manufacturer.organisation, 1000, 1000)
    ]
    assert found.moving == ()


# Labels ----------------------------------------------------------------------------------


def labels_of(markup: str) -> list[str]:
    return re.findall(r'<li class="label">(.*?)</li>', markup, re.S)


def svg_modules(svg: str) -> bytes:
    """The embedded SVG drawn as a PNG (10 px a module): its path is one "Mx,yH..V..H..z" square per dark module."""
    root = ET.fromstring(svg)  # noqa: S314  (the page under test)
    size = int(root.get("viewBox", "").split()[2])
    dark = {(int(x), int(y)) for x, y in re.findall(r"M(\d+),(\d+)H", "".join(p.get("d", "") for p in root.iter()))}
    rows = [
        [0 if (column // 10, row // 10) in dark else 255 for column in range(size * 10)] for row in range(size * 10)
    ]
    buffer = io.BytesIO()
    png.Writer(size * 10, size * 10, greyscale=True).write(buffer, rows)
    return buffer.getvalue()


def decoded(image: bytes) -> list[Any]:
    width, height, rows, info = png.Reader(bytes=image).asDirect()
    top = (1 << info["bitdepth"]) - 1
    data = bytes(value * 255 // top for row in rows for value in row)
    return list(zxingcpp.read_barcodes(memoryview(data).cast("B", shape=[height, width])))


@pytest.fixture
def labelled(manufacturer: Persona, settings: Any) -> Batch:
    settings.BASE_URL = "https://id.example-pharma.com"
    product = services.product_register(
        actor=manufacturer.user,
        gtin="09506000134352",
        name="Morbivax measles vaccine",
        dosage_form="suspension for injection",
        strength="0.5 ml",
        storage_profile="2-8C",
    )
    today = timezone.localdate()
    return services.batch_register(
        actor=manufacturer.user,
        product=product,
        lot="ABC123",
        manufactured_on=today - datetime.timedelta(days=10),
        expires_on=datetime.date(today.year + 2, 12, 31),
        quantity=100,
        serial_count=5,
    )


def test_the_label_sheet_has_the_batch_label_and_one_per_serial_with_the_text_under_each_code(
    manufacturer: Persona, labelled: Batch
) -> None:
    response = signed_in(manufacturer).get(batch_url(labelled, "manufacturer-batch-labels"))

    assert response.status_code == 200
    page = response.content.decode()
    labels = labels_of(page)
    serials = sorted(labelled.serials.values_list("serial", flat=True))
    assert len(labels) == 1 + len(serials) == 6
    yy = f"{labelled.expires_on.year % 100:02d}"
    batch_text = f"(01) 09506000134352 (17) {yy}1231 (10) ABC123"
    assert text_of(labels[0]) == f"{batch_text} Morbivax measles vaccine 0.5 ml"
    for label, serial in zip(labels[1:], serials, strict=True):
        assert text_of(label) == f"{batch_text} (21) {serial} Morbivax measles vaccine 0.5 ml"
        # The code comes first, its human-readable interpretation right under it.
        assert label.strip().startswith("<svg")
        assert label.index("</svg>") < label.index('<p class="hri">')
    assert "<?xml" not in page
    assert page.count("<svg") == 6
    assert 'id="qr-path"' not in page
    assert "Print" in text_of(page)
    assert f'aria-label="QR code: {labelled.digital_link(serial=serials[0])}"' in page


def test_each_label_code_decodes_to_its_digital_link(manufacturer: Persona, labelled: Batch) -> None:
    page = signed_in(manufacturer).get(batch_url(labelled, "manufacturer-batch-labels")).content.decode()
    labels = labels_of(page)
    serial = sorted(labelled.serials.values_list("serial", flat=True))[0]
    link = labelled.digital_link(serial=serial)
    assert (
        link
        == f"https://id.example-pharma.com/01/09506000134352/10/ABC123/21/{serial}?17={gs1.format_expiry(labelled.expires_on)}"
    )

    # The code of that link, as the API draws it, reads back with error correction M ...
    [code] = decoded(qr.render(link, "png")[0])
    assert (code.text, code.format, code.ec_level) == (link, zxingcpp.BarcodeFormat.QRCode, "M")
    # ... and the code embedded in the serial's label, drawn as it is on the page, reads the same.
    svg = re.search(r"<svg.*?</svg>", labels[1], re.S).group()  # type: ignore[union-attr]
    [embedded] = decoded(svg_modules(svg))
    assert (embedded.text, embedded.ec_level) == (link, "M")
    # A quiet zone of four modules all round: no dark module in the outer four rows and columns.
    size = int(ET.fromstring(svg).get("viewBox", "").split()[2])  # noqa: S314
    corners = re.findall(r"M(\d+),(\d+)H", svg)
    assert min(int(x) for x, _ in corners) == 4
    assert max(int(y) for _, y in corners) == size - 5
    [batch_code] = decoded(svg_modules(re.search(r"<svg.*?</svg>", labels[0], re.S).group()))  # type: ignore[union-attr]
    assert batch_code.text == labelled.digital_link()


def test_thousands_of_serials_are_printed_a_few_sheets_per_page(
    manufacturer: Persona, labelled: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "SHEETS_PER_PAGE", 1)  # 24 labels a page, so the test draws few codes
    more = services.batch_register(
        actor=manufacturer.user,
        product=labelled.product,
        lot="MANY1",
        manufactured_on=labelled.manufactured_on,
        expires_on=labelled.expires_on,
        quantity=100,
        serial_count=30,
    )
    client = signed_in(manufacturer)
    url = batch_url(more, "manufacturer-batch-labels")
    first = client.get(url).content.decode()
    second = client.get(url, {"page": 2}).content.decode()

    assert len(labels_of(first)) == 24
    assert len(labels_of(second)) == 7
    assert "(21)" not in text_of(labels_of(first)[0])  # the batch label leads the first page only
    printed = [re.search(r"\(21\) (\S+)", text_of(label)) for label in labels_of(first) + labels_of(second)]
    assert sorted(found.group(1) for found in printed if found) == sorted(more.serials.values_list("serial", flat=True))
    assert first.count('<ol class="sheet"') == second.count('<ol class="sheet"') == 1
    assert "Page 1 of 2" in text_of(first)


def test_the_label_sheet_takes_the_same_number_of_queries_for_more_serials(
    manufacturer: Persona, labelled: Batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "SHEETS_PER_PAGE", 1)

    def queries(batch: Batch) -> int:
        client = signed_in(manufacturer)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(batch_url(batch, "manufacturer-batch-labels")).status_code == 200
        return len(captured)

    more = register(manufacturer, labelled.product, lot="MORE1", serials=60, quantity=100)
    assert queries(more) == queries(labelled)


def test_the_label_stylesheet_prints_a4_sheets_without_the_page_around_them() -> None:
    path = finders.find("traceability/manufacturer.css")
    assert path is not None
    css = Path(path).read_text()
    assert "@page { size: A4;" in css
    assert "@media print" in css
    assert re.search(r"@media print \{.*\.top, \.screen-only \{ display: none; \}", css, re.S)
