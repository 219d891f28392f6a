"""The audit log: each kind of event is recorded where it happens, and the database refuses to change it."""

from __future__ import annotations

import getpass
import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client

from ledger import services as ledger
from ledger.models import Entry, SigningKey
from tests import factories
from tests.conftest import Persona
from tests.scenarios import register_batch
from traceability import audit, services
from traceability.models import AuditEvent, Batch, Membership, Recall
from traceability.services.recalls import RecallItemSpec

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery staple"  # the factories' password
Kind = AuditEvent.Kind


def only(kind: str) -> AuditEvent:
    events = list(AuditEvent.objects.filter(kind=kind))
    assert len(events) == 1, f"{len(events)} {kind} events"
    return events[0]


def sign_in(username: str, password: str, address: str = "198.51.100.7") -> Any:
    return Client(REMOTE_ADDR=address).post("/accounts/login/", {"username": username, "password": password})


# Sign-ins ----------------------------------------------------------------------------------


def test_a_sign_in_to_the_pages_is_recorded_with_who_from_where_and_the_request(pharmacy: Persona) -> None:
    response = sign_in("pharmacy", PASSWORD)
    assert response.status_code == 302
    event = only(Kind.SIGNIN_SUCCEEDED)
    assert (event.user, event.username, event.organisation) == (pharmacy.user, "pharmacy", pharmacy.organisation)
    assert event.remote_addr == "198.51.100.7"
    assert event.request_id == response["X-Request-ID"]
    assert event.detail == {"path": "/accounts/login/"}


def test_a_failed_sign_in_keeps_the_name_as_typed_and_never_the_password(pharmacy: Persona) -> None:
    assert sign_in("PHARMACY", "hunter2-wrong").status_code == 200
    event = only(Kind.SIGNIN_FAILED)
    assert (event.user, event.organisation, event.username) == (None, None, "PHARMACY")
    assert event.remote_addr == "198.51.100.7"
    assert "hunter2" not in json.dumps(event.detail)


def test_the_failures_that_lock_an_account_are_recorded_and_the_locked_attempts_write_nothing(
    pharmacy: Persona, settings: Any
) -> None:
    """While locked, the password is not checked; so the log cannot be flooded through the sign-in form."""
    for _attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        sign_in("pharmacy", "wrong")
    for _attempt in range(3):
        assert sign_in("pharmacy", PASSWORD).status_code == 429
    assert AuditEvent.objects.filter(kind=Kind.SIGNIN_FAILED).count() == settings.LOGIN_FAILURES_PER_ACCOUNT
    assert not AuditEvent.objects.filter(kind=Kind.SIGNIN_SUCCEEDED).exists()


def test_api_token_requests_are_recorded_whether_they_succeed_or_fail(carrier: Persona, anonymous: Any) -> None:
    ok = anonymous.post("/api/v1/auth/token", {"username": "carrier", "password": PASSWORD}, format="json")
    wrong = anonymous.post("/api/v1/auth/token", {"username": "carrier", "password": "nope"}, format="json")
    assert (ok.status_code, wrong.status_code) == (200, 400)
    succeeded, failed = only(Kind.SIGNIN_SUCCEEDED), only(Kind.SIGNIN_FAILED)
    assert (succeeded.user, succeeded.organisation) == (carrier.user, carrier.organisation)
    assert succeeded.detail == {"path": "/api/v1/auth/token"}
    assert (failed.user, failed.username, failed.detail) == (None, "carrier", {"path": "/api/v1/auth/token"})


def test_a_failed_sign_in_to_the_admin_is_recorded() -> None:
    Client().post("/admin/login/", {"username": "root", "password": "guess"})
    assert only(Kind.SIGNIN_FAILED).detail == {"path": "/admin/login/"}


# Refusals ----------------------------------------------------------------------------------


def test_a_page_that_refuses_a_read_only_member_is_recorded(manufacturer: Persona) -> None:
    Membership.objects.filter(user=manufacturer.user).update(role=Membership.Role.VIEWER)
    client = Client()
    client.force_login(manufacturer.user)
    assert client.get("/manufacturer/batches/new").status_code == 403
    event = only(Kind.ACCESS_DENIED)
    assert (event.user, event.organisation) == (manufacturer.user, manufacturer.organisation)
    assert event.detail == {"method": "GET", "path": "/manufacturer/batches/new", "status": 403, "reason": ""}


def test_a_form_posted_without_its_csrf_token_is_recorded() -> None:
    response = Client(enforce_csrf_checks=True).post("/accounts/login/", {"username": "x", "password": "y"})
    assert response.status_code == 403
    assert only(Kind.ACCESS_DENIED).detail["path"] == "/accounts/login/"


def test_api_refusals_are_recorded_with_their_reason(anonymous: Any) -> None:
    outsider = factories.UserFactory(username="outsider")  # signed in, but no organisation's member
    client = Client()
    client.force_login(outsider)
    assert anonymous.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/batches/").status_code == 403
    unauthenticated, forbidden = AuditEvent.objects.filter(kind=Kind.ACCESS_DENIED).order_by("id")
    assert unauthenticated.user is None
    assert unauthenticated.detail["status"] == 401
    assert "credentials were not provided" in unauthenticated.detail["reason"]
    assert (forbidden.user, forbidden.detail["status"]) == (outsider, 403)
    assert forbidden.detail["reason"] == "Sign in as a member of an organisation."


def test_an_anonymous_address_is_recorded_once_a_minute_and_a_signed_in_user_every_time(
    anonymous: Any, pharmacy: Persona
) -> None:
    outsider = factories.UserFactory(username="outsider")
    client = Client()
    client.force_login(outsider)
    for _attempt in range(3):
        assert anonymous.get("/api/v1/me").status_code == 401
        assert client.get("/api/v1/batches/").status_code == 403
    assert Client(REMOTE_ADDR="192.0.2.8").get("/api/v1/me").status_code == 401
    denied = AuditEvent.objects.filter(kind=Kind.ACCESS_DENIED)
    assert sorted((event.remote_addr, event.username) for event in denied) == [
        ("127.0.0.1", ""),
        ("127.0.0.1", "outsider"),
        ("127.0.0.1", "outsider"),
        ("127.0.0.1", "outsider"),
        ("192.0.2.8", ""),
    ]


def test_an_ordinary_not_found_is_not_an_audit_event(pharmacy: Persona) -> None:
    assert pharmacy.client().get("/api/v1/batches/999999/").status_code == 404
    assert not AuditEvent.objects.exclude(kind=Kind.SIGNIN_SUCCEEDED).exists()


# Recalls -----------------------------------------------------------------------------------


@pytest.fixture
def batch(manufacturer: Persona) -> Batch:
    return register_batch(manufacturer, factories.ProductFactory(manufacturer=manufacturer.organisation))


def test_a_recall_issued_acknowledged_and_closed_leaves_three_events(
    batch: Batch, regulator: Persona, manufacturer: Persona
) -> None:
    recall = services.recall_issue(
        actor=regulator.user,
        password=PASSWORD,
        items=[RecallItemSpec(batch)],
        classification=Recall.Class.I,
        depth=Recall.Depth.CONSUMER,
        reason="Vials may contain particles.",
        instructions="Quarantine every pack.",
    )
    services.recall_acknowledge(actor=manufacturer.user, recall=recall, units_found=7)
    services.recall_close(actor=regulator.user, recall=recall, note="Every holder accounted for.")

    issued, acknowledged, closed = (only(kind) for kind in ("recall.issued", "recall.acknowledged", "recall.closed"))
    assert (issued.user, issued.organisation) == (regulator.user, regulator.organisation)
    assert issued.detail == {"recall": recall.reference, "batches": [batch.pk]}
    assert (acknowledged.user, acknowledged.organisation) == (manufacturer.user, manufacturer.organisation)
    assert acknowledged.detail == {"recall": recall.reference, "units_found": 7}
    assert (closed.user, closed.detail) == (regulator.user, {"recall": recall.reference})


def test_a_refused_recall_leaves_no_recall_event(batch: Batch, regulator: Persona) -> None:
    with pytest.raises(Exception, match="password"):
        services.recall_issue(
            actor=regulator.user,
            password="not it",
            items=[RecallItemSpec(batch)],
            classification=Recall.Class.I,
            depth=Recall.Depth.CONSUMER,
            reason="Vials may contain particles.",
            instructions="Quarantine every pack.",
        )
    assert not AuditEvent.objects.filter(kind=Kind.RECALL_ISSUED).exists()


# The ledger's commands and the EPCIS query ---------------------------------------------------


def test_a_key_rotation_is_recorded_with_the_new_key_and_who_ran_it(batch: Batch) -> None:
    call_command("ledger_rotate_key", stdout=io.StringIO())
    event = only(Kind.KEY_ROTATED)
    active = SigningKey.objects.get(retired_at__isnull=True)
    assert event.user is None
    assert event.detail == {"key_id": active.key_id, "name": active.name, "system_user": getpass.getuser()}


def test_a_ledger_export_is_recorded_with_where_it_went(batch: Batch, tmp_path: Path) -> None:
    ledger.ledger_commit()
    call_command("ledger_export", str(tmp_path / "bundle"), stdout=io.StringIO())
    event = only(Kind.LEDGER_EXPORTED)
    assert event.detail["directory"] == str(tmp_path / "bundle")
    assert event.detail["entries"] == Entry.objects.count() > 0


def test_an_epcis_query_is_recorded_with_its_parameters(batch: Batch, regulator: Persona) -> None:
    response = regulator.client().get("/api/v1/epcis/events", {"gtin": batch.product.gtin, "perPage": "10"})
    assert response.status_code == 200
    event = only(Kind.EPCIS_QUERIED)
    assert (event.user, event.organisation) == (regulator.user, regulator.organisation)
    assert event.detail == {"query": {"gtin": batch.product.gtin, "perPage": "10"}, "events": 1}


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not an audit event kind"):
        audit.record("recall.isued")


# What PostgreSQL cannot store ------------------------------------------------------------------


def test_a_path_with_a_nul_is_still_refused_with_a_401_and_recorded_with_the_symbol_for_nul(anonymous: Any) -> None:
    assert anonymous.get("/api/v1/devices/a%00b/").status_code == 401
    assert only(Kind.ACCESS_DENIED).detail["path"] == "/api/v1/devices/a\N{SYMBOL FOR NULL}b/"


def test_an_epcis_query_with_a_nul_is_answered_and_recorded_as_asked(batch: Batch, carrier: Persona) -> None:
    """The NUL is in the URI's fragment, which the class filter does not read: the query is valid."""
    asked = f"https://id.gs1.org/01/{batch.product.gtin}#\x00"
    assert carrier.client().get("/api/v1/epcis/events", {"MATCH_anyEPCClass": asked}).status_code == 200
    recorded = only(Kind.EPCIS_QUERIED).detail["query"]["MATCH_anyEPCClass"]
    assert recorded == f"https://id.gs1.org/01/{batch.product.gtin}#\N{SYMBOL FOR NULL}"


def test_a_nul_a_lone_surrogate_or_an_infinite_number_is_recorded_as_a_symbol_anywhere() -> None:
    audit.record("signin.failed", username="mal\x00lory", sent={"key\x00": ["\ud800", float("inf")]})
    event = AuditEvent.objects.get()
    assert event.username == "mal\N{SYMBOL FOR NULL}lory"
    assert event.detail["sent"] == {"key\N{SYMBOL FOR NULL}": ["\N{REPLACEMENT CHARACTER}", "inf"]}


# Append-only -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE traceability_auditevent SET kind = 'signin.succeeded'",
        "UPDATE traceability_auditevent SET detail = '{}'",
        "DELETE FROM traceability_auditevent",
    ],
)
def test_the_database_refuses_to_change_or_delete_audit_events(statement: str) -> None:
    audit.record("signin.failed", username="mallory")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert AuditEvent.objects.get().username == "mallory"


def test_the_orm_cannot_rewrite_or_delete_an_event_either() -> None:
    event = audit.record("signin.failed", username="mallory")
    event.username = "alice"
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.save()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get().username == "mallory"


@pytest.mark.django_db(transaction=True)
def test_committed_events_are_refused_changes_too() -> None:
    """Outside a test's transaction, as in production (and the flush after this test still works)."""
    audit.record("signin.failed", username="mallory")
    with pytest.raises(DatabaseError, match="append-only"):
        AuditEvent.objects.update(username="alice")
    assert AuditEvent.objects.get().username == "mallory"


# The admin ---------------------------------------------------------------------------------


def test_staff_read_the_log_in_the_admin_and_cannot_add_change_or_delete() -> None:
    staff = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    event = audit.record("signin.failed", username="mallory")
    client = Client()
    client.force_login(staff)
    listing = client.get("/admin/traceability/auditevent/")
    assert listing.status_code == 200
    assert b"mallory" in listing.content
    page = client.get(f"/admin/traceability/auditevent/{event.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert client.get("/admin/traceability/auditevent/add/").status_code == 403
    assert client.get(f"/admin/traceability/auditevent/{event.pk}/delete/").status_code == 403
    assert client.post(f"/admin/traceability/auditevent/{event.pk}/change/", {"username": "x"}).status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).username == "mallory"
