"""The manufacturer's pages in a real browser: register a batch, quarantine it, print its labels.

Every page visited is checked under the strict Content-Security-Policy (no
console errors, no policy violations) and for the accessibility basics of
``tests/browser_checks.py``; screenshots are left in the test's temporary directory.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests import factories
from tests.browser_checks import RECORD_CSP_VIOLATIONS, assert_clean
from tests.conftest import Persona
from traceability import coldchain, services
from traceability.models import Batch, Product, Shipment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PASSWORD = "correct horse battery staple"  # the factories' password


@pytest.fixture
def product(live_server: Any, manufacturer: Persona) -> Product:
    return services.product_register(
        actor=manufacturer.user,
        gtin=factories.gtin(),
        name="Morbivax measles vaccine",
        dosage_form="suspension for injection",
        strength="0.5 ml",
        storage_profile="2-8C",
    )


def sign_in_at(page: Any, url: str, username: str) -> None:
    """Opens ``url``, which asks for signing in first, and signs in."""
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.goto(url)
    assert "/accounts/login/" in page.url
    assert_clean(page)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    assert page.url == url


def answered_400(page: Any) -> None:
    """Chromium reports a page served with status 400 as a console error: that one, and only it, is expected."""
    assert page.console_errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    page.console_errors.clear()


def test_a_manufacturer_registers_a_batch_quarantines_it_and_prints_its_labels(
    page: Any, live_server: Any, manufacturer: Persona, product: Product, tmp_path: Path
) -> None:
    base = live_server.url
    sign_in_at(page, f"{base}/manufacturer/batches/new", "manufacturer")
    assert_clean(page)
    today = timezone.localdate()

    # A lot with a space: the service's reason appears at the field, and nothing is registered.
    page.get_by_label("Product").select_option(label=f"Morbivax measles vaccine 0.5 ml ({product.gtin})")
    page.get_by_label("Lot").fill("MV 2406")
    page.get_by_label("Manufactured on").fill(today.replace(day=1).isoformat())
    page.get_by_label("Expires on").fill(today.replace(year=today.year + 2).isoformat())
    page.get_by_label("Quantity (units)").fill("500")
    page.get_by_label("Serial numbers to generate").fill("4")
    page.get_by_role("button", name="Register").click()
    assert "character set 82" in page.locator("#id_lot_error").inner_text()
    assert page.get_by_label("Quantity (units)").input_value() == "500"  # what was typed stays
    answered_400(page)
    assert_clean(page)
    page.screenshot(path=tmp_path / "register-error.png", full_page=True)
    assert not Batch.objects.exists()

    page.get_by_label("Lot").fill("MV2406")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Batch MV2406")
    page.wait_for_load_state("load")
    batch = Batch.objects.get()
    assert page.url == f"{base}/manufacturer/batches/{batch.pk}/"
    assert page.get_by_role("heading", level=1).inner_text().startswith("Batch MV2406")
    assert page.get_by_role("status").inner_text() == "Batch MV2406 registered."
    qr = page.get_by_role("img", name=re.compile("QR code of the batch's Digital Link"))
    assert qr.evaluate("image => image.complete && image.naturalWidth") > 0  # the API answers the page's session
    assert_clean(page)
    page.screenshot(path=tmp_path / "batch.png", full_page=True)

    page.get_by_label("Reason").fill("Excursion to 12 °C on the way to Berlin; under investigation.")
    page.get_by_role("button", name="Quarantine this batch").click()
    assert page.get_by_role("status").inner_text() == "Batch MV2406 quarantined."
    facts = page.get_by_role("region", name="Facts")
    assert "Quarantined" in facts.inner_text()
    assert page.get_by_role("button", name="Release this batch").is_visible()
    batch.refresh_from_db()
    assert batch.status == Batch.Status.QUARANTINED
    assert_clean(page)
    page.screenshot(path=tmp_path / "quarantined.png", full_page=True)

    page.get_by_role("link", name="Print labels").click()
    assert page.url == f"{base}/manufacturer/batches/{batch.pk}/labels"
    labels = page.locator("li.label")
    assert labels.count() == 1 + 4
    assert labels.first.locator("svg.qr").is_visible()
    assert labels.first.locator(".hri").inner_text().startswith(f"(01) {product.gtin} (17) ")
    assert "(21) " in labels.nth(1).locator(".hri").inner_text()
    assert_clean(page)
    page.screenshot(path=tmp_path / "labels.png", full_page=True)

    page.emulate_media(media="print")
    assert not page.locator("header.top").is_visible()
    assert not page.get_by_text("To print, use your browser's Print command").is_visible()
    assert labels.first.locator("svg.qr").is_visible()
    size = labels.first.locator("svg.qr").bounding_box()
    assert 100 < size["width"] < 125  # 30 mm at 96 px to the inch: about 113 px
    page.screenshot(path=tmp_path / "labels-print.png", full_page=True)
    pdf = page.pdf(path=tmp_path / "labels.pdf", format="A4", prefer_css_page_size=True)
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1  # five labels: one A4 sheet


def warm_delivery(batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> Shipment:
    """A 12-hour delivery whose reefer failed from hour 4 to hour 7 (12.4 °C), through the real evaluation."""
    now = timezone.now()
    shipment = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[services.ItemSpec(batch=batch, quantity=40)],
    )
    start = now - datetime.timedelta(hours=12)
    shipment = services.shipment_dispatch(actor=manufacturer.user, shipment=shipment, occurred_at=start)
    shipment = services.shipment_receive(actor=pharmacy.user, shipment=shipment, accept=True)
    contract = shipment.contract.as_rules()
    armed = start + datetime.timedelta(seconds=contract.arming_seconds)
    samples = [
        coldchain.Sample(at, 12.4 if 4 <= (at - start).total_seconds() / 3600 < 7 else 5.0)
        for at in (armed + datetime.timedelta(minutes=5 * n) for n in range(1, 143))
    ]
    evaluation = coldchain.evaluate(contract, samples, armed_from=armed, until=shipment.closed_at)
    services.monitoring_apply(shipment=shipment, evaluation=evaluation)
    return shipment


def test_the_lists_lead_to_the_batch_page_with_its_cold_chain(
    page: Any,
    live_server: Any,
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    product: Product,
    tmp_path: Path,
) -> None:
    today = timezone.localdate()
    batch = services.batch_register(
        actor=manufacturer.user,
        product=product,
        lot="MV2405",
        manufactured_on=today.replace(day=1),
        expires_on=today.replace(year=today.year + 2),
        quantity=1000,
    )
    shipment = warm_delivery(batch, manufacturer, carrier, pharmacy)
    base = live_server.url
    sign_in_at(page, f"{base}/manufacturer/products/", "manufacturer")
    assert "Morbivax measles vaccine" in page.locator("main").inner_text()
    assert_clean(page)
    page.screenshot(path=tmp_path / "products.png", full_page=True)

    page.get_by_role("link", name="1 batch").click()
    expect(page.get_by_label("Product")).to_have_value(str(product.pk))
    assert_clean(page)
    page.get_by_label("Status").select_option("quarantined")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("main")).to_contain_text("No batches match.")
    assert_clean(page)
    page.get_by_label("Status").select_option("active")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("link", name="MV2405")).to_be_visible()
    page.screenshot(path=tmp_path / "batches.png", full_page=True)

    page.get_by_role("link", name="MV2405").click()
    expect(page).to_have_url(f"{base}/manufacturer/batches/{batch.pk}/")
    page.wait_for_load_state("load")
    qr = page.get_by_role("img", name=re.compile("QR code of the batch's Digital Link"))
    assert qr.evaluate("image => image.complete && image.naturalWidth") > 0
    shipments = page.get_by_role("region", name="Shipments and their cold chain").inner_text()
    assert shipment.reference in shipments
    assert "Too warm: 8 °C or more for 3 h, up to 12.4 °C." in shipments
    assert page.get_by_role("region", name="Alerts").locator("tbody tr").count() == shipment.alerts.count() > 0
    where = page.get_by_role("region", name="Where its units are").inner_text()
    assert "Pharmacy site: 40" in where
    assert_clean(page)
    page.screenshot(path=tmp_path / "batch-shipped.png", full_page=True)
