"""The logistics pages in a real browser: a carrier watches the live board, handles an alert, reads a shipment.

Every page is checked under the strict Content-Security-Policy (no console
errors, no policy violations) and for accessibility basics; each step leaves
a screenshot in the test's temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from tests.browser_checks import RECORD_CSP_VIOLATIONS, assert_clean
from tests.conftest import Persona
from tests.factories import BatchFactory, ProductFactory
from tests.traceability.test_logistics_pages import Logger, ship
from traceability import services
from traceability.models import Alert, Shipment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"  # the factories' password


@pytest.fixture
def watched(live_server: Any, manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> tuple[Shipment, Logger]:
    """A shipment in transit for half an hour whose logger has read 5 °C so far."""
    batch = BatchFactory(product=ProductFactory(manufacturer=manufacturer.organisation))
    shipment = ship(manufacturer, carrier, pharmacy, batch, hours=0.5)
    logger = Logger(manufacturer, shipment)
    logger.report([5.0] * 6)
    return shipment, logger


def sign_in(page: Any, base: str, username: str, then: str) -> None:
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.goto(f"{base}/accounts/login/?next={then}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}{then}")


def test_a_carrier_sees_an_alert_arrive_handles_it_and_reads_the_shipment(
    page: Any, live_server: Any, watched: tuple[Shipment, Logger], tmp_path: Path
) -> None:
    shipment, logger = watched
    sign_in(page, live_server.url, "carrier", "/logistics/")
    row = page.locator(f'tr[data-shipment="{shipment.pk}"]')
    expect(row).to_contain_text("5.0 °C")
    expect(row).to_contain_text("Within range")
    page.screenshot(path=str(tmp_path / "board-calm.png"), full_page=True)
    assert_clean(page)

    # The reefer fails: the logger reads 26 °C and the workers raise a critical alert.
    page.evaluate("window.stillTheSamePage = true")
    logger.report([26.0], last_at=timezone.now())
    expect(row.locator(".severity")).to_have_text("Critical", timeout=5000)
    expect(row).to_contain_text("26.0 °C")
    expect(row).to_contain_text("Breached")
    expect(row.locator("td.temperature")).to_have_class("temperature out")
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded
    page.screenshot(path=str(tmp_path / "board-alert.png"), full_page=True)
    assert_clean(page)

    # From the board to the inbox, filtered to this shipment's unresolved alerts.
    alert = Alert.objects.get(shipment=shipment, key="rule:hard ceiling")
    row.locator("td.alerts a").click()
    card = page.locator(f"#alert-{alert.pk}")
    expect(card).to_contain_text("hard ceiling")
    assert_clean(page)
    card.get_by_label("Comment (optional)").fill("Driver is checking the unit.")
    card.get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_role("status")).to_have_text(f"Alert acknowledged: hard ceiling on {shipment.reference}.")
    expect(card).to_contain_text("“Driver is checking the unit.”")
    page.screenshot(path=str(tmp_path / "inbox-acknowledged.png"), full_page=True)
    assert_clean(page)

    card.get_by_label("How was it resolved?").fill("Door was left open; closed, back in range.")
    card.get_by_role("button", name="Resolve").click()
    expect(page.get_by_role("status")).to_have_text(f"Alert resolved: hard ceiling on {shipment.reference}.")
    expect(card).to_have_count(0)  # the inbox shows unresolved alerts only, as the board's link asked
    alert.refresh_from_db()
    assert (alert.status, alert.acknowledgement, alert.resolution) == (
        Alert.Status.RESOLVED,
        "Driver is checking the unit.",
        "Door was left open; closed, back in range.",
    )
    assert_clean(page)

    # The shipment's page: the chart with the contract's range and the excursion.
    page.get_by_role("link", name="Live board").click()
    page.get_by_role("link", name=shipment.reference).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Shipment {shipment.reference}")
    chart = page.get_by_role("img", name=f"Temperature of shipment {shipment.reference}")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.band")).to_have_count(1)
    expect(chart.locator("rect.excursion-above")).to_have_count(1)
    assert chart.bounding_box()["width"] > 600
    expect(page.locator("#budget")).to_contain_text("remaining")
    expect(page.locator(".ledger")).to_contain_text("shipment.dispatched")
    page.screenshot(path=str(tmp_path / "shipment.png"), full_page=True)
    assert_clean(page)


def test_a_recall_marks_the_shipment_on_the_open_board(
    page: Any, live_server: Any, watched: tuple[Shipment, Logger], manufacturer: Persona, tmp_path: Path
) -> None:
    shipment, _ = watched
    sign_in(page, live_server.url, "carrier", "/logistics/")
    row = page.locator(f'tr[data-shipment="{shipment.pk}"]')
    expect(row).to_contain_text("Within range")
    expect(row.locator(".recalled")).to_have_count(0)

    page.evaluate("window.stillTheSamePage = true")
    services.recall_issue(
        actor=manufacturer.user,
        password=PASSWORD,
        items=[services.RecallItemSpec(item.batch) for item in shipment.items.all()],
        classification="I",
        depth="consumer",
        reason="Particles seen in vials of this lot.",
        instructions="Stop using it.",
    )

    expect(row.locator("th .recalled")).to_have_text("Recalled goods", timeout=5000)
    assert page.evaluate("window.stillTheSamePage") is True  # board.js built the row
    page.screenshot(path=str(tmp_path / "board-recalled.png"), full_page=True)
    assert_clean(page)


def test_the_board_says_so_when_it_cannot_update(
    page: Any, live_server: Any, watched: tuple[Shipment, Logger], tmp_path: Path
) -> None:
    sign_in(page, live_server.url, "carrier", "/logistics/")
    page.context.clear_cookies()  # signed out elsewhere: board.json now answers with the login page
    expect(page.locator("#board-updated")).to_contain_text("Could not update the board", timeout=5000)
    expect(page.locator(f'tr[data-shipment="{watched[0].pk}"]')).to_be_visible()  # the last rows stay
    page.screenshot(path=str(tmp_path / "board-offline.png"), full_page=True)
    assert_clean(page)


def test_the_board_works_without_javascript(
    browser: Any, live_server: Any, watched: tuple[Shipment, Logger], tmp_path: Path
) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{live_server.url}/accounts/login/?next=/logistics/")
    page.get_by_label("Username").fill("carrier")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(f'tr[data-shipment="{watched[0].pk}"]')).to_contain_text("Within range")
    page.get_by_role("link", name="Reload").click()
    expect(page.locator(f'tr[data-shipment="{watched[0].pk}"]')).to_contain_text("5.0 °C")
    page.screenshot(path=str(tmp_path / "board-no-js.png"), full_page=True)
    context.close()
