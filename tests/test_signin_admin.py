"""The admin's sign-in shares the sign-in page's lock-out (traceability/signin.py): the same failures per account
and per address, counted wherever they happen, and the same 429 while the account is locked.

``root`` is a staff account; each of its failures comes from an address of its own, so only the account's count is
at stake.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tests import factories
from traceability.models import AuditEvent

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"  # the factories' password
ADMIN_LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def staff() -> User:
    user: User = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    return user


def admin_sign_in(password: str, address: str = "198.51.100.7", username: str = "root") -> Any:
    return Client(REMOTE_ADDR=address).post(ADMIN_LOGIN, {"username": username, "password": password})


def fail(times: int, sign_in: Any = admin_sign_in) -> None:
    for attempt in range(times):
        assert sign_in("wrong", address=f"192.0.2.{attempt + 1}").status_code == 200


def page_sign_in(password: str, address: str = "198.51.100.7") -> Any:
    return Client(REMOTE_ADDR=address).post(reverse("login"), {"username": "root", "password": password})


def assert_locked_out(response: Any) -> None:
    assert response.status_code == 429
    assert response["Retry-After"] == str(settings.LOGIN_LOCKOUT_SECONDS)
    assert b"Too many failed sign-ins for this account or from this address." in response.content
    assert "_auth_user_id" not in response.client.session


def test_the_right_password_signs_staff_in_to_the_admin(staff: User) -> None:
    response = admin_sign_in(PASSWORD)

    assert (response.status_code, response["Location"]) == (302, "/admin/")
    assert response.client.get("/admin/").status_code == 200


def test_after_the_failures_the_page_allows_a_staff_account_is_locked_even_for_the_right_password(
    staff: User,
) -> None:
    fail(settings.LOGIN_FAILURES_PER_ACCOUNT)

    assert_locked_out(admin_sign_in(PASSWORD, address="203.0.113.9"))


def test_failures_on_the_sign_in_page_lock_the_admin_and_the_admins_failures_lock_the_page(staff: User) -> None:
    fail(settings.LOGIN_FAILURES_PER_ACCOUNT, sign_in=page_sign_in)
    assert_locked_out(admin_sign_in(PASSWORD, address="203.0.113.9"))

    User.objects.create_user("ops", password=PASSWORD, is_staff=True)
    for attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        admin_sign_in("wrong", address=f"192.0.2.{attempt + 1}", username="ops")
    page = Client(REMOTE_ADDR="203.0.113.9").post(reverse("login"), {"username": "ops", "password": PASSWORD})
    assert page.status_code == 429
    token = APIClient(REMOTE_ADDR="203.0.113.9").post(
        reverse("api-token"), {"username": "ops", "password": PASSWORD}, format="json"
    )
    assert token.status_code == 429


def test_a_locked_unknown_username_gets_the_same_admin_page_as_a_locked_staff_account(staff: User) -> None:
    for attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        admin_sign_in("wrong", address=f"192.0.2.{attempt + 1}")
        admin_sign_in("wrong", address=f"192.0.2.{attempt + 1}", username="nobody-here")

    real, unknown = admin_sign_in(PASSWORD), admin_sign_in(PASSWORD, username="nobody-here")

    assert_locked_out(real)
    assert_locked_out(unknown)
    assert real.context["form"].errors == unknown.context["form"].errors


def test_a_successful_admin_sign_in_clears_the_accounts_failures(staff: User) -> None:
    for _round in range(2):
        fail(settings.LOGIN_FAILURES_PER_ACCOUNT - 1)
        assert admin_sign_in(PASSWORD).status_code == 302


def test_admin_sign_ins_and_their_failures_are_audited_like_the_pages(staff: User) -> None:
    admin_sign_in("wrong")
    admin_sign_in(PASSWORD)

    events = AuditEvent.objects.order_by("pk")
    assert [(event.kind, event.username, event.detail["path"]) for event in events] == [
        (AuditEvent.Kind.SIGNIN_FAILED, "root", "/admin/login/"),
        (AuditEvent.Kind.SIGNIN_SUCCEEDED, "root", "/admin/login/"),
    ]
