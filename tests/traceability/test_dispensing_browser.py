"""The dispensing page in Chromium: a pharmacist scans packs at the counter, one of them refused, then all taken.

Checked under the strict Content-Security-Policy and for accessibility basics;
each step leaves a screenshot in the test's temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import factories
from tests.browser_checks import assert_clean
from tests.conftest import Persona
from tests.scenarios import register_batch, ship
from tests.traceability.test_manufacturer_browser import answered_400, sign_in_at
from traceability.models import Dispensing, SerialNumber

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_pharmacist_records_scanned_packs_and_a_counterfeit_code_changes_nothing(
    page: Any, live_server: Any, manufacturer: Persona, carrier: Persona, pharmacy: Persona, tmp_path: Path
) -> None:
    product = factories.ProductFactory(manufacturer=manufacturer.organisation, name="Insulin pen")
    batch = register_batch(manufacturer, product, lot="INS-07", serials=3)
    ship(batch, manufacturer, carrier, pharmacy, quantity=10)
    first, second = (batch.digital_link(serial=s) for s in batch.serials.values_list("serial", flat=True)[:2])
    base = live_server.url

    sign_in_at(page, f"{base}/logistics/", "pharmacy")
    page.get_by_role("link", name="Dispense").click()
    packs = page.get_by_label("Packs handed out")
    packs.fill(f"{first}\n{first.rsplit('/', 1)[0]}/FAKE0001")
    page.get_by_role("button", name="Record as dispensed").click()
    assert "Lot INS-07:" in page.locator("#id_packs_error").inner_text()
    answered_400(page)
    assert_clean(page)
    page.screenshot(path=tmp_path / "dispense-refused.png", full_page=True)
    assert not Dispensing.objects.exists()

    packs.fill(f"{first}\n{second}\n")
    page.get_by_role("button", name="Record as dispensed").click()
    assert page.get_by_role("status").inner_text() == "2 packs recorded as dispensed."
    assert packs.input_value() == ""
    assert_clean(page)
    page.screenshot(path=tmp_path / "dispense-recorded.png", full_page=True)
    assert batch.serials.filter(status=SerialNumber.Status.DISPENSED).count() == 2
