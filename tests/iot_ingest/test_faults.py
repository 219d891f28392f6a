"""Nothing is lost, nothing counts twice: the real processes, broken on purpose.

Each test runs Mosquitto and Redis of its own on free ports (the machine's
services stay untouched), a Celery worker and ``ingest_mqtt`` on the test's
PostgreSQL database, publishes two hours of simulated history with one spike,
breaks something in the middle, and counts: every reading the loggers sent
stored once, every message accepted once (redeliveries are duplicates), the
excursion and its breach in the ledger once, and the ledger still verifies.
The last test also compares what is stored with one in-order evaluation of
the same readings (DESIGN.md, "Event time, not arrival time").
"""

from __future__ import annotations

import datetime
import random
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import paho.mqtt.client as paho
import psycopg2
import pytest
from django.db import connection
from django.utils import timezone
from paho.mqtt.enums import CallbackAPIVersion

from iot_ingest import mqtt, simulator
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
    Sent,
    assert_exactly_once,
    database_url,
    unique,
    wait_until,
)
from traceability import coldchain
from traceability.models import Alert, Excursion

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def processes(tmp_path: Path, transactional_db: None) -> Iterator[Processes]:
    """Set up after the database, so every process is gone before the test's tables are flushed."""
    database_url()  # nothing starts unless the processes can share the test's database
    with Processes(tmp_path) as running:
        yield running


@pytest.fixture
def redis_server(processes: Processes) -> Redis:
    return Redis(processes)


@pytest.fixture
def platform(processes: Processes, redis_server: Redis) -> Platform:
    platform = Platform(processes, broker_url=redis_server.url, mqtt_url=Mosquitto(processes).url)
    # The sweeper's path: a stranded row stays stranded until the sweeper runs, no task takes it on.
    platform.env["INBOX_ADOPTED"] = "0"
    return platform


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
    simulate = platform.simulate(*fleet.simulator_options(tmp_path, rate=8))  # six seconds of publishing
    wait_until("some messages in the inbox", lambda: fleet.inbox()["all"] >= 10, processes=processes, watch=[ingest])
    wait_until(  # their tasks wait for a worker that is not there yet
        "tasks in the queue", lambda: redis_server.backlog(platform.queue) > 0, processes=processes, watch=[ingest]
    )

    redis_server.kill()  # no persistence: the queue is gone
    wait_until(  # messages keep arriving: they are stored, and their tasks cannot be queued
        "ingest to store a message it cannot queue",
        lambda: "could not queue inbox rows for processing" in ingest.log.read_text(),
        processes=processes,
        watch=[ingest],
    )
    redis_server.start()
    assert simulate.alive(), "the simulator finished while Redis was down"
    sent = platform.sent(simulate)
    wait_until("every message in the inbox", lambda: fleet.inbox()["all"] == sent.messages, processes=processes)
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
    simulate = platform.simulate(*fleet.simulator_options(tmp_path, rate=8))
    wait_until("some messages in the inbox", lambda: fleet.inbox()["all"] >= 10, processes=processes, watch=[ingest])

    # With Redis frozen, the next batch ingest commits waits for its tasks to be queued, unacknowledged:
    # killed then, ingest leaves the broker messages that are in the inbox already, to deliver again.
    redis_server.freeze()
    try:
        frozen_at, since = fleet.inbox()["all"], time.monotonic()
        wait_until(  # a commit after the freeze; none for a while: ingest was queueing one as Redis froze
            "a batch committed while Redis is frozen",
            lambda: fleet.inbox()["all"] > frozen_at or time.monotonic() - since > 1.5,
            processes=processes,
            watch=[ingest, simulate],
        )
        assert ingest.kill() == -signal.SIGKILL
    finally:
        redis_server.thaw()
    assert simulate.alive(), "the simulator finished before ingest was killed"
    again = platform.ingest(client_id, fleet.topics)  # the same client id: the same persistent session

    sent = platform.sent(simulate)
    settle(platform, processes, fleet, sent, watch=[worker, again])

    inbox = fleet.inbox()
    assert inbox.get("duplicate", 0) >= 1  # the committed, unacknowledged batch, delivered again
    assert inbox["all"] == sent.messages + inbox["duplicate"]
    assert_exactly_once(fleet, sent)
    assert again.stop() == 0, again.output()


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


# A lock that holds a worker mid-batch -------------------------------------------------------


class RowLock:
    """Holds ``FOR NO KEY UPDATE`` on one row from a connection of its own, so a writer of that row waits.

    Foreign-key checks take ``FOR KEY SHARE``, which this lock does not block:
    a processing task inserts its readings (rows that point at the device) and
    then waits at the update of the device's ``last_seen_at``.
    """

    def __init__(self, table: str, pk: int) -> None:
        self.table, self.pk = table, pk
        db = connection.settings_dict
        self.holder = psycopg2.connect(
            dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"], host=db["HOST"] or "127.0.0.1", port=db["PORT"]
        )

    def __enter__(self) -> RowLock:
        with self.holder.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {self.table} WHERE id = %s FOR NO KEY UPDATE", [self.pk])  # noqa: S608
            cursor.execute("SELECT pg_backend_pid()")
            (self.pid,) = cursor.fetchone()
        return self

    def __exit__(self, *exc: object) -> None:
        self.holder.rollback()
        self.holder.close()

    def waiters(self) -> list[int]:
        """The database sessions waiting for this lock."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [self.pid])
            return [pid for (pid,) in cursor.fetchall()]


def holds_write_lock(pid: int, table: str) -> bool:
    """The session has written to ``table`` in its open transaction (it holds ROW EXCLUSIVE on it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
            " WHERE l.pid = %s AND c.relname = %s AND l.mode = 'RowExclusiveLock' AND l.granted",
            [pid, table],
        )
        (count,) = cursor.fetchone()
    return bool(count)


def session_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        (count,) = cursor.fetchone()
    return bool(count)


# Publishing from the test ---------------------------------------------------------------------


def publish(url: str, messages: Sequence[tuple[str, bytes]], *, rate: float = 0) -> None:
    """Publishes at QoS 1, at most ``rate`` a second, and returns once the broker acknowledged every message."""
    address = mqtt.broker_address(url)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("test-pub"), protocol=paho.MQTTv311)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        infos = []
        for topic, raw in messages:
            infos.append(client.publish(topic, raw, qos=1))
            if rate:
                time.sleep(1 / rate)
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def shuffled[T](items: Sequence[T], seed: int) -> list[T]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out
