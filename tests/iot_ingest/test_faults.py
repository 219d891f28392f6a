"""Nothing is lost, nothing counts twice: the real processes, broken on purpose.

Each test runs Mosquitto and Redis of its own on free ports (the machine's
services stay untouched), a Celery worker and ``ingest_mqtt`` on the test's
PostgreSQL database, publishes two hours of simulated history with one spike,
breaks something in the middle, and counts: every reading the loggers sent
stored once, every message accepted once (redeliveries are duplicates), the
excursion and its breach in the ledger once, and the ledger still verifies.
"""

from __future__ import annotations

import datetime
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from django.utils import timezone

from iot_ingest import simulator
from tests.conftest import Persona
from tests.iot_ingest.processes import (
    Fleet,
    Logger,
    Messages,
    Mosquitto,
    Platform,
    Process,
    Processes,
    Redis,
    RowLock,
    Sent,
    assert_exactly_once,
    holds_write_lock,
    publish,
    session_alive,
    shuffled,
    unique,
    wait_until,
)
from traceability import coldchain
from traceability.models import Alert, Excursion

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def processes(tmp_path: Path, transactional_db: None) -> Iterator[Processes]:
    """Set up after the database, so every process is gone before the test's tables are flushed."""
    with Processes(tmp_path) as running:
        yield running


@pytest.fixture
def redis_server(processes: Processes) -> Redis:
    return Redis(processes)


@pytest.fixture
def platform(processes: Processes, redis_server: Redis) -> Platform:
    return Platform(processes, broker_url=redis_server.url, mqtt_url=Mosquitto(processes).url)


@pytest.fixture
def fleet(manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> Fleet:
    return Fleet.dispatch(manufacturer=manufacturer, carrier=carrier, pharmacy=pharmacy, profiles=["normal", "spike"])


def settle(platform: Platform, processes: Processes, fleet: Fleet, sent: Sent, *, watch: Sequence[Process]) -> None:
    """Sweeps what stayed pending, waits until every reading is stored and evaluated, then checks the ledger."""
    platform.sweep()
    wait_until("every reading stored", lambda: fleet.settled(sent), processes=processes, watch=watch, state=fleet.state)
    wait_until("the spike evaluated", fleet.spike_evaluated, processes=processes, watch=watch, state=fleet.state)
    assert platform.ledger_verified().startswith("OK ")


def test_a_worker_killed_in_the_middle_of_a_batch_loses_nothing_once_the_sweeper_runs(
    platform: Platform, processes: Processes, redis_server: Redis, fleet: Fleet, tmp_path: Path
) -> None:
    worker = platform.worker()
    ingest = platform.ingest(unique("ingest"), fleet.topics)
    spike = fleet.logger("spike").device
    # The first batch with a spike reading writes its readings, then waits for this lock at the device's
    # last_seen_at, uncommitted: the worker is killed right there.
    with RowLock("iot_ingest_device", spike.pk) as lock:
        sent = platform.sent(platform.simulate(*fleet.simulator_options(tmp_path)))
        wait_until("every message in the inbox", lambda: fleet.inbox()["all"] == sent.messages, processes=processes)
        wait_until("the worker to wait mid-batch", lambda: bool(lock.waiters()), processes=processes, watch=[worker])
        (session,) = lock.waiters()
        assert holds_write_lock(session, "iot_ingest_reading")  # its readings are written, not committed
        assert worker.kill() == -signal.SIGKILL
    wait_until("the killed worker's session to end", lambda: not session_alive(session), processes=processes)

    stranded = fleet.inbox().get("pending", 0)
    assert stranded > 0
    assert fleet.readings() < sent.readings
    # acks_late kept the task, but Redis hands it out again only after the visibility timeout (an hour).
    assert redis_server.unacknowledged() == 1

    replacement = platform.worker()
    wait_until(
        "the new worker to drain the queue",
        lambda: redis_server.backlog(platform.queue) == 1,  # all but the killed task
        processes=processes,
        watch=[replacement],
    )
    assert fleet.inbox().get("pending", 0) > 0  # the killed batch's rows are still pending: the sweeper's turn
    settle(platform, processes, fleet, sent, watch=[replacement, ingest])

    assert_exactly_once(fleet, sent)
    assert not fleet.inbox().get("duplicate")


def test_a_redis_restart_loses_the_queued_tasks_but_not_the_messages(
    platform: Platform, processes: Processes, redis_server: Redis, fleet: Fleet, tmp_path: Path
) -> None:
    ingest = platform.ingest(unique("ingest"), fleet.topics)
    simulate = platform.simulate(*fleet.simulator_options(tmp_path, rate=10))  # about five seconds of publishing
    wait_until("some messages in the inbox", lambda: fleet.inbox()["all"] >= 10, processes=processes, watch=[ingest])
    assert redis_server.backlog(platform.queue) > 0  # their tasks wait for a worker that is not there yet

    redis_server.kill()  # no persistence: the queue is gone
    time.sleep(1.0)  # messages keep arriving; they are stored, and their tasks cannot be queued
    redis_server.start()
    sent = platform.sent(simulate)
    wait_until("every message in the inbox", lambda: fleet.inbox()["all"] == sent.messages, processes=processes)
    assert "could not queue inbox rows for processing" in ingest.log.read_text()
    assert redis_server.backlog(platform.queue) > 0  # ingest queues on the new Redis again

    worker = platform.worker()
    wait_until("the worker to drain the queue", lambda: redis_server.backlog(platform.queue) == 0, processes=processes)
    assert fleet.inbox().get("pending", 0) > 0  # the rows whose tasks Redis lost
    settle(platform, processes, fleet, sent, watch=[worker, ingest])

    assert_exactly_once(fleet, sent)
    assert not fleet.inbox().get("duplicate")


def test_ingest_killed_and_restarted_stores_each_reading_once(
    platform: Platform, processes: Processes, redis_server: Redis, fleet: Fleet, tmp_path: Path
) -> None:
    worker = platform.worker()
    client_id = unique("ingest")
    ingest = platform.ingest(client_id, fleet.topics)
    simulate = platform.simulate(*fleet.simulator_options(tmp_path, rate=10))
    wait_until("some messages in the inbox", lambda: fleet.inbox()["all"] >= 10, processes=processes, watch=[ingest])

    # Frozen, Redis leaves ingest waiting to queue a batch it has committed and not acknowledged yet:
    # the moment a kill makes the broker deliver committed messages again.
    redis_server.freeze()
    try:
        stored = stalled(fleet, processes)
        assert ingest.kill() == -signal.SIGKILL
    finally:
        redis_server.thaw()
    assert simulate.alive()  # still publishing: the broker keeps the messages for the session
    again = platform.ingest(client_id, fleet.topics)  # the same client id: the same persistent session

    sent = platform.sent(simulate)
    settle(platform, processes, fleet, sent, watch=[worker, again])

    inbox = fleet.inbox()
    assert inbox["all"] > stored
    assert inbox.get("duplicate", 0) >= 1  # the committed, unacknowledged batch, delivered again
    assert inbox["all"] == sent.messages + inbox.get("duplicate", 0)
    assert_exactly_once(fleet, sent)
    assert again.stop() == 0, again.output()


def stalled(fleet: Fleet, processes: Processes) -> int:
    """Waits until the inbox has stopped growing for a second while messages keep coming; its size then."""
    seen, since = fleet.inbox()["all"], time.monotonic()
    deadline = since + 30
    while time.monotonic() - since < 1.0:
        if time.monotonic() > deadline:
            pytest.fail(f"ingest kept committing with Redis frozen\n{processes.logs()}")
        time.sleep(0.1)
        now = fleet.inbox()["all"]
        if now != seen:
            seen, since = now, time.monotonic()
    return seen


def test_the_same_messages_twice_and_out_of_order_end_as_they_would_in_order(
    platform: Platform, processes: Processes, redis_server: Redis, fleet: Fleet
) -> None:
    worker = platform.worker()
    ingest = platform.ingest(unique("ingest"), fleet.topics)
    spike, normal = fleet.logger("spike"), fleet.logger("normal")
    messages = fleet.messages()
    sent = Sent(
        messages=sum(len(out) for out in messages.values()),
        readings=sum(len(samples) for out in messages.values() for _, samples in out),
    )
    # Held back, as a logger's retransmissions would be: the message just after the spike (until it comes,
    # the spike seems to end at the next reading there is, five minutes late), and a quarter of an hour of
    # the normal logger's readings (until they come, a data gap).
    held = {(spike.device_id, 21), (normal.device_id, 10), (normal.device_id, 11), (normal.device_id, 12)}
    topic = {logger.device_id: logger.topic for logger in fleet.loggers}
    first = [(topic[d], raw) for d, out in messages.items() for n, (raw, _) in enumerate(out) if (d, n) not in held]
    later = [(topic[d], messages[d][n][0]) for d, n in sorted(held)]

    publish(platform.mqtt_url, shuffled(first * 2, seed=1), rate=50)
    idle(platform, processes, redis_server, fleet, 2 * len(first), watch=[worker, ingest])
    publish(platform.mqtt_url, shuffled(later * 2, seed=2))
    idle(platform, processes, redis_server, fleet, 2 * sent.messages, watch=[worker, ingest])
    assert platform.ledger_verified().startswith("OK ")

    assert fleet.inbox() == {"accepted": sent.messages, "duplicate": sent.messages, "all": 2 * sent.messages}
    assert_exactly_once(fleet, sent)
    # Event time, not arrival time: what the readings show, whatever the order they came in.
    differences = [
        f"{logger.profile} logger's shipment, {what}: stored {stored[what]}, in order {expected[what]}"
        for logger in fleet.loggers
        for stored, expected in [(monitoring(logger), in_order(logger, messages))]
        for what in expected
        if stored[what] != expected[what]
    ]
    assert not differences, "\n".join(differences)


def idle(
    platform: Platform, processes: Processes, redis: Redis, fleet: Fleet, rows: int, *, watch: Sequence[Process]
) -> None:
    """Waits for ``rows`` inbox rows, none pending, and no task queued or running: every evaluation done."""
    wait_until(
        f"{rows} inbox rows processed and the worker idle",
        lambda: quiet(fleet.inbox(), rows) and redis.backlog(platform.queue) == 0,
        processes=processes,
        watch=watch,
        state=fleet.state,
    )


def quiet(inbox: dict[str, int], rows: int) -> bool:
    return inbox["all"] == rows and not inbox.get("pending")


def moment(sample: simulator.Sample) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(sample.at, datetime.UTC)


def monitoring(logger: Logger) -> dict[str, list[str]]:
    """The shipment's excursions and open alerts, as stored."""
    excursions = Excursion.objects.filter(shipment=logger.shipment).order_by("started_at")
    alerts = Alert.objects.filter(shipment=logger.shipment, status=Alert.Status.OPEN)
    return {
        "excursions": [excursion(e.direction, e.started_at, e.ended_at, e.peak_celsius) for e in excursions],
        "open alerts": sorted(alerts.values_list("key", flat=True)),
    }


def in_order(logger: Logger, messages: Messages) -> dict[str, list[str]]:
    """What one evaluation of all the logger's readings, in order, finds on its shipment."""
    shipment = logger.shipment
    shipment.refresh_from_db()
    assert shipment.dispatched_at is not None
    terms = shipment.contract.as_rules()
    samples = [
        coldchain.Sample(moment(sample), sample.value) for _, out in messages[logger.device_id] for sample in out
    ]
    armed_from = shipment.dispatched_at + datetime.timedelta(seconds=terms.arming_seconds)
    evaluation = coldchain.evaluate(terms, samples, armed_from=armed_from, until=timezone.now())
    return {
        "excursions": [
            excursion(e.direction.value, e.started_at, e.ended_at, e.peak_celsius) for e in evaluation.excursions
        ],
        "open alerts": sorted({trigger.key for trigger in evaluation.triggers}),
    }


def excursion(direction: str, start: datetime.datetime, end: datetime.datetime | None, peak: float) -> str:
    return f"{direction} {start:%H:%M:%S} to {'-' if end is None else f'{end:%H:%M:%S}'}, peak {peak}"
