"""How much one address may ask of the Digital Link: look-ups, and codes found not to be genuine.

A serial harvester walks through serial numbers from one address; a shopper
scans a few packs. ``settings.DIGITAL_LINK_THROTTLE_RATES`` is set small
here, so that each allowance runs out within a test. The later tests are a
review's findings on the first version: requests in flight, refusals that
are kept, IPv6, API tokens.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

from ledger import services as ledger
from tests.conftest import Persona
from tests.scenarios import register_batch
from traceability import gs1, services
from traceability.consumer import reads, throttle
from traceability.models import AuditEvent, Batch, Product, VerificationRequest
from traceability.rates import parse_rate

HARVESTER, SHOPPER = "203.0.113.7", "198.51.100.20"
REQUESTER = "4099998000013"  # a GLN (its check digit is right): verification requests name their requester


@pytest.fixture
def batch(manufacturer: Persona, product: Product) -> Batch:
    batch = register_batch(manufacturer, product, "MV2405", 3)
    ledger.ledger_commit()
    return batch


@pytest.fixture
def rates(settings: Any) -> dict[str, str]:
    settings.DIGITAL_LINK_THROTTLE_RATES = {"lookup": "6/min", "miss": "2/hour"}
    return settings.DIGITAL_LINK_THROTTLE_RATES  # type: ignore[no-any-return]


def scan(batch: Batch, serial: str, *, address: str = HARVESTER, **headers: str) -> Any:
    return APIClient().get(f"/01/{batch.product.gtin}/10/{batch.lot}/21/{serial}", REMOTE_ADDR=address, **headers)


def verify(batch: Batch, serial: str, *, address: str = HARVESTER, exp: str | None = None) -> Any:
    expiry = exp if exp is not None else gs1.format_expiry(batch.expires_on)
    query = f"linkType=verificationService&exp={expiry}&reqGLN={REQUESTER}"
    return APIClient().get(f"/01/{batch.product.gtin}/10/{batch.lot}/21/{serial}?{query}", REMOTE_ADDR=address)


def genuine(batch: Batch) -> str:
    return str(batch.serials.values_list("serial", flat=True).first())


def assert_refused(response: Any) -> None:
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_an_address_that_looks_up_too_many_codes_waits_and_others_do_not(batch: Batch, rates: dict[str, str]) -> None:
    serial = genuine(batch)
    for _ in range(6):
        assert scan(batch, serial).status_code == 200
    refused = scan(batch, serial)
    assert_refused(refused)
    assert int(refused["Retry-After"]) <= 60
    assert "Too many look-ups" in refused.content.decode()
    assert "Morbivax" not in refused.content.decode()  # nothing about the pack was read
    assert scan(batch, serial, address=SHOPPER).status_code == 200
    with time_machine.travel(timezone.now() + timezone.timedelta(seconds=61)):
        assert scan(batch, serial).status_code == 200


@pytest.mark.django_db
def test_a_refused_look_up_asked_for_json_is_problem_json(batch: Batch, rates: dict[str, str]) -> None:
    for _ in range(6):
        scan(batch, genuine(batch))
    refused = scan(batch, genuine(batch), HTTP_ACCEPT="application/linkset+json")
    assert_refused(refused)
    assert refused["Content-Type"] == "application/problem+json"
    assert refused.json()["status"] == 429


@pytest.mark.django_db
def test_serials_never_issued_run_out_the_address_s_allowance_for_every_code(
    batch: Batch, rates: dict[str, str]
) -> None:
    for harvested in ("100001", "100002"):
        page = scan(batch, harvested)
        assert page.status_code == 200  # the counterfeit warning, as always
        assert "never issued for this batch" in page.content.decode()
    assert_refused(scan(batch, genuine(batch)))  # even a genuine code: the next guess is not answered
    assert scan(batch, genuine(batch), address=SHOPPER).status_code == 200


@pytest.mark.django_db
def test_genuine_codes_do_not_count_as_misses(batch: Batch, rates: dict[str, str]) -> None:
    serials = list(batch.serials.values_list("serial", flat=True))
    for serial in serials * 2:  # six look-ups, all of issued serials: the lookup allowance, not the miss one
        assert scan(batch, serial).status_code == 200


@pytest.mark.django_db
def test_unknown_lots_and_products_count_as_misses(batch: Batch, rates: dict[str, str]) -> None:
    client = APIClient()
    assert client.get(f"/01/{batch.product.gtin}/10/NOSUCHLOT", REMOTE_ADDR=HARVESTER).status_code == 404
    unregistered = "0409999899999" + gs1.check_digit("0409999899999")
    assert client.get(f"/01/{unregistered}", REMOTE_ADDR=HARVESTER).status_code == 404
    assert_refused(scan(batch, genuine(batch)))


@pytest.mark.django_db
def test_answers_that_depend_on_the_link_alone_are_not_counted(batch: Batch, settings: Any) -> None:
    settings.DIGITAL_LINK_THROTTLE_RATES = {"lookup": "1/min", "miss": "1/hour"}
    client = APIClient()
    for _ in range(3):
        assert client.get("/01/12345", REMOTE_ADDR=HARVESTER).status_code == 400  # malformed
        short = batch.product.gtin.lstrip("0")
        assert client.get(f"/01/{short}", REMOTE_ADDR=HARVESTER).status_code == 301  # a short GTIN's redirect
    assert scan(batch, genuine(batch)).status_code == 200


@pytest.mark.django_db
def test_verification_requests_over_the_allowance_are_refused_and_not_kept(batch: Batch, rates: dict[str, str]) -> None:
    for _ in range(6):
        assert verify(batch, genuine(batch)).json()["data"]["verified"] is True
    kept = VerificationRequest.objects.count()
    refused = verify(batch, genuine(batch))
    assert_refused(refused)
    assert refused["Content-Type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    assert_refused(verify(batch, genuine(batch), exp="991399"))  # the 13th month: a 400 otherwise, and kept
    assert VerificationRequest.objects.count() == kept
    assert verify(batch, genuine(batch), address=SHOPPER).status_code == 200


@pytest.mark.django_db
def test_verification_of_codes_not_genuine_counts_as_misses(batch: Batch, rates: dict[str, str]) -> None:
    for harvested in ("100001", "100002"):
        answer = verify(batch, harvested)
        assert answer.status_code == 200
        assert answer.json()["data"]["verified"] is False
    assert_refused(verify(batch, genuine(batch)))
    assert_refused(scan(batch, genuine(batch)))  # one allowance for the page and verification


# What the first version missed (a review's findings) ---------------------------------------------------------


def verification_path(batch: Batch, serial: str) -> str:
    return f"/01/{batch.product.gtin}/10/{batch.lot}/21/{serial}"


@pytest.mark.django_db
def test_retry_after_is_the_end_of_the_allowance_s_window(batch: Batch, rates: dict[str, str]) -> None:
    with time_machine.travel(datetime.datetime(2026, 11, 29, 12, 0, 10, tzinfo=datetime.UTC), tick=False):
        for harvested in ("100001", "100002"):
            scan(batch, harvested)
        refused = scan(batch, genuine(batch))
    assert_refused(refused)
    assert int(refused["Retry-After"]) == 3600 - 10  # the hour's window of misses ends at 13:00


@pytest.mark.django_db
def test_misses_are_reserved_before_the_look_up_so_requests_in_flight_get_no_more(
    batch: Batch, rates: dict[str, str]
) -> None:
    factory = RequestFactory()
    in_flight = [factory.get("/01/x", REMOTE_ADDR=HARVESTER) for _ in range(3)]
    assert throttle.admit(in_flight[0]) is None
    assert throttle.admit(in_flight[1]) is None
    assert throttle.admit(in_flight[2]) is not None  # two may yet be misses: a third waits
    throttle.found(in_flight[0])  # the first was a genuine code: its miss is given back
    assert throttle.admit(factory.get("/01/x", REMOTE_ADDR=HARVESTER)) is None


@pytest.mark.django_db
def test_a_malformed_verification_request_is_kept_and_counts_as_a_miss(batch: Batch, rates: dict[str, str]) -> None:
    query = f"?linkType=verificationService&reqGLN={REQUESTER}"
    client = APIClient()
    for _ in range(2):
        malformed = client.get(verification_path(batch, "BAD%20SERIAL") + query, REMOTE_ADDR=HARVESTER)
        assert malformed.status_code == 400
    assert VerificationRequest.objects.count() == 2
    assert_refused(client.get(verification_path(batch, "BAD%20SERIAL") + query, REMOTE_ADDR=HARVESTER))
    assert VerificationRequest.objects.count() == 2


@pytest.mark.django_db
def test_refused_verification_requests_and_unknown_gtins_count_as_misses(batch: Batch, rates: dict[str, str]) -> None:
    bad_token = APIClient().get(
        verification_path(batch, genuine(batch))
        + f"?linkType=verificationService&exp={gs1.format_expiry(batch.expires_on)}&reqGLN={REQUESTER}",
        REMOTE_ADDR=HARVESTER,
        HTTP_AUTHORIZATION="Token not-a-token",
    )
    assert bad_token.status_code == 401
    unregistered = "0409999899999" + gs1.check_digit("0409999899999")
    unknown = APIClient().get(
        f"/01/{unregistered}/10/L1/21/S1?linkType=verificationService&exp=301231&reqGLN={REQUESTER}",
        REMOTE_ADDR=HARVESTER,
    )
    assert unknown.status_code == 404
    assert_refused(verify(batch, genuine(batch)))


@pytest.mark.django_db
def test_an_ipv6_client_is_counted_by_its_64(batch: Batch, rates: dict[str, str]) -> None:
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::ffff"):
        assert scan(batch, f"10000{host[-1]}", address=host).status_code == 200
    assert_refused(scan(batch, genuine(batch), address="2001:db8:1:2:abcd::9"))
    assert scan(batch, genuine(batch), address="2001:db8:1:3::1").status_code == 200  # another /64


@pytest.mark.django_db
def test_a_partner_s_api_token_is_counted_apart_from_its_address(
    batch: Batch, rates: dict[str, str], pharmacy: Persona
) -> None:
    for harvested in ("100001", "100002"):
        scan(batch, harvested)
    assert_refused(scan(batch, genuine(batch)))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {services.api_token_issue(user=pharmacy.user).key}")
    path = f"/01/{batch.product.gtin}/10/{batch.lot}/21/{genuine(batch)}"
    assert client.get(path, REMOTE_ADDR=HARVESTER).status_code == 200


def test_a_rate_that_is_not_one_stops_the_start_saying_how_to_write_it() -> None:
    assert parse_rate("300/min") == (300, 60)
    assert parse_rate("30/hour") == (30, 3600)
    assert parse_rate("30/hours") == (30, 3600)
    for wrong in ("", "300", "0/min", "ten/min", "300/fortnight"):
        with pytest.raises(ImproperlyConfigured, match="write a count per s, min, hour or day"):
            parse_rate(wrong)


@pytest.mark.django_db
def test_a_client_past_its_misses_is_in_the_audit_log_once_a_window(batch: Batch, rates: dict[str, str]) -> None:
    for harvested in ("100001", "100002"):
        scan(batch, harvested)
    assert not AuditEvent.objects.filter(kind=AuditEvent.Kind.CODES_NOT_GENUINE).exists()
    for guess in ("100003", "100004", "100005"):
        assert_refused(scan(batch, guess))
    event = AuditEvent.objects.get(kind=AuditEvent.Kind.CODES_NOT_GENUINE)
    assert event.remote_addr == HARVESTER
    assert event.detail == {"path": f"/01/{batch.product.gtin}/10/{batch.lot}/21/100003", "allowed": 2}


@pytest.mark.django_db
def test_a_client_over_both_allowances_is_told_the_later_end(batch: Batch, settings: Any) -> None:
    settings.DIGITAL_LINK_THROTTLE_RATES = {"lookup": "3/min", "miss": "2/hour"}
    with time_machine.travel(datetime.datetime(2026, 11, 29, 12, 0, 10, tzinfo=datetime.UTC), tick=False):
        for harvested in ("100001", "100002"):
            scan(batch, harvested)
        assert int(scan(batch, genuine(batch))["Retry-After"]) == 3590  # the misses' hour
        assert int(scan(batch, genuine(batch))["Retry-After"]) == 3590  # over both: still the later


@pytest.mark.django_db
def test_a_look_up_that_fails_uses_no_miss(batch: Batch, rates: dict[str, str], monkeypatch: Any) -> None:
    def database_down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("the database is down")

    monkeypatch.setattr(reads, "pack_read", database_down)
    client = APIClient(raise_request_exception=False)
    for _ in range(3):
        assert (
            client.get(f"/01/{batch.product.gtin}/10/{batch.lot}/21/100001", REMOTE_ADDR=HARVESTER).status_code == 500
        )
    monkeypatch.undo()
    assert scan(batch, genuine(batch)).status_code == 200
