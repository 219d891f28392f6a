"""Malformed input to every write endpoint: a 4xx naming what was wrong, never a 500, never a row.

Each endpoint is driven by a persona allowed to write there, with a body that
differs from a valid one (``Endpoint.valid``, itself checked to succeed) in one
way only: the whole body is not JSON, not an object, too big or too deep; or
one field is missing or of the wrong type. Every request runs in a savepoint
and is rolled back, so a request that wrongly writes shows as a failure of its
own case and does not disturb the next. Random bodies (hypothesis) and the
query strings and path parameters of the read endpoints get the same rule:
never a 5xx.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import hypothesis
import pytest
from django.apps import apps
from django.core.cache import cache
from django.db import transaction
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, event, given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.conftest import Persona
from tests.traceability.test_api_access import PASSWORD, World, build_world, member_of
from traceability.models import Membership, Shipment

JSON = "application/json"


@pytest.fixture
def world(personas: dict[str, Persona]) -> World:
    return build_world(personas)


# The endpoints ------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text to splice in where Python's json module would not write it (1e400)."""

    text: str


@dataclass
class Endpoint:
    who: str  # the persona who may write here ("anonymous" for the token endpoint)
    url: Callable[[World], str]
    valid: Callable[[World], dict[str, Any]]
    fields: dict[str, str]  # field name: kind (see wrong_values)
    required: tuple[str, ...]
    status: int  # of the valid body
    writes: dict[str, int] = field(default_factory=dict)  # rows the valid body adds, by model


def _days(days: int) -> str:
    return (timezone.localdate() + datetime.timedelta(days=days)).isoformat()


ENDPOINTS = {
    "token": Endpoint(
        who="anonymous",
        url=lambda w: reverse("api-token"),
        valid=lambda w: {"username": "manufacturer", "password": PASSWORD},
        fields={"username": "text", "password": "secret"},
        required=("username", "password"),
        status=200,
        writes={"traceability.ApiToken": 1},
    ),
    "sites": Endpoint(
        who="admin",
        url=lambda w: reverse("api-site-list"),
        valid=lambda w: {
            "name": "Cold store",
            "gln": "4012345000009",
            "street": "Hafenstrasse 1",
            "city": "Basel",
            "postal_code": "4057",
            "country": "CH",
        },
        fields={
            "name": "text",
            "gln": "code",
            "street": "text",
            "city": "text",
            "postal_code": "text",
            "country": "code",
        },
        required=("name", "gln", "city", "country"),
        status=201,
        writes={"traceability.Site": 1},
    ),
    "products": Endpoint(
        who="manufacturer",
        url=lambda w: reverse("api-product-list"),
        valid=lambda w: {
            "gtin": "09506000134352",
            "name": "Flu vaccine",
            "dosage_form": "suspension for injection",
            "strength": "0.5 ml",
            "storage_profile": "2-8C",
            "freeze_sensitive": True,
            "stability_budget_minutes": 120,
        },
        fields={
            "gtin": "code",
            "name": "text",
            "dosage_form": "text",
            "strength": "note",
            "storage_profile": "code",
            "freeze_sensitive": "bool",
            "stability_budget_minutes": "int",
        },
        required=("gtin", "name", "dosage_form", "storage_profile"),
        status=201,
        writes={"traceability.Product": 1},
    ),
    "batches": Endpoint(
        who="manufacturer",
        url=lambda w: reverse("api-batch-list"),
        valid=lambda w: {
            "gtin": w.product.gtin,
            "lot": "B2",
            "manufactured_on": _days(-1),
            "expiry": _days(365),
            "quantity": 50,
            "serial_count": 5,
        },
        fields={
            "gtin": "code",
            "lot": "text",
            "manufactured_on": "date",
            "expiry": "date",
            "quantity": "int",
            "serial_count": "int",
        },
        required=("gtin", "lot", "manufactured_on", "expiry", "quantity"),
        status=201,
        writes={"traceability.Batch": 1, "traceability.SerialNumber": 5},
    ),
    "shipments": Endpoint(
        who="manufacturer",
        url=lambda w: reverse("api-shipment-list"),
        valid=lambda w: {
            "carrier": w["carrier"].organisation.gln,
            "consignee": w["pharmacy"].organisation.gln,
            "origin": w["manufacturer"].site.gln,
            "destination": w["pharmacy"].site.gln,
            "items": [{"batch": w.batch.pk, "quantity": 5}],
            "logging_interval_seconds": 600,
        },
        fields={
            "carrier": "code",
            "consignee": "code",
            "origin": "code",
            "destination": "code",
            "items": "items",
            "logging_interval_seconds": "int",
        },
        required=("carrier", "consignee", "origin", "destination", "items"),
        status=201,
        writes={"traceability.Shipment": 1, "traceability.ShipmentItem": 1, "traceability.TemperatureContract": 1},
    ),
    "dispatch": Endpoint(
        who="manufacturer",
        url=lambda w: reverse("api-shipment-dispatch", args=[w.planned.pk]),
        valid=lambda w: {"occurred_at": timezone.now().isoformat()},
        fields={"occurred_at": "datetime"},
        required=(),
        status=200,
        writes={"traceability.CustodyEvent": 1},
    ),
    "handover": Endpoint(
        who="carrier",
        url=lambda w: reverse("api-shipment-handover", args=[w.in_transit.pk]),
        valid=lambda w: {
            "to_organisation": w["carrier2"].organisation.gln,
            "site": w["carrier2"].site.gln,
            "location": "Cross-dock, gate 4",
            "note": "seals intact",
            "occurred_at": timezone.now().isoformat(),
        },
        fields={
            "to_organisation": "code",
            "site": "code",
            "location": "note",
            "note": "note",
            "occurred_at": "datetime",
        },
        required=("to_organisation",),
        status=200,
        writes={"traceability.CustodyEvent": 1},
    ),
    "receive": Endpoint(
        who="pharmacy",
        url=lambda w: reverse("api-shipment-receive", args=[w.in_transit.pk]),
        valid=lambda w: {"accept": True, "reason": "all good", "occurred_at": timezone.now().isoformat()},
        fields={"accept": "bool", "reason": "note", "occurred_at": "datetime"},
        required=("accept",),
        status=200,
        writes={"traceability.CustodyEvent": 1},
    ),
}

LONG = "x" * 100_000  # well over every max_length, well under the 1 MB body limit
TEN_MB = "x" * (10 * 1024 * 1024)


def wrong_values(kind: str, world: World) -> list[Any]:
    """Values no field of this kind may accept. Numbers are left out for free text, which DRF coerces ("12")."""
    containers = [True, [], ["a"], {}, {"a": "b"}]
    if kind == "text":
        return [*containers, "", "   ", "a\x00b", LONG]
    if kind == "note":  # optional free text: blank is fine
        return [*containers, "a\x00b", LONG]
    if kind == "secret":  # passwords keep their whitespace
        return [*containers, "", "a\x00b", LONG]
    if kind == "code":  # GS1 keys, GLN references, ISO codes, choices
        return [*containers, "", "a\x00b", LONG, 10**30, -1, 0, 1.5, Raw("1e400")]
    if kind == "int":
        return [*containers, "abc", "", "1.5", 1.5, 10**30, -(10**30), -1, Raw("1e400")]
    if kind == "bool":
        return [[], ["a"], {}, "maybe", "", 2, -1, 1.5, 10**30, Raw("1e400")]
    if kind == "date":
        return [*containers, "", "tomorrow", "2025-13-45", "2025-02-30", 20250101, LONG, Raw("1e400")]
    if kind == "datetime":
        return [
            *containers,
            "",
            "yesterday",
            "2025-02-30T10:00:00Z",
            1_700_000_000,
            LONG,
            "9999-12-31T23:59:59-23:59",  # overflows when converted to UTC
            "0001-01-01T00:00:00+14:00",
            "2999-01-01T00:00:00Z",  # in the future
            "2000-01-01T00:00:00Z",  # before the shipment was created
            timezone.now().replace(tzinfo=None).isoformat(),  # no UTC offset: ambiguous, never taken as UTC
        ]
    if kind == "items":
        batch, theirs = world.batch.pk, world.competitor_batch.pk
        return [
            *containers,
            "abc",
            1,
            [1],
            ["a"],
            [[]],
            [{}],
            [{"batch": batch}],
            [{"quantity": 1}],
            [{"batch": "a", "quantity": 1}],
            [{"batch": batch, "quantity": 0}],
            [{"batch": batch, "quantity": -1}],
            [{"batch": batch, "quantity": 10**30}],
            [{"batch": batch, "quantity": 1_000}],  # more than the stock
            [{"batch": 10**30, "quantity": 1}],
            [{"batch": 2**63 - 1, "quantity": 1}],
            [{"batch": theirs, "quantity": 1}],  # the competitor's
            [{"batch": batch, "quantity": 1}, {"batch": batch, "quantity": 1}],
            [{"batch": batch, "quantity": 1}] * 1001,
        ]
    raise AssertionError(kind)


def dumps(body: Any) -> bytes:
    """JSON text of ``body``, with any ``Raw`` value spliced in verbatim."""
    raws: list[str] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"__raw{len(raws) - 1}__"
        raise TypeError(value)

    text = json.dumps(body, default=mark)
    for index, raw in enumerate(raws):
        text = text.replace(f'"__raw{index}__"', raw)
    return text.encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def malformed_bodies(endpoint: Endpoint, world: World) -> list[tuple[str, bytes, str, set[int]]]:
    """(case, body, content type, acceptable statuses) for the body as a whole."""
    valid = endpoint.valid(world)
    first = next(iter(endpoint.fields))
    json_text = dumps(valid)

    def with_value(raw: bytes) -> bytes:
        """The valid body with its first field set to the JSON text ``raw``."""
        return json_text[:-1] + b', "' + first.encode() + b'": ' + raw + b"}"

    cases = [
        ("JSON array", b"[]", JSON, {400}),
        ("JSON null", b"null", JSON, {400}),
        ("JSON string", b'"a string"', JSON, {400}),
        ("JSON number", b"42", JSON, {400}),
        ("JSON true", b"true", JSON, {400}),
        ("junk bytes", b"\xff\xfe\x00garbage", JSON, {400}),
        ("truncated JSON", json_text[:-1], JSON, {400}),
        ("single quotes", b"{'a': 1}", JSON, {400}),
        ("trailing comma", json_text[:-1] + b",}", JSON, {400}),
        ("NaN", with_value(b"NaN"), JSON, {400}),
        ("Infinity", with_value(b"Infinity"), JSON, {400}),
        ("-Infinity", with_value(b"-Infinity"), JSON, {400}),
        ("100000 open brackets", b"[" * 100_000, JSON, {400}),
        ("arrays nested 500 deep", nested(500).encode(), JSON, {400}),
        # Deeper than Python's recursion limit (1000) but within the C JSON parser's.
        ("arrays nested 990 deep", nested(990).encode(), JSON, {400}),
        ("arrays nested 1200 deep", nested(1200).encode(), JSON, {400}),
        ("field nested 990 deep", with_value(nested(990).encode()), JSON, {400}),
        ("lone surrogate in a field", dumps(valid | {first: "\ud800"}), JSON, {400}),
        ("CESU-8 surrogate bytes", with_value(b'"\xed\xa0\x80"'), JSON, {400}),
        ("UTF-16 body", json_text.decode().encode("utf-16"), f"{JSON}; charset=utf-16", {400}),
        ("10 MB string", dumps(valid | {first: TEN_MB}), JSON, {400, 413}),
        ("form-encoded", urlencode(valid or {"a": "b"}).encode(), "application/x-www-form-urlencoded", {415}),
        ("multipart", encode_multipart(BOUNDARY, valid or {"a": "b"}), MULTIPART_CONTENT, {415}),
        ("text/plain", json_text, "text/plain", {415}),
        ("XML", b"<product/>", "application/xml", {415}),
        ("octet-stream", json_text, "application/octet-stream", {415}),
    ]
    if endpoint.required:  # an empty body is a valid dispatch
        cases += [("empty body", b"", JSON, {400}), ("empty object", b"{}", JSON, {400})]
    return cases


# Running a case --------------------------------------------------------------------


TABLES = [model for model in apps.get_models() if model._meta.managed and not model._meta.proxy]


def snapshot() -> dict[str, Any]:
    """Row counts of every table (traceability's, tokens, the ledger's...) and the state of every shipment."""
    counts: dict[str, Any] = {model._meta.label: model._default_manager.count() for model in TABLES}
    counts["shipments"] = sorted(Shipment.objects.values_list("pk", "status", "custodian_id"))
    return counts


def writer(endpoint: Endpoint, world: World) -> APIClient:
    client = APIClient(raise_request_exception=False)
    if endpoint.who == "admin":
        admin = Membership.objects.filter(role=Membership.Role.ADMIN).first()
        client.force_authenticate(admin.user if admin else member_of(world["manufacturer"], "admin", "admin").user)
    elif endpoint.who != "anonymous":
        client.force_authenticate(world[endpoint.who].user)
    return client


@dataclass
class Outcome:
    status: int
    body: Any
    changes: dict[str, tuple[Any, Any]]
    error: str


def post(client: APIClient, url: str, body: bytes, content_type: str = JSON) -> Outcome:
    """POSTs in a savepoint that is rolled back; reports the status, the JSON answer and any rows changed."""
    cache.clear()  # the token endpoint is throttled
    with transaction.atomic():
        before = snapshot()
        response = client.generic("POST", url, body, content_type=content_type)
        after = snapshot()
        transaction.set_rollback(True)
    changes = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    try:
        answer = json.loads(response.content) if response.content else None
    except ValueError:
        answer = response.content[:200]
    error = repr(response.exc_info[1]) if getattr(response, "exc_info", None) else ""
    return Outcome(response.status_code, answer, changes, error)


def check(outcome: Outcome, case: str, statuses: set[int], field: str | None = None) -> str | None:
    """Why the outcome is wrong, or None."""
    if outcome.status not in statuses:
        return f"{case}: expected {sorted(statuses)}, got {outcome.status} {outcome.error or outcome.body!r:.300}"
    if outcome.changes:
        return f"{case}: answered {outcome.status} but changed rows: {outcome.changes}"
    if field is not None and not (isinstance(outcome.body, dict) and field in outcome.body):
        return f"{case}: the 400 does not name {field!r}: {outcome.body!r:.300}"
    return None


def report(problems: list[str | None]) -> str:
    """The failures, one a line; empty when every case passed."""
    return "\n".join(problem for problem in problems if problem)


# The tests -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ENDPOINTS)
def test_a_valid_body_succeeds_and_writes(world: World, name: str) -> None:
    """The baseline every malformed case differs from: if this fails, the battery below proves nothing."""
    endpoint = ENDPOINTS[name]
    client = writer(endpoint, world)

    outcome = post(client, endpoint.url(world), dumps(endpoint.valid(world)))

    assert outcome.status == endpoint.status, outcome.body
    added = {model: after - before for model, (before, after) in outcome.changes.items() if model in endpoint.writes}
    assert added == endpoint.writes


@pytest.mark.parametrize("name", ENDPOINTS)
def test_a_malformed_body_is_refused_without_writing(world: World, name: str) -> None:
    endpoint = ENDPOINTS[name]
    client, url = writer(endpoint, world), endpoint.url(world)
    problems = [
        check(post(client, url, body, content_type), case, statuses)
        for case, body, content_type, statuses in malformed_bodies(endpoint, world)
    ]
    failures = report(problems)
    assert not failures, failures


@pytest.mark.parametrize("name", [name for name, endpoint in ENDPOINTS.items() if endpoint.required])
def test_each_missing_required_field_is_named(world: World, name: str) -> None:
    endpoint = ENDPOINTS[name]
    client, url, valid = writer(endpoint, world), endpoint.url(world), endpoint.valid(world)
    problems = []
    for missing in endpoint.required:
        body = {key: value for key, value in valid.items() if key != missing}
        problems.append(check(post(client, url, dumps(body)), f"without {missing}", {400}, field=missing))
        body[missing] = None
        problems.append(check(post(client, url, dumps(body)), f"{missing}: null", {400}, field=missing))
    failures = report(problems)
    assert not failures, failures


@pytest.mark.parametrize("name", ENDPOINTS)
def test_each_wrong_value_is_named(world: World, name: str) -> None:
    endpoint = ENDPOINTS[name]
    client, url, valid = writer(endpoint, world), endpoint.url(world), endpoint.valid(world)
    problems = [
        check(post(client, url, dumps(valid | {key: value})), f"{key}={value!r:.60}", {400}, field=key)
        for key, kind in endpoint.fields.items()
        for value in wrong_values(kind, world)
    ]
    failures = report(problems)
    assert not failures, failures


def test_a_field_error_lists_its_reasons(world: World) -> None:
    """ErrorOut's contract: a 400 is ``{"field": ["reason", ...]}``, whichever layer found the fault."""
    manufacturer = world["manufacturer"]
    shipments = ENDPOINTS["shipments"]
    cases = [
        ("serializer", reverse("api-product-list"), ENDPOINTS["products"].valid(world) | {"name": ""}, "name"),
        ("service", reverse("api-product-list"), ENDPOINTS["products"].valid(world) | {"gtin": "1"}, "gtin"),
        (
            "view: GTIN of no product of yours",
            reverse("api-batch-list"),
            ENDPOINTS["batches"].valid(world) | {"gtin": world.competitor_product.gtin},
            "gtin",
        ),
        (
            "view: unknown GLN",
            reverse("api-shipment-list"),
            shipments.valid(world) | {"carrier": "4000000000000"},
            "carrier",
        ),
        (
            "view: invisible batch",
            reverse("api-shipment-list"),
            shipments.valid(world) | {"items": [{"batch": world.competitor_batch.pk, "quantity": 1}]},
            "items",
        ),
    ]
    problems = []
    for layer, url, body, key in cases:
        outcome = post(manufacturer.client(), url, dumps(body))
        if outcome.status != 400 or not isinstance(outcome.body.get(key), list):
            problems.append(
                f"{layer}: expected 400 with {key!r} a list of reasons, got {outcome.status} {outcome.body}"
            )
    assert not problems, "\n".join(problems)


# Read endpoints: query strings and path parameters ------------------------------------

HUGE = "9" * 23  # beyond any 64-bit id
# (path with {batch} for the manufacturer's batch, the statuses a correct answer may have)
READS = [
    ("/api/v1/batches/{batch}/serials/%00/qr.svg", {404}),
    ("/api/v1/batches/{batch}/serials/%ED%A0%80/qr.png", {404}),
    ("/api/v1/batches/{batch}/serials/" + "X" * 5000 + "/qr.svg", {404}),
    (f"/api/v1/products/{HUGE}/", {404}),
    (f"/api/v1/batches/{HUGE}/serials/", {404}),
    (f"/api/v1/batches/{HUGE}/qr.png", {404}),
    (f"/api/v1/shipments/{HUGE}/", {404}),
    ("/api/v1/organisations/?kind=%00", {400}),
    ("/api/v1/organisations/?gln=%00", {400}),
    ("/api/v1/sites/?country=%00", {400}),
    ("/api/v1/products/?gtin=%00", {400}),
    ("/api/v1/products/?name=%00", {400}),
    ("/api/v1/products/?storage_profile=warm", {400}),
    ("/api/v1/products/?page=abc", {404}),
    ("/api/v1/products/?page=0", {404}),
    (f"/api/v1/products/?page={HUGE}", {404}),
    (f"/api/v1/products/?page_size={HUGE}", {200}),
    ("/api/v1/products/?page_size=-1", {200}),
    (f"/api/v1/batches/?product={HUGE}", {400}),
    ("/api/v1/batches/?product=abc", {400}),
    ("/api/v1/batches/?lot=%00", {400}),
    ("/api/v1/batches/?expires_before=2025-13-01", {400}),
    ("/api/v1/batches/{batch}/serials/?serial=%00", {400}),
    ("/api/v1/batches/{batch}/serials/?status=lost", {400}),
    ("/api/v1/shipments/?reference=%00", {400}),
    ("/api/v1/shipments/?batch=NaN", {400}),
    ("/api/v1/shipments/?batch=1e30", {200, 400}),
    (f"/api/v1/shipments/?batch={HUGE}", {200, 400}),
    (f"/api/v1/shipments/?batch=-{HUGE}", {200, 400}),
    ("/api/v1/shipments/?created_after=junk", {400}),
    ("/api/v1/products/?freeze_sensitive=maybe", {400}),
    ("/api/v1/products/?freeze_sensitive=true", {200}),
    ("/api/v1/shipments/?created_after=2025-01-01T00:00:00", {400}),  # no UTC offset
    ("/api/v1/alerts/?raised_after=2025-01-01", {400}),
    # RFC 3339 allows offsets up to 23:59; PostgreSQL stores none beyond 15:59.
    ("/api/v1/shipments/?created_after=2025-01-01T00:00:00-16:00", {200}),
    ("/api/v1/shipments/?created_before=2025-01-01T00:00:00%2B20:00", {200}),
    # Beyond datetime's range once converted to UTC.
    ("/api/v1/shipments/?created_after=9999-12-31T23:59:59-23:59", {200, 400}),
    ("/api/v1/shipments/?created_before=0001-01-01T00:00:00%2B01:00", {200, 400}),
]


@pytest.mark.parametrize("reader", ["regulator", "manufacturer"])
def test_malformed_query_strings_and_path_parameters_are_answered_not_crashed(world: World, reader: str) -> None:
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(world[reader].user)
    problems = []
    for template, statuses in READS:
        path = template.replace("{batch}", str(world.batch.pk))
        with transaction.atomic():  # on PostgreSQL a failed query would poison the rest of the test
            response = client.get(path)
            transaction.set_rollback(True)
        if response.status_code not in statuses:
            error = repr(response.exc_info[1]) if response.exc_info else response.content[:200]
            problems.append(f"GET {path:.90}: expected {sorted(statuses)}, got {response.status_code} {error}")
    assert not problems, "\n".join(problems)


# Random JSON ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=()), max_size=30),  # surrogates and NUL included
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def near(value: Any) -> st.SearchStrategy[Any]:
    """The valid value itself, random JSON, or (objects and lists) the same shape with parts replaced."""
    if isinstance(value, dict):
        return st.just(value) | json_values | st.fixed_dictionaries({}, optional={k: near(v) for k, v in value.items()})
    if isinstance(value, list) and value:
        return st.just(value) | json_values | st.lists(near(value[0]), max_size=3)
    return st.just(value) | json_values


RANDOM = hypothesis.settings(
    max_examples=75, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def random_post(world: World, name: str, data: st.DataObject) -> None:
    """Each field of a valid body left out, kept, or replaced by random JSON: never a 5xx, never a write on a 4xx."""
    endpoint = ENDPOINTS[name]
    body = data.draw(near(endpoint.valid(world)), label="body")
    outcome = post(writer(endpoint, world), endpoint.url(world), dumps(body))
    event(f"HTTP {outcome.status}")  # --hypothesis-show-statistics: how many bodies got past validation
    assert outcome.status < 500, outcome.error
    if outcome.status >= 400:
        assert not outcome.changes


@RANDOM
@given(data=st.data())
def test_random_product_bodies_never_fail_the_server(world: World, data: st.DataObject) -> None:
    random_post(world, "products", data)


@RANDOM
@given(data=st.data())
def test_random_shipment_bodies_never_fail_the_server(world: World, data: st.DataObject) -> None:
    random_post(world, "shipments", data)


def test_a_rejected_delivery_changes_the_shipment_but_adds_no_row(world: World) -> None:
    """A valid write that adds no traceability row: only the battery's shipment-state check would notice it."""
    outcome = post(
        world["pharmacy"].client(),
        reverse("api-shipment-receive", args=[world.in_transit.pk]),
        dumps({"accept": False, "reason": "logger shows a freeze"}),
    )

    assert outcome.status == 200
    _, after = outcome.changes.pop("shipments")
    assert not [table for table in outcome.changes if table.startswith("traceability.")]
    assert (world.in_transit.pk, "rejected", world["carrier"].organisation.pk) in after
