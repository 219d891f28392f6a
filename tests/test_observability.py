"""What operators see: /metrics (Prometheus, behind a key), request and task ids in the logs, the staff status page."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from iot_ingest import protocol
from iot_ingest import services as ingest
from iot_ingest.models import Device, InboxMessage, Reading
from iot_ingest.tasks import evaluate_shipments
from ledger import services as ledger
from ledger.models import Checkpoint, Entry
from tests.conftest import Persona
from tests.factories import ProductFactory
from tests.scenarios import log_temperatures, register_batch, ship
from tests.traceability.test_settings import manage, production_env
from traceability import logs
from traceability import services as traceability
from traceability.models import Alert, Product, Shipment

KEY = "a-metrics-key-for-the-tests-0123456789"
NOW = datetime.datetime(2026, 3, 2, 12, 0, tzinfo=datetime.UTC)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: Client, key: str | None = KEY, **headers: str) -> Any:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return client.get("/metrics", headers=headers)


def samples(text: str) -> Samples:
    """Every sample of the exposition, read by prometheus_client's own parser."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def user(persona: Persona) -> User:
    assert isinstance(persona.user, User)
    return persona.user


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


# /metrics: the key ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_a_key_configured_there_are_no_metrics(settings: Any) -> None:
    settings.METRICS_KEY = ""
    assert scrape(Client()).status_code == 404
    assert scrape(Client(), key=None).status_code == 404


@pytest.mark.django_db
def test_metrics_answer_only_the_configured_bearer_key(settings: Any) -> None:
    settings.METRICS_KEY = KEY
    client = Client()
    missing = scrape(client, key=None)
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert scrape(client, key=KEY[:-1]).status_code == 401
    assert scrape(client, key=KEY + "x").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {KEY}").status_code == 401
    good = scrape(client)
    assert good.status_code == 200
    assert good["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "no-cache" in good["Cache-Control"]
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {KEY}").status_code == 405


@pytest.mark.django_db
def test_a_scraper_asking_for_openmetrics_gets_it(settings: Any) -> None:
    settings.METRICS_KEY = KEY
    response = scrape(Client(), Accept="application/openmetrics-text; version=1.0.0")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


@pytest.mark.django_db
def test_the_key_may_come_from_a_mounted_file(tmp_path: Any) -> None:
    key_file = tmp_path / "metrics-key"
    key_file.write_text(KEY + "\n")
    code = "from django.conf import settings; print(settings.METRICS_KEY)"
    result = manage("shell", "-c", code, **production_env(METRICS_KEY_FILE=str(key_file)))
    assert result.stdout.strip().splitlines()[-1] == KEY, result.stderr


# /metrics: the figures -----------------------------------------------------------------------------


class Logger:
    """A registered logger on a shipment; ``message`` signs its next message of two readings."""

    def __init__(self, owner: Persona, shipment: Shipment) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.device: Device
        self.device, _ = ingest.device_register(
            device_id="LOG-M1", organisation=owner.organisation, public_key=self.key.public_key().public_bytes_raw()
        )
        ingest.device_assign(actor=user(owner), device=self.device, shipment=shipment, starts_at=shipment.dispatched_at)
        self.seq = 0

    def message(self, *, key: Ed25519PrivateKey | None = None, celsius: float = 5.0) -> bytes:
        self.seq += 1
        at = (timezone.now() - datetime.timedelta(minutes=self.seq)).timestamp()
        records = [{"n": "temp", "u": "Cel", "t": at, "v": celsius}, {"n": "temp", "u": "Cel", "t": at + 30, "v": 5.5}]
        return protocol.message(key or self.key, self.device.device_id, self.seq, records)


def receive(raws: list[bytes], *, at: datetime.datetime | None = None) -> list[int]:
    rows = ingest.inbox_receive([ingest.RawMessage(raw, "mqtt", "", at) for raw in raws], enqueue=False)
    return [row.pk for row in rows]


@pytest.fixture
def shipment(manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> Shipment:
    product: Product = ProductFactory(manufacturer=manufacturer.organisation)  # type: ignore[no-untyped-call,assignment]
    batch = register_batch(manufacturer, product)
    return ship(batch, manufacturer, carrier, pharmacy, outcome="in_transit", hours=12)


@pytest.mark.django_db
def test_metrics_count_what_ingest_processed_and_what_waits(
    settings: Any, manufacturer: Persona, shipment: Shipment
) -> None:
    settings.METRICS_KEY = KEY
    logger = Logger(manufacturer, shipment)
    accepted = [logger.message() for _ in range(3)]
    forged = logger.message(key=Ed25519PrivateKey.generate())
    stranger = protocol.message(Ed25519PrivateKey.generate(), "LOG-UNKNOWN", 1, [{"n": "temp", "v": 5.0}])
    ingest.messages_process(receive(accepted))
    ingest.messages_process(receive([accepted[0], forged, stranger, b"not a message"]))
    received_at = timezone.now() - datetime.timedelta(seconds=120)
    waiting = receive([logger.message(), logger.message(celsius=30.0)], at=received_at)  # one breaks the contract
    failing = receive([logger.message()])
    for _attempt in range(ingest.MAX_ATTEMPTS):
        ingest.inbox_failed(failing, RuntimeError("worker lost"))

    with time_machine.travel(received_at + datetime.timedelta(seconds=120), tick=False):
        found = samples(scrape(Client()).content.decode())

    assert value(found, "coldtrace_ingest_messages_received_total") == 10
    assert value(found, "coldtrace_ingest_messages_total", outcome="accepted") == 3
    assert value(found, "coldtrace_ingest_messages_total", outcome="duplicate") == 1
    assert value(found, "coldtrace_ingest_messages_total", outcome="rejected") == 3
    assert value(found, "coldtrace_ingest_rejections_total", reason="bad_signature") == 1
    assert value(found, "coldtrace_ingest_rejections_total", reason="unknown_device") == 1
    assert value(found, "coldtrace_ingest_rejections_total", reason="malformed") == 1
    assert value(found, "coldtrace_ingest_rejections_total", reason="replay") == 0  # every reason, zeros too
    assert value(found, "coldtrace_ingest_readings_total") == 6 == Reading.objects.count()
    assert value(found, "coldtrace_inbox_backlog_messages") == len(waiting) == 2
    assert value(found, "coldtrace_inbox_urgent_messages") == 1
    assert value(found, "coldtrace_inbox_oldest_pending_age_seconds") == 120
    assert value(found, "coldtrace_inbox_dead_letter_messages") == 1
    assert InboxMessage.objects.get(pk=failing[0]).outcome == "dead"


@pytest.mark.django_db
def test_readings_are_counted_the_same_once_committed_to_the_ledger(
    settings: Any, manufacturer: Persona, shipment: Shipment
) -> None:
    settings.METRICS_KEY = KEY
    logger = Logger(manufacturer, shipment)
    ingest.messages_process(receive([logger.message(), logger.message()]))
    assert value(samples(scrape(Client()).content.decode()), "coldtrace_readings_uncommitted") == 4
    assert ingest.readings_commit(shipment) is not None
    ingest.messages_process(receive([logger.message()]))
    found = samples(scrape(Client()).content.decode())
    assert value(found, "coldtrace_ingest_readings_total") == 6 == Reading.objects.count()
    assert value(found, "coldtrace_readings_uncommitted") == 2
    later = ingest.readings_commit(shipment)
    assert later is not None
    assert later.count == 2  # those two were counted as not yet committed, the four before as committed


@pytest.mark.django_db
def test_metrics_show_unresolved_alerts_by_severity(settings: Any, carrier: Persona, shipment: Shipment) -> None:
    settings.METRICS_KEY = KEY
    log_temperatures(shipment, lambda hours: 9.5 if hours > 1 else 5.0)  # a failed reefer: warnings and alarms
    raised = list(Alert.objects.filter(shipment=shipment, status="open"))
    assert len(raised) >= 2
    traceability.alert_acknowledge(actor=user(carrier), alert=raised[0], comment="Reefer checked.")
    expected = Counter((alert.status, alert.severity) for alert in Alert.objects.all())
    assert expected[("acknowledged", raised[0].severity)] == 1
    found = samples(scrape(Client()).content.decode())
    for severity in Alert.Severity.values:
        for status in ("open", "acknowledged"):
            figure = value(found, "coldtrace_alerts_unresolved", status=status, severity=severity)
            assert figure == expected[(status, severity)], (status, severity)


@pytest.mark.django_db
def test_metrics_show_the_ledger_and_the_age_of_its_newest_checkpoint(settings: Any, shipment: Shipment) -> None:
    settings.METRICS_KEY = KEY
    found = samples(scrape(Client()).content.decode())
    assert value(found, "coldtrace_ledger_pending_events") > 0  # the batch and the dispatch, not yet sequenced
    assert ("coldtrace_ledger_checkpoint_age_seconds", frozenset()) not in found  # no checkpoint yet

    with time_machine.travel(NOW, tick=False):
        ledger.entries_sequence()
        checkpoint = ledger.checkpoint_sign()
    assert checkpoint is not None
    with time_machine.travel(NOW + datetime.timedelta(minutes=5), tick=False):
        found = samples(scrape(Client()).content.decode())
    assert value(found, "coldtrace_ledger_entries_total") == Entry.objects.count() == checkpoint.size
    assert value(found, "coldtrace_ledger_pending_events") == 0
    assert value(found, "coldtrace_ledger_checkpoint_size") == Checkpoint.objects.get().size
    assert value(found, "coldtrace_ledger_checkpoint_age_seconds") == 300


# Logs -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def json_log_lines() -> Iterator[list[dict[str, Any]]]:
    """What the configured console handler writes, as JSON (its filter, the JSON formatter), parsed."""
    handler = next(h for h in logging.getLogger().handlers if any(isinstance(f, logs.ContextFilter) for f in h.filters))
    assert isinstance(handler, logging.StreamHandler)
    buffer, formatter = io.StringIO(), handler.formatter
    stream = handler.setStream(buffer)
    handler.setFormatter(logs.JsonFormatter())
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        handler.setStream(stream)
        handler.setFormatter(formatter)
        lines += [json.loads(line) for line in buffer.getvalue().splitlines()]


@pytest.mark.django_db
def test_every_log_line_of_a_request_carries_the_callers_request_id() -> None:
    with json_log_lines() as lines:
        response = Client().get("/no-such-page/", HTTP_X_REQUEST_ID="edge-4f1c2a9e-0001")
    assert response["X-Request-ID"] == "edge-4f1c2a9e-0001"
    ours = [line for line in lines if line.get("request_id") == "edge-4f1c2a9e-0001"]
    assert {line["logger"] for line in ours} >= {"django.request", "coldtrace.request"}  # Django's "Not Found" too
    access = next(line for line in ours if line["logger"] == "coldtrace.request")
    assert (access["method"], access["path"], access["status"]) == ("GET", "/no-such-page/", 404)


@pytest.mark.django_db
@pytest.mark.parametrize("sent", ["", "short", "has spaces in it", "x" * 200, 'quote"and\\backslash'])
def test_an_unlikely_request_id_is_replaced_by_a_new_one(sent: str) -> None:
    response = Client().get("/health/", HTTP_X_REQUEST_ID=sent)
    assert response["X-Request-ID"] != sent
    assert logs.SANE_REQUEST_ID.match(response["X-Request-ID"])
    other = Client().get("/health/", HTTP_X_REQUEST_ID=sent)
    assert other["X-Request-ID"] != response["X-Request-ID"]


@pytest.mark.django_db
def test_a_celery_tasks_log_lines_carry_its_task_id() -> None:
    with json_log_lines() as lines:
        result = evaluate_shipments.apply(args=[["not-an-id"]], task_id="task-0001")  # not a shipment id: it fails
    assert result.failed()
    failure = next(line for line in lines if line["logger"] == "celery.app.trace")
    assert failure["task_id"] == "task-0001"
    assert failure["task"] == "iot_ingest.tasks.evaluate_shipments"
    assert failure["level"] == "ERROR"
    after = logging.LogRecord("x", logging.INFO, __file__, 1, "after", None, None)
    logs.ContextFilter().filter(after)
    assert getattr(after, "task_id", "unset") is None  # task_postrun cleared it


def test_production_logs_one_json_object_a_line() -> None:
    code = "import logging; logging.getLogger('coldtrace.test').warning('recall %s sent', 'R-1')"
    result = manage("shell", "-c", code, **production_env())
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "coldtrace.test", "recall R-1 sent")
    text = manage("shell", "-c", code, **production_env(LOG_FORMAT="text"))
    assert text.stderr.strip().splitlines()[-1].endswith("WARNING coldtrace.test recall R-1 sent")


# The staff status page --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_status_page_is_for_staff_only(personas: dict[str, Persona]) -> None:
    anonymous = Client().get("/admin/status/")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")
    for persona in personas.values():
        client = Client()
        client.force_login(user(persona))
        assert client.get("/admin/status/").status_code == 302, persona.name


@pytest.mark.django_db
def test_the_status_page_shows_services_ingest_lag_and_the_newest_checkpoint(
    manufacturer: Persona, shipment: Shipment
) -> None:
    logger = Logger(manufacturer, shipment)
    received_at = timezone.now() - datetime.timedelta(seconds=90)
    receive([logger.message()], at=received_at)
    with time_machine.travel(NOW, tick=False):
        ledger.entries_sequence()
        ledger.checkpoint_sign()
    staff = Client()
    staff.force_login(User.objects.create_user("operator", is_staff=True))
    page = staff.get("/admin/status/")  # time runs: the page pings the workers with a timeout
    assert page.status_code == 200
    html = page.content.decode()
    rows = {name: row.split("</tr>")[0] for name, row in re.findall(r'data-check="(\w+)">(.*?</tr>)', html, re.S)}
    assert set(rows) == {"database", "broker", "workers"}
    assert "up" in rows["database"]
    assert "up" in rows["broker"]  # SQLite runs use the file-system transport, PostgreSQL runs Redis
    assert '<dd data-figure="backlog">1</dd>' in html
    lag = re.search(r'data-figure="ingest-lag">(\d+) s \(received ([^)]*) UTC\)', html)
    assert lag, html
    assert int(lag[1]) >= 90
    assert lag[2] == timezone.localtime(received_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert f"size {Checkpoint.objects.get().size}, signed 2026-03-02 12:00:00 UTC" in html
