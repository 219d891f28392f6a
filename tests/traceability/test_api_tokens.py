"""API tokens: issued at each sign-in, kept as digests, revoked by the client holding them.

``pharmacy`` signs in from two clients (a dispensing terminal and a laptop), each with its own token.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tests import factories
from tests.conftest import Persona
from traceability import services
from traceability.models import ApiToken, AuditEvent

PASSWORD = "correct horse battery staple"  # the factories' password
TOKEN = reverse("api-token")
ME = reverse("api-me")
NOW = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)


def sign_in(username: str = "pharmacy", password: str = PASSWORD) -> dict[str, Any]:
    response = APIClient().post(TOKEN, {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    answer: dict[str, Any] = response.json()
    return answer


def bearer(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def who_am_i(key: str) -> int:
    return bearer(key).get(ME).status_code


# Issuing -------------------------------------------------------------------------------


def test_a_sign_in_answers_the_key_once_and_the_database_keeps_only_its_digest(pharmacy: Persona) -> None:
    answer = sign_in()
    key = answer["token"]

    assert set(answer) == {"token", "prefix", "created_at", "expires_at"}
    assert len(key) >= 43  # secrets.token_urlsafe(32): 256 random bits
    assert answer["prefix"] == key[:8]
    token = ApiToken.objects.get()
    assert (token.user, token.prefix) == (pharmacy.user, key[:8])
    assert token.digest == hashlib.sha256(key.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM traceability_apitoken")
        row = cursor.fetchone()
        cursor.execute("SELECT * FROM traceability_auditevent")
        audit_rows = cursor.fetchall()
    stored = " ".join(str(value) for value in [*row, *(value for rows in audit_rows for value in rows)])
    assert key[8:] not in stored  # no more of the key than its prefix, in any column


def test_a_token_expires_api_token_days_after_it_was_issued(pharmacy: Persona, settings: Any) -> None:
    settings.API_TOKEN_DAYS = 30
    with time_machine.travel(NOW, tick=False):
        answer = sign_in()
    issued = datetime.datetime.fromisoformat(answer["created_at"])
    assert datetime.datetime.fromisoformat(answer["expires_at"]) == issued + datetime.timedelta(days=30)

    with time_machine.travel(NOW + datetime.timedelta(days=30, seconds=-1), tick=False):
        assert who_am_i(answer["token"]) == 200
    with time_machine.travel(NOW + datetime.timedelta(days=30), tick=False):
        refused = bearer(answer["token"]).get(ME)
        assert refused.status_code == 401
        assert refused.json() == {"detail": "Token expired: sign in again for a new one."}
        assert who_am_i(sign_in()["token"]) == 200  # a new sign-in, a new token

    settings.API_TOKEN_DAYS = 0  # no expiry, for the tokens issued from now on
    with time_machine.travel(NOW, tick=False):
        lasting = sign_in()
    assert lasting["expires_at"] is None
    with time_machine.travel(NOW + datetime.timedelta(days=3650), tick=False):
        assert who_am_i(lasting["token"]) == 200
        assert who_am_i(answer["token"]) == 401  # its expiry was fixed when it was issued


def test_two_sign_ins_give_two_different_tokens_that_both_work(pharmacy: Persona) -> None:
    terminal, laptop = sign_in()["token"], sign_in()["token"]

    assert terminal != laptop
    assert ApiToken.objects.filter(user=pharmacy.user).count() == 2
    assert who_am_i(terminal) == who_am_i(laptop) == 200
    assert bearer(laptop).get(ME).json()["username"] == "pharmacy"


def test_a_stale_token_in_the_headers_does_not_stop_a_client_signing_in_again(pharmacy: Persona) -> None:
    client = bearer("revoked-long-ago")

    response = client.post(TOKEN, {"username": "pharmacy", "password": PASSWORD}, format="json")

    assert response.status_code == 200
    assert who_am_i(response.json()["token"]) == 200


# Revoking ------------------------------------------------------------------------------


def test_delete_revokes_the_presenting_token_only(pharmacy: Persona) -> None:
    terminal, laptop = sign_in(), sign_in()

    response = bearer(terminal["token"]).delete(TOKEN)

    assert response.status_code == 204
    assert who_am_i(terminal["token"]) == 401
    assert who_am_i(laptop["token"]) == 200
    assert list(ApiToken.objects.values_list("prefix", flat=True)) == [laptop["prefix"]]
    revoked = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_REVOKED)
    assert (revoked.user, revoked.organisation) == (pharmacy.user, pharmacy.organisation)
    assert revoked.detail == {"holder": "pharmacy", "prefix": terminal["prefix"]}
    assert bearer(terminal["token"]).delete(TOKEN).status_code == 401  # gone: nothing left to revoke


def test_delete_without_a_token_revokes_nothing(pharmacy: Persona) -> None:
    key = sign_in()["token"]
    session = APIClient()
    session.force_login(pharmacy.user)

    assert session.delete(TOKEN).status_code == 401
    assert APIClient().delete(TOKEN).status_code == 401
    assert who_am_i(key) == 200
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.TOKEN_REVOKED).exists()


# Refusing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda key: key[:-1], id="truncated"),
        pytest.param(lambda key: key[:8], id="prefix only"),
        pytest.param(lambda key: key + "A", id="extended"),
        pytest.param(lambda key: key[:-1] + ("B" if key.endswith("A") else "A"), id="last character changed"),
        pytest.param(lambda key: key.upper() if key.upper() != key else key.lower(), id="case changed"),
        pytest.param(lambda key: ApiToken.digest_of(key), id="its digest, as a stolen database holds it"),
    ],
)
def test_a_wrong_key_is_refused(pharmacy: Persona, mangle: Any) -> None:
    key = sign_in()["token"]

    response = bearer(mangle(key)).get(ME)

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."
    assert who_am_i(key) == 200


def test_an_inactive_users_token_is_refused(pharmacy: Persona) -> None:
    key = services.api_token_issue(user=pharmacy.user).key
    User.objects.filter(pk=pharmacy.user.pk).update(is_active=False)

    response = bearer(key).get(ME)

    assert response.status_code == 401
    assert response.json()["detail"] == "User inactive or deleted."


# The sign-in lock-out -----------------------------------------------------------------
# The token endpoint is a way to sign in like the page: the same count of failures per account (and per address)
# in the cache, the same lock (traceability/signin.py). Each failure below comes from an address of its own, so
# only the account's count is at stake.

LOCKED = "Too many failed sign-ins for this account or from this address."


def ask_for_a_token(username: str, password: str, address: str = "198.51.100.7") -> Any:
    return APIClient(REMOTE_ADDR=address).post(TOKEN, {"username": username, "password": password}, format="json")


def fail_on_the_page(username: str, times: int) -> None:
    for attempt in range(times):
        response = Client(REMOTE_ADDR=f"192.0.2.{attempt + 1}").post(
            reverse("login"), {"username": username, "password": "wrong"}
        )
        assert response.status_code == 200


def assert_locked_out(response: Any, settings: Any) -> None:
    assert response.status_code == 429
    assert response["Retry-After"] == str(settings.LOGIN_LOCKOUT_SECONDS)
    assert response.json()["detail"].startswith(LOCKED)


def test_an_account_locked_on_the_sign_in_page_gets_no_token_even_for_the_right_password(
    pharmacy: Persona, settings: Any
) -> None:
    fail_on_the_page("pharmacy", settings.LOGIN_FAILURES_PER_ACCOUNT)

    assert_locked_out(ask_for_a_token("pharmacy", PASSWORD, address="203.0.113.9"), settings)
    assert not ApiToken.objects.exists()


def test_wrong_passwords_sent_for_a_token_lock_the_account_on_the_page_and_the_api(
    pharmacy: Persona, settings: Any
) -> None:
    for attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        assert ask_for_a_token("PHARMACY", "wrong", address=f"192.0.2.{attempt + 1}").status_code == 400
    failed = AuditEvent.objects.filter(kind=AuditEvent.Kind.SIGNIN_FAILED, detail__path=TOKEN)
    assert failed.count() == settings.LOGIN_FAILURES_PER_ACCOUNT  # each audited, as before

    page = Client(REMOTE_ADDR="203.0.113.9").post(reverse("login"), {"username": "pharmacy", "password": PASSWORD})
    assert page.status_code == 429
    assert "_auth_user_id" not in page.client.session
    assert_locked_out(ask_for_a_token("pharmacy", PASSWORD, address="203.0.113.10"), settings)
    assert not ApiToken.objects.exists()


def test_a_locked_unknown_username_is_answered_exactly_like_a_locked_real_one(pharmacy: Persona, settings: Any) -> None:
    for attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        ask_for_a_token("pharmacy", "wrong", address=f"192.0.2.{attempt + 1}")
        ask_for_a_token("nobody-here", "wrong", address=f"192.0.2.{attempt + 1}")

    real, unknown = ask_for_a_token("pharmacy", PASSWORD), ask_for_a_token("nobody-here", PASSWORD)

    assert_locked_out(real, settings)
    assert (real.status_code, real.json(), real["Retry-After"]) == (
        unknown.status_code,
        unknown.json(),
        unknown["Retry-After"],
    )


def test_one_address_guessing_many_accounts_through_the_api_is_locked_out(pharmacy: Persona, settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_ADDRESS = 3  # below the endpoint's 10 requests a minute per address
    for attempt in range(settings.LOGIN_FAILURES_PER_ADDRESS):
        assert ask_for_a_token(f"guess-{attempt}", "wrong").status_code == 400

    assert_locked_out(ask_for_a_token("pharmacy", PASSWORD), settings)
    assert ask_for_a_token("pharmacy", PASSWORD, address="203.0.113.9").status_code == 200


def test_a_token_sign_in_clears_the_accounts_failures(pharmacy: Persona, settings: Any) -> None:
    for _round in range(2):
        for attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT - 1):
            ask_for_a_token("pharmacy", "wrong", address=f"192.0.2.{attempt + 1}")
        assert ask_for_a_token("pharmacy", PASSWORD).status_code == 200


def test_the_lock_on_the_token_endpoint_lifts_after_the_lockout_time(pharmacy: Persona, settings: Any) -> None:
    with time_machine.travel(NOW, tick=False) as traveller:
        fail_on_the_page("pharmacy", settings.LOGIN_FAILURES_PER_ACCOUNT)
        traveller.shift(datetime.timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS - 1))
        assert ask_for_a_token("pharmacy", PASSWORD).status_code == 429

        traveller.shift(datetime.timedelta(seconds=1))
        assert ask_for_a_token("pharmacy", PASSWORD).status_code == 200


# Last use ------------------------------------------------------------------------------


def token_updates(key: str) -> tuple[int, int]:
    """One signed-in read: its number of queries, and how many of them wrote to the token."""
    with CaptureQueriesContext(connection) as captured:
        assert who_am_i(key) == 200
    queries = [query["sql"] for query in captured.captured_queries]
    return len(queries), sum(1 for sql in queries if sql.startswith("UPDATE") and "apitoken" in sql)


def test_last_use_is_recorded_at_most_once_a_minute(pharmacy: Persona) -> None:
    with time_machine.travel(NOW, tick=False) as traveller:
        issued = services.api_token_issue(user=pharmacy.user)
        assert issued.token.last_used_at is None

        assert token_updates(issued.key) == (2, 1)  # the lookup (user, membership, organisation) and the UPDATE
        issued.token.refresh_from_db()
        assert issued.token.last_used_at == NOW

        traveller.shift(datetime.timedelta(seconds=59))
        assert token_updates(issued.key) == (1, 0)  # only the lookup
        issued.token.refresh_from_db()
        assert issued.token.last_used_at == NOW

        traveller.shift(datetime.timedelta(seconds=2))
        assert token_updates(issued.key) == (2, 1)
        issued.token.refresh_from_db()
        assert issued.token.last_used_at == NOW + datetime.timedelta(seconds=61)


# The admin -----------------------------------------------------------------------------


def test_staff_see_and_revoke_tokens_in_the_admin_but_never_their_digests(pharmacy: Persona) -> None:
    terminal, laptop = sign_in(), sign_in()
    token = ApiToken.objects.get(prefix=terminal["prefix"])
    staff = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)

    listing = client.get("/admin/traceability/apitoken/")
    page = client.get(f"/admin/traceability/apitoken/{token.pk}/change/")

    assert listing.status_code == page.status_code == 200
    assert terminal["prefix"].encode() in listing.content
    assert laptop["prefix"].encode() in listing.content
    for shown in (listing, page):
        for each in ApiToken.objects.all():
            assert each.digest.encode() not in shown.content
    assert b'name="_save"' not in page.content
    assert client.get("/admin/traceability/apitoken/add/").status_code == 403

    response = client.post(f"/admin/traceability/apitoken/{token.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert who_am_i(terminal["token"]) == 401
    assert who_am_i(laptop["token"]) == 200
    revoked = AuditEvent.objects.get(kind=AuditEvent.Kind.TOKEN_REVOKED)
    assert (revoked.user, revoked.detail) == (staff, {"holder": "pharmacy", "prefix": terminal["prefix"]})


# The migration from DRF's tokens -------------------------------------------------------

BEFORE = ("traceability", "0007_dispensing")
DRF_KEY = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"  # DRF's format: 40 hexadecimal digits
DRF_CREATED = datetime.datetime(2025, 11, 3, 14, 30, 5, 123456, tzinfo=datetime.UTC)


@pytest.fixture
def before_hashed_tokens(transactional_db: None) -> Iterator[MigrationExecutor]:
    """The database as it was before migration 0008, with DRF's token table; migrated forward at the end, whatever."""
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    try:
        yield executor
    finally:
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_the_migration_copies_drf_tokens_so_their_keys_keep_working(before_hashed_tokens: MigrationExecutor) -> None:
    user = factories.UserFactory(username="legacy-client")
    factories.MembershipFactory(user=user)
    created = "timestamp with time zone" if connection.vendor == "postgresql" else "datetime"
    with connection.cursor() as cursor:
        cursor.execute(
            'CREATE TABLE authtoken_token ("key" varchar(40) NOT NULL PRIMARY KEY, '
            f'"created" {created} NOT NULL, "user_id" integer NOT NULL UNIQUE REFERENCES auth_user (id))'
        )
        cursor.execute(
            'INSERT INTO authtoken_token ("key", created, user_id) VALUES (%s, %s, %s)',
            [DRF_KEY, connection.ops.adapt_datetimefield_value(DRF_CREATED), user.pk],
        )

    before_hashed_tokens.loader.build_graph()
    before_hashed_tokens.migrate(before_hashed_tokens.loader.graph.leaf_nodes())

    assert "authtoken_token" not in connection.introspection.table_names()
    token = ApiToken.objects.get()
    assert (token.user, token.prefix, token.created_at) == (user, DRF_KEY[:8], DRF_CREATED)
    assert token.expires_at is not None
    assert token.expires_at - timezone.now() > datetime.timedelta(days=89)  # a full API_TOKEN_DAYS from the upgrade
    assert token.digest == hashlib.sha256(DRF_KEY.encode()).hexdigest()
    response = bearer(DRF_KEY).get(ME)
    assert response.status_code == 200
    assert response.json()["username"] == "legacy-client"
