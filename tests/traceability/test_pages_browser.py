"""The sign-in and landing pages, in a real browser, as each kind of user."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from tests.browser_checks import RECORD_CSP_VIOLATIONS, assert_clean

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "demo-password-for-tests"


@pytest.fixture
def demo(live_server: object) -> str:
    call_command("seed_demo", password=PASSWORD, stdout=open("/dev/null", "w"))  # noqa: SIM115
    return str(live_server.url)  # type: ignore[attr-defined]


def sign_in(page: object, base: str, username: str, password: str = PASSWORD) -> None:
    page.add_init_script(RECORD_CSP_VIOLATIONS)  # type: ignore[attr-defined]
    page.goto(f"{base}/")  # type: ignore[attr-defined]
    assert_clean(page)  # the sign-in page
    page.get_by_label("Username").fill(username)  # type: ignore[attr-defined]
    page.get_by_label("Password").fill(password)  # type: ignore[attr-defined]
    page.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("username", "organisation", "sees", "does_not_see"),
    [
        ("manufacturer", "Helvetia Biologics AG", "Your batches", "Glucora insulin"),
        ("manufacturer2", "Nordic Insulin A/S", "Your batches", "Morbivax measles vaccine"),
        ("carrier", "ColdRoute Logistics GmbH", "In transit", "Your batches"),
        ("pharmacy", "CityCare Pharmacies", "Most recent", "Your batches"),
        ("regulator", "National Medicines Agency", "All batches", "Your batches"),
    ],
)
def test_each_role_lands_on_its_own_page(
    page: object, demo: str, username: str, organisation: str, sees: str, does_not_see: str
) -> None:
    sign_in(page, demo, username)
    heading = page.get_by_role("heading", level=1)  # type: ignore[attr-defined]
    assert heading.inner_text() == organisation
    body = page.locator("main").inner_text()  # type: ignore[attr-defined]
    assert sees in body
    assert does_not_see not in body
    assert_clean(page)


def test_regulator_sees_every_organisation_and_all_twelve_shipments(page: object, demo: str) -> None:
    sign_in(page, demo, "regulator")
    orgs = page.get_by_role("region", name="Organisations").locator("tbody tr")  # type: ignore[attr-defined]
    assert orgs.count() == 6
    tiles = {
        tile.get_attribute("data-status"): int(tile.locator(".figure").inner_text())
        for tile in page.get_by_role("region", name="Shipments").locator(".tile").all()  # type: ignore[attr-defined]
    }
    assert tiles == {"planned": 3, "in_transit": 5, "delivered": 3, "rejected": 1}


def test_carrier_sees_only_the_shipments_it_carried_or_held(page: object, demo: str) -> None:
    sign_in(page, demo, "carrier2")
    tiles = {
        tile.get_attribute("data-status"): int(tile.locator(".figure").inner_text())
        for tile in page.get_by_role("region", name="Shipments").locator(".tile").all()  # type: ignore[attr-defined]
    }
    # carrier2 carries five demo shipments and took over one more from carrier at a cross-dock.
    assert sum(tiles.values()) == 6
    assert tiles["rejected"] == 0


def test_a_wrong_password_is_refused_and_the_page_stays_put(page: object, demo: str) -> None:
    sign_in(page, demo, "pharmacy", password="not-the-password")
    assert page.get_by_role("alert").inner_text().startswith("Your username and password did not match")  # type: ignore[attr-defined]
    assert "/accounts/login/" in page.url  # type: ignore[attr-defined]


def test_pages_carry_a_strict_content_security_policy(page: object, demo: str) -> None:
    response = page.goto(f"{demo}/accounts/login/")  # type: ignore[attr-defined]
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "object-src 'none'" in policy
    assert "unsafe-inline" not in policy


def test_signing_out_returns_to_the_sign_in_page(page: object, demo: str) -> None:
    sign_in(page, demo, "manufacturer")
    page.get_by_role("button", name="Sign out").click()  # type: ignore[attr-defined]
    page.goto(f"{demo}/")  # type: ignore[attr-defined]
    assert "/accounts/login/" in page.url  # type: ignore[attr-defined]


def test_the_api_docs_page_renders_under_the_content_security_policy(page: object, demo: str) -> None:
    page.goto(f"{demo}/api/v1/docs/")  # type: ignore[attr-defined]
    page.get_by_text("ColdTrace API").first.wait_for()  # type: ignore[attr-defined]
    page.get_by_text("/api/v1/shipments/").first.wait_for()  # type: ignore[attr-defined]
    assert page.console_errors == []  # type: ignore[attr-defined]
