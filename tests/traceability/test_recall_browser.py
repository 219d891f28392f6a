"""A recall in a real browser: the regulator previews and issues it, the pharmacy acknowledges, the trace shows it.

Every page visited is checked under the strict Content-Security-Policy (no
console errors, no policy violations) and for the accessibility basics of
``tests/browser_checks.py``; screenshots are left in the test's temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import factories
from tests.browser_checks import assert_clean
from tests.conftest import Persona
from tests.scenarios import register_batch, ship
from tests.traceability.test_manufacturer_browser import PASSWORD, answered_400, sign_in_at
from traceability.models import Recall

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_regulator_recalls_a_batch_and_the_pharmacy_acknowledges(
    page: Any,
    live_server: Any,
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    regulator: Persona,
    tmp_path: Path,
) -> None:
    product = factories.ProductFactory(manufacturer=manufacturer.organisation, name="Morbivax measles vaccine")
    batch = register_batch(manufacturer, product, lot="MV2406")
    ship(batch, manufacturer, carrier, pharmacy, quantity=120)
    moving = ship(batch, manufacturer, carrier, pharmacy, quantity=30, outcome="in_transit")
    base = live_server.url

    sign_in_at(page, f"{base}/recalls/new", "regulator")
    page.get_by_label("Batches").fill(f"{product.gtin} {batch.lot}")
    page.get_by_label("Class").select_option("I")
    page.get_by_label("Depth").select_option("consumer")
    page.get_by_label("Reason").fill("Particles seen in vials of this lot.")
    page.get_by_label("Instructions to holders and the public").fill("Quarantine every pack; return it.")
    page.get_by_role("button", name="Preview its scope").click()
    scope = page.get_by_role("region", name="Scope")
    assert "1000 units; 3 organisations will be told" in scope.inner_text()
    assert moving.reference in scope.inner_text()
    assert_clean(page)
    page.screenshot(path=tmp_path / "recall-preview.png", full_page=True)

    page.get_by_label("Your password, to confirm").fill("not my password")
    page.get_by_role("button", name="Issue the recall").click()
    assert "is not your password" in page.locator("#id_password_error").inner_text()
    answered_400(page)
    assert not Recall.objects.exists()
    page.get_by_label("Your password, to confirm").fill(PASSWORD)
    page.get_by_role("button", name="Issue the recall").click()
    recall = Recall.objects.get()
    assert page.url == f"{base}/recalls/{recall.pk}/"
    assert "0 of 3 organisations have acknowledged." in page.inner_text("main")
    assert_clean(page)
    page.screenshot(path=tmp_path / "recall-issued.png", full_page=True)

    page.get_by_role("button", name="Sign out").click()
    sign_in_at(page, f"{base}/recalls/", "pharmacy")
    page.get_by_role("link", name="Recalls 1 to acknowledge").wait_for()
    page.get_by_role("link", name=recall.reference).click()
    page.get_by_label("Units found and quarantined").fill("150")
    page.get_by_label("Note").fill("All in the Munich store.")
    page.get_by_role("button", name="Acknowledge the recall").click()
    assert "Acknowledgement recorded." in page.inner_text("main")
    assert page.get_by_role("link", name="Recalls", exact=True).is_visible()
    assert_clean(page)
    page.screenshot(path=tmp_path / "recall-acknowledged.png", full_page=True)

    page.get_by_role("button", name="Sign out").click()
    sign_in_at(page, f"{base}/recalls/trace/batches/{batch.pk}/", "manufacturer")
    life = page.get_by_role("region", name="Its life, in order").inner_text()
    assert "recall.issued" in life
    assert "Pharmacy acknowledged recall" in life
    assert_clean(page)
    page.screenshot(path=tmp_path / "batch-trace.png", full_page=True)
