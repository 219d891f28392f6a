"""The consumer page in a real browser at a phone's size: what someone scanning a pack sees.

Each case checks the page works without JavaScript under the strict
Content-Security-Policy (no console errors, no policy violations), stays light
and in one column on a phone, and passes a few accessibility checks of our
own; each leaves a screenshot in the test's temporary directory.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from ledger import services as ledger
from tests import factories
from tests.browser_checks import ACCESSIBILITY_PROBLEMS, RECORD_CSP_VIOLATIONS
from tests.conftest import Persona
from traceability import gs1, services
from traceability.models import Batch, Recall, RecallItem, SerialNumber

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def batch(live_server: Any, manufacturer: Persona) -> Batch:
    today = timezone.localdate()
    product = services.product_register(
        actor=manufacturer.user,
        gtin=factories.gtin(),
        name="Morbivax measles vaccine",
        dosage_form="suspension for injection",
        strength="0.5 ml",
        storage_profile="2-8C",
    )
    batch = services.batch_register(
        actor=manufacturer.user,
        product=product,
        lot="MV2405",
        manufactured_on=today - datetime.timedelta(days=30),
        expires_on=today + datetime.timedelta(days=400),
        quantity=1000,
        serial_count=2,
    )
    ledger.ledger_commit()
    return batch


def deliver(batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona, hours: int) -> None:
    now = timezone.now()
    shipment = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[services.ItemSpec(batch=batch, quantity=10)],
    )
    services.shipment_dispatch(
        actor=manufacturer.user, shipment=shipment, occurred_at=now - datetime.timedelta(hours=hours)
    )
    services.shipment_receive(actor=pharmacy.user, shipment=shipment, accept=True, occurred_at=now)


def visit(page: Any, url: str, screenshot: Path, *, status: int = 200) -> Any:
    """Opens the page at a phone's size; checks it is whole, light, script-free and accessible."""
    page.set_viewport_size(PHONE)
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    loaded: list[Any] = []
    page.on("response", lambda response: loaded.append(response))
    response = page.goto(url)
    page.wait_for_load_state("load")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 0

    assert response.status == status
    own_status = f"Failed to load resource: the server responded with a status of {status} "  # the page's own
    assert [error for error in page.console_errors if status == 200 or not error.startswith(own_status)] == []
    assert page.evaluate("window.__cspViolations") == []
    assert page.evaluate(ACCESSIBILITY_PROBLEMS) == []
    assert page.evaluate("document.scripts.length") == 0
    # The style sheet arrived and applies: the header is dark blue.
    assert page.evaluate("getComputedStyle(document.querySelector('header.site')).backgroundColor") == "rgb(11, 61, 92)"
    # Fast on a phone: the page, its style sheet and its icon, a few kilobytes, nothing from elsewhere.
    assert len(loaded) <= 3, [r.url for r in loaded]
    assert all(
        r.url.startswith(url.split("/01/")[0]) and r.status == (status if r is response else 200) for r in loaded
    )
    assert sum(len(r.body()) for r in loaded) < 40_000
    return page


def link_to(live_server: Any, batch: Batch, serial: str | None = None) -> str:
    link = gs1.DigitalLink(gtin=batch.product.gtin, lot=batch.lot, serial=serial, expiry=batch.expires_on)
    return link.uri(live_server.url)


def test_a_safe_pack_on_a_phone(
    page: Any,
    live_server: Any,
    batch: Batch,
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    tmp_path: Path,
) -> None:
    deliver(batch, manufacturer, carrier, pharmacy, hours=30)
    deliver(batch, manufacturer, carrier, pharmacy, hours=11)
    serial = batch.serials.values_list("serial", flat=True)[0]

    visit(page, link_to(live_server, batch, serial), tmp_path / "safe-pack.png")

    assert page.get_by_role("heading", level=1).inner_text() == "Morbivax measles vaccine 0.5 ml"
    assert page.locator(".advice").inner_text().startswith("No problems found")
    assert "Genuine serial number" in page.locator("#status").inner_text()
    assert "Kept between 2 and 8 °C for all 2 legs, 41 h" in page.locator("#cold-chain").inner_text()
    assert page.evaluate("document.documentElement.lang") == "en"


def test_a_quarantined_batch_on_a_phone(page: Any, live_server: Any, batch: Batch, tmp_path: Path) -> None:
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.QUARANTINED)  # no service sets it yet

    visit(page, link_to(live_server, batch), tmp_path / "quarantined.png")

    assert page.locator(".advice").inner_text().startswith("Do not use this pack")
    banner = page.locator("#status .notice.danger")
    assert "This batch is on hold (quarantined)" in banner.inner_text()
    # The warning is red: a dark red text on a light red box.
    assert banner.evaluate("e => getComputedStyle(e).color") == "rgb(125, 13, 28)"


def test_an_unknown_serial_on_a_phone(page: Any, live_server: Any, batch: Batch, tmp_path: Path) -> None:
    visit(page, link_to(live_server, batch, "FAKE12345678"), tmp_path / "unknown-serial.png")

    warning = page.locator("#status .notice.danger").first.inner_text()
    assert "Possible counterfeit" in warning
    assert "This serial number was never issued for this batch." in warning


def test_a_serial_harvester_is_told_to_wait(
    page: Any, live_server: Any, batch: Batch, tmp_path: Path, settings: Any
) -> None:
    settings.DIGITAL_LINK_THROTTLE_RATES = {"lookup": "300/min", "miss": "2/hour"}
    for guess in ("FAKE00000001", "FAKE00000002"):
        visit(page, link_to(live_server, batch, guess), tmp_path / f"{guess}.png")

    genuine = batch.serials.values_list("serial", flat=True)[0]
    visit(page, link_to(live_server, batch, genuine), tmp_path / "too-many.png", status=429)

    assert page.get_by_role("heading", level=1).inner_text() == "Too many look-ups"
    assert "Scan the pack again later" in page.locator("main").inner_text()
    assert "Morbivax" not in page.content()


def test_a_chinese_reader_on_a_phone(page: Any, live_server: Any, batch: Batch, tmp_path: Path) -> None:
    page.set_extra_http_headers({"Accept-Language": "zh-CN,zh;q=0.9"})

    visit(page, link_to(live_server, batch), tmp_path / "zh-hans.png")

    assert page.evaluate("document.documentElement.lang") == "zh-Hans"
    assert page.get_by_role("heading", name="冷链").is_visible()


def test_a_recalled_pack_on_a_phone(
    page: Any, live_server: Any, batch: Batch, manufacturer: Persona, tmp_path: Path
) -> None:
    recall = Recall.objects.create(  # the ORM, as recall_issue records it: the recall, then the statuses it sets
        reference="RC-20270301-A1B2C3",
        kind=Recall.Kind.MANDATED,
        classification=Recall.Class.I,
        depth=Recall.Depth.CONSUMER,
        reason="Loss of potency found in stability testing.",
        instructions="Do not use these packs. Take them back to the pharmacy that gave them to you.",
        manufacturer=manufacturer.organisation,
        initiated_by=manufacturer.organisation,
        issued_by=manufacturer.user,
    )
    RecallItem.objects.create(recall=recall, batch=batch)
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.RECALLED)
    batch.serials.update(status=SerialNumber.Status.RECALLED)
    serial = batch.serials.values_list("serial", flat=True)[0]

    visit(page, link_to(live_server, batch, serial), tmp_path / "recalled.png")

    assert page.locator(".advice").inner_text().startswith("Do not use this pack")
    banner = page.locator("#recall")
    assert banner.is_visible()
    text = banner.inner_text()
    assert "Recall RC-20270301-A1B2C3" in text
    assert "Class I: the most serious" in text
    assert "Take them back to the pharmacy that gave them to you." in text
    assert "Loss of potency" not in page.content()  # the reason is not the public's instructions
    # Red like every warning, and within the phone's width: nothing to scroll sideways.
    assert banner.evaluate("e => getComputedStyle(e).color") == "rgb(125, 13, 28)"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
