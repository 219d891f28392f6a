"""The regulator's pages in a real browser: sign in, read the overview, verify the ledger, search a subject.

Every page visited is checked under the strict Content-Security-Policy (no
console errors, no policy violations) and for the accessibility basics of
``tests/browser_checks.py``; each leaves a screenshot in the test's temporary
directory.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from ledger import services as ledger
from tests.browser_checks import RECORD_CSP_VIOLATIONS, assert_clean
from tests.conftest import Persona
from traceability import coldchain, services
from traceability.models import Shipment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"  # the factories' password


@pytest.fixture
def shipment(live_server: Any, manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> Shipment:
    """A vaccine batch shipped 6 h ago that froze 2 h in and is still frozen; two checkpoints in the ledger."""
    today = timezone.localdate()
    product = services.product_register(
        actor=manufacturer.user,
        gtin="09506000134352",
        name="Morbivax measles vaccine",
        dosage_form="suspension for injection",
        strength="0.5 ml",
        storage_profile="2-8C",
        freeze_sensitive=True,
    )
    batch = services.batch_register(
        actor=manufacturer.user,
        product=product,
        lot="MV2405",
        manufactured_on=today - datetime.timedelta(days=30),
        expires_on=today + datetime.timedelta(days=400),
        quantity=1000,
    )
    ledger.ledger_commit()
    shipment = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[services.ItemSpec(batch=batch, quantity=10)],
    )
    dispatched = timezone.now() - datetime.timedelta(hours=6)
    shipment = services.shipment_dispatch(actor=manufacturer.user, shipment=shipment, occurred_at=dispatched)
    contract = shipment.contract.as_rules()
    armed = dispatched + datetime.timedelta(seconds=contract.arming_seconds)
    samples = [
        coldchain.Sample(armed + datetime.timedelta(minutes=m), -3.0 if m >= 120 else 5.0) for m in range(1, 350, 5)
    ]
    evaluation = coldchain.evaluate(contract, samples, armed_from=armed, until=timezone.now())
    services.monitoring_apply(shipment=shipment, evaluation=evaluation)
    ledger.ledger_commit()
    return shipment


def visit(page: Any, url: str) -> Any:
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    return page.goto(url)


def screenshot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0


def sign_in(page: Any, base: str, username: str) -> None:
    visit(page, f"{base}/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state("load")


def test_the_regulator_reads_the_overview_verifies_the_ledger_and_searches_a_subject(
    page: Any, live_server: Any, shipment: Shipment, regulator: Persona, tmp_path: Path
) -> None:
    sign_in(page, live_server.url, "regulator")
    assert_clean(page)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    page.wait_for_load_state("load")
    assert page.get_by_role("heading", level=1).inner_text() == "Regulator overview"
    assert page.get_by_role("region", name="Organisations").locator("tbody tr").count() == 6
    excursions = page.get_by_role("region", name="Open excursions")
    assert excursions.locator("tbody tr").count() == 1
    row = excursions.locator("tbody tr").first.inner_text()
    assert shipment.reference in row
    assert "Below range" in row
    assert "ongoing" in row
    critical = page.locator('tr[data-severity="critical"] td').first.inner_text()
    assert int(critical) >= 1
    assert_clean(page)
    screenshot(page, tmp_path / "overview.png")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Ledger").click()
    page.wait_for_load_state("load")
    assert page.get_by_role("heading", level=1).inner_text() == "Ledger"
    newest = page.get_by_role("region", name="Newest checkpoint")
    assert "Verified" in newest.locator('[data-fact="signature"]').inner_text()
    consistency = page.get_by_role("region", name="Consistency")
    assert consistency.locator('[data-fact="consistent"]').inner_text().startswith("Consistent: yes.")
    assert consistency.locator('[data-fact="consistency-proof"] li').count() >= 1
    assert_clean(page)
    screenshot(page, tmp_path / "ledger.png")

    page.get_by_label("Subject", exact=True).fill(f"shipment:{shipment.reference}")
    page.get_by_role("button", name="Search").click()
    page.wait_for_load_state("load")
    results = page.locator("article.entry")
    assert results.count() >= 3  # created, dispatched, excursion started, contract breached ...
    for verdict in results.locator('[data-fact="inclusion"]').all_inner_texts():
        assert verdict.startswith("Included in checkpoint ")
        assert verdict.endswith(": verified")
    types = results.locator("h4").all_inner_texts()
    assert any(title.endswith("shipment.created") for title in types)
    assert any(title.endswith("excursion.started") for title in types)
    assert_clean(page)
    screenshot(page, tmp_path / "subject.png")


def test_a_malformed_subject_is_explained_next_to_the_field(
    page: Any, live_server: Any, shipment: Shipment, regulator: Persona, tmp_path: Path
) -> None:
    sign_in(page, live_server.url, "regulator")
    response = visit(page, f"{live_server.url}/regulator/ledger/")
    assert response.status == 200
    page.console_errors.clear()
    page.get_by_label("Subject", exact=True).fill("SHP-20260101-0A1B2C3D")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Search").click()
    assert navigation.value.status == 400
    alert = page.get_by_role("alert").inner_text()
    assert "it must begin with shipment:, batch:, product:, recall: or key:" in alert
    assert page.get_by_label("Subject", exact=True).get_attribute("aria-invalid") == "true"
    # The browser reports the 400 itself in the console; nothing else may be there.
    assert all("status of 400" in error for error in page.console_errors)
    page.console_errors.clear()
    assert_clean(page)
    screenshot(page, tmp_path / "bad-subject.png")


def test_other_organisations_do_not_find_the_pages(
    page: Any, live_server: Any, shipment: Shipment, manufacturer: Persona
) -> None:
    sign_in(page, live_server.url, "manufacturer")
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Ledger").count() == 0
    for path in ("/regulator/", "/regulator/ledger/"):
        response = visit(page, f"{live_server.url}{path}")
        assert response.status == 404
