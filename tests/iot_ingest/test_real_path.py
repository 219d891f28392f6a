"""The real path, for real: Mosquitto, Redis, a Celery worker process and ``ingest_mqtt`` against PostgreSQL.

The machine's services (``MQTT_URL``, ``CELERY_BROKER_URL``) and the test's
database; a Celery queue, MQTT client id and share group of the test's own,
so parallel runs on one broker never meet. Simulated loggers publish two
hours of history, one of them with a spike, and the test watches the
readings, the alerts and the ledger entries appear.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings
from django.db import connection

from iot_ingest import mqtt, services, tasks
from iot_ingest.models import InboxMessage, Reading
from tests.conftest import Persona
from tests.iot_ingest.processes import (
    MESSAGES_PER_LOGGER,
    PER_MESSAGE,
    SPIKE_ALERTS,
    Fleet,
    Platform,
    Processes,
    Sent,
    assert_exactly_once,
    entries,
    reachable,
    unavailable,
    unique,
    wait_until,
)
from traceability.celery import app as celery_app
from traceability.models import Alert, Excursion

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def platform(processes: Processes) -> Iterator[Platform]:
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith("redis://"):
        unavailable("the real path runs on Redis: set CELERY_BROKER_URL=redis://127.0.0.1:6379/0")
    parts = urlsplit(broker)
    if not reachable(parts.hostname or "127.0.0.1", parts.port or 6379):
        unavailable(f"no Redis at {broker}: start redis-server or set CELERY_BROKER_URL")
    url = os.environ.get("MQTT_URL", settings.MQTT_URL)
    address = mqtt.broker_address(url)
    if not reachable(address.host, address.port):
        unavailable(f"no MQTT broker at {url}: start Mosquitto or set MQTT_URL")
    platform = Platform(processes, broker_url=broker, mqtt_url=url)
    yield platform
    processes.close()
    with redis.Redis.from_url(broker, socket_timeout=5) as client:  # kombu's records of the test's queue
        client.delete(f"_kombu.binding.{platform.queue}", f"_kombu.binding_permanent.{platform.queue}")


@pytest.fixture
def through_redis() -> Iterator[None]:
    """Tasks this test sends go to the broker, not run in the test's process."""
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    yield
    celery_app.conf.task_always_eager = eager


def test_simulated_loggers_readings_alerts_and_ledger_entries_arrive_through_the_real_services(
    platform: Platform,
    processes: Processes,
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    tmp_path: Path,
) -> None:
    fleet = Fleet.dispatch(manufacturer=manufacturer, carrier=carrier, pharmacy=pharmacy, profiles=["normal", "spike"])
    worker = platform.worker()
    ingest = platform.ingest(unique("ingest"), fleet.topics)

    sent = platform.sent(platform.simulate(*fleet.simulator_options(tmp_path)))

    per_logger = MESSAGES_PER_LOGGER * PER_MESSAGE
    assert sent == Sent(messages=2 * MESSAGES_PER_LOGGER, readings=2 * per_logger)
    wait_until(
        "every reading stored",
        lambda: fleet.settled(sent),
        processes=processes,
        watch=[worker, ingest],
        state=fleet.state,
    )
    wait_until(
        "the spike's excursion and alerts",
        fleet.spike_evaluated,
        processes=processes,
        watch=[worker, ingest],
        state=fleet.state,
    )
    verdict = platform.ledger_verified()

    assert verdict.startswith("OK "), verdict
    spike = fleet.logger("spike")
    for logger in fleet.loggers:
        assert Reading.objects.filter(shipment=logger.shipment, device=logger.device).count() == per_logger
    excursion = Excursion.objects.get(shipment=spike.shipment)
    assert excursion.direction == "above"
    assert 11.5 <= excursion.peak_celsius <= 12.5
    assert excursion.duration_seconds == 45 * 60  # the simulator's spike: 45 readings, INTERVAL apart
    breach = Alert.objects.get(shipment=spike.shipment, key="rule:stability budget spent")
    assert breach.severity == Alert.Severity.CRITICAL
    assert set(Alert.objects.filter(shipment=spike.shipment).values_list("key", flat=True)) == SPIKE_ALERTS
    facts = entries(spike.shipment)
    assert (facts["excursion.started"], facts["excursion.ended"], facts["contract.breached"]) == (1, 1, 1)
    assert facts["shipment.dispatched"] == 1
    assert_exactly_once(fleet, sent)
    assert ingest.stop() == 0, ingest.output()
    assert worker.stop() == 0, worker.output()


def test_a_worker_keeps_its_database_session_from_one_task_to_the_next(
    platform: Platform, processes: Processes, through_redis: None
) -> None:
    """Celery's Django fix-up would open a new PostgreSQL session (a forked backend) for every task."""
    worker = platform.worker()

    def process_one() -> set[int]:
        (row,) = services.inbox_receive([services.RawMessage(b"not a JWS", "http")], enqueue=False)
        tasks.process_messages.apply_async(([row.pk],), queue=platform.queue)
        wait_until(
            "the message processed",
            lambda: InboxMessage.objects.get(pk=row.pk).outcome == InboxMessage.Outcome.REJECTED,
            processes=processes,
            watch=[worker],
        )
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return {pid for (pid,) in cursor.fetchall()}

    sessions = process_one()
    for _ in range(5):
        assert process_one() == sessions
    assert len(sessions) == 1
    assert worker.stop() == 0, worker.output()
