"""Signing in to the pages: Argon2 in production settings, and a lock-out after repeated failures."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import Persona

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"


@pytest.fixture
def pharmacist(pharmacy: Persona) -> Persona:
    pharmacy.user.set_password(PASSWORD)
    pharmacy.user.save()
    return pharmacy


def sign_in(username: str, password: str, address: str = "198.51.100.7") -> Any:
    return Client(REMOTE_ADDR=address).post("/accounts/login/", {"username": username, "password": password})


def test_passwords_are_hashed_with_argon2_in_the_real_settings() -> None:
    from traceability import settings as real

    assert real.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"


def test_the_right_password_signs_in(pharmacist: Persona) -> None:
    response = sign_in("pharmacy", PASSWORD)
    assert (response.status_code, response["Location"]) == (302, "/")


def test_after_five_failures_the_account_is_locked_even_for_the_right_password(pharmacist: Persona) -> None:
    for _attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        assert sign_in("pharmacy", "wrong").status_code == 200
    # From another address too: the account is what is protected.
    response = sign_in("PHARMACY", PASSWORD, address="203.0.113.9")
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    assert "_auth_user_id" not in response.client.session


def test_an_unknown_username_is_answered_exactly_like_a_real_one(pharmacist: Persona) -> None:
    for _attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        sign_in("pharmacy", "wrong")
        sign_in("nobody-here", "wrong")
    real, unknown = sign_in("pharmacy", "wrong"), sign_in("nobody-here", "wrong")
    assert real.status_code == unknown.status_code == 429
    assert page_text(real, "pharmacy") == page_text(unknown, "nobody-here")


def page_text(response: Any, username: str) -> str:
    """The page without what differs by request anyway: the CSRF token, and the username typed in."""
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", response.content.decode())
    return html.replace(f'value="{username}"', "")


def test_one_address_trying_many_accounts_is_locked_out(pharmacist: Persona) -> None:
    for attempt in range(settings.LOGIN_FAILURES_PER_ADDRESS):
        sign_in(f"guess-{attempt}", "wrong")
    assert sign_in("pharmacy", PASSWORD).status_code == 429
    assert sign_in("pharmacy", PASSWORD, address="192.0.2.1").status_code == 302


def test_a_success_clears_the_accounts_failures(pharmacist: Persona) -> None:
    for _attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT - 1):
        sign_in("pharmacy", "wrong")
    assert sign_in("pharmacy", PASSWORD).status_code == 302
    for _attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT - 1):
        sign_in("pharmacy", "wrong")
    assert sign_in("pharmacy", PASSWORD).status_code == 302


def test_the_lock_lifts_after_the_lockout_time(pharmacist: Persona, settings: Any) -> None:
    settings.LOGIN_LOCKOUT_SECONDS = 1
    for _attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        sign_in("pharmacy", "wrong")
    assert sign_in("pharmacy", PASSWORD).status_code == 429
    time.sleep(1.1)
    assert sign_in("pharmacy", PASSWORD).status_code == 302
