"""The MQTT subscriber: a message is acknowledged only after its bytes are committed; nothing is lost.

Unit tests drive the ingestor with paho's own message objects and a fake
client that records acknowledgements. The real path runs against Mosquitto
(MQTT_URL): in this process (SQLite or PostgreSQL), and as the
``ingest_mqtt`` command in a subprocess sharing the PostgreSQL test database,
killed mid-batch and restarted. The embedded path runs against the amqtt
broker that ``make demo`` uses.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import connections
from paho.mqtt.enums import CallbackAPIVersion

from iot_ingest import mqtt, protocol, services
from iot_ingest.models import InboxMessage
from iot_ingest.services import RawMessage
from tests.conftest import unavailable
from tests.factories import OrganisationFactory
from tests.iot_ingest.processes import Process, Processes, database_url, reachable, unique

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "coldtrace/v1/devices/{}/readings"


# Unit: batching and acknowledgement ------------------------------------------------


class FakeClient:
    """Records acknowledgements, as paho's ``Client.ack`` would send them."""

    def __init__(self) -> None:
        self.acks: list[tuple[int, int]] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append((mid, qos))


def incoming(mid: int, *, qos: int = 1, payload: bytes | None = None, device: str = "LOG-1") -> paho.MQTTMessage:
    message = paho.MQTTMessage(mid=mid, topic=TOPIC.format(device).encode())
    message.qos = qos
    message.payload = payload if payload is not None else f"message {mid}".encode()
    return message


class Recorder:
    """A store that records each batch and what had been acknowledged when it was called."""

    def __init__(self, client: FakeClient, fail: int = 0) -> None:
        self.client = client
        self.fail = fail
        self.batches: list[list[bytes]] = []
        self.acked_when_called: list[int] = []

    def __call__(self, messages: Sequence[RawMessage]) -> None:
        self.acked_when_called.append(len(self.client.acks))
        if self.fail:
            self.fail -= 1
            raise ConnectionError("database is restarting")
        self.batches.append([message.raw for message in messages])


def ingestor_with(fail: int = 0, **options: Any) -> tuple[mqtt.Ingestor, FakeClient, Recorder]:
    client = FakeClient()
    store = Recorder(client, fail)
    ingestor = mqtt.Ingestor(store=store, **options)
    ingestor.client = client
    ingestor.connected()
    return ingestor, client, store


def test_messages_are_committed_in_batches_and_acknowledged_after_each_commit_in_arrival_order() -> None:
    ingestor, client, store = ingestor_with(batch_size=200)
    for mid in range(1, 451):
        ingestor.on_message(None, None, incoming(mid))

    assert [ingestor.step(wait=0) for _ in range(4)] == [200, 200, 50, 0]

    assert [len(batch) for batch in store.batches] == [200, 200, 50]
    assert store.acked_when_called == [0, 200, 400]  # nothing of a batch is acknowledged before its commit
    assert client.acks == [(mid, 1) for mid in range(1, 451)]
    assert store.batches[0][0] == b"message 1"


def test_a_batch_does_not_wait_for_a_full_batch_longer_than_the_delay() -> None:
    ingestor, client, _store = ingestor_with(batch_size=200, max_delay=0.005)
    for mid in (1, 2, 3):
        ingestor.on_message(None, None, incoming(mid))

    started = time.monotonic()
    assert ingestor.step(wait=1.0) == 3
    assert time.monotonic() - started < 0.5
    assert client.acks == [(1, 1), (2, 1), (3, 1)]


def test_the_inbox_row_keeps_the_bytes_topic_transport_and_time_of_receipt() -> None:
    received: list[RawMessage] = []
    ingestor = mqtt.Ingestor(store=received.extend)
    ingestor.client = FakeClient()
    ingestor.on_message(None, None, incoming(7, payload=b"\x00raw\xff", device="LOG-9"))
    ingestor.step(wait=0)

    (message,) = received
    assert (message.raw, message.topic, message.transport) == (b"\x00raw\xff", TOPIC.format("LOG-9"), "mqtt")
    assert message.received_at is not None
    assert message.received_at.tzinfo is not None


def test_a_failed_commit_acknowledges_nothing_and_the_same_batch_is_committed_on_the_next_try() -> None:
    ingestor, client, store = ingestor_with(fail=1)
    for mid in (1, 2, 3):
        ingestor.on_message(None, None, incoming(mid))

    with pytest.raises(ConnectionError):
        ingestor.step(wait=0)
    assert client.acks == []
    assert ingestor.backlog == 3

    ingestor.on_message(None, None, incoming(4))
    assert ingestor.step(wait=0) == 3  # the failed batch again, as it was
    assert store.batches == [[b"message 1", b"message 2", b"message 3"]]
    assert client.acks == [(1, 1), (2, 1), (3, 1)]
    assert ingestor.step(wait=0) == 1
    assert client.acks[-1] == (4, 1)


def test_messages_from_an_earlier_connection_are_committed_but_not_acknowledged_on_the_new_one() -> None:
    """A packet id belongs to its connection; the broker sends the message again and processing de-duplicates."""
    ingestor, client, store = ingestor_with()
    ingestor.on_message(None, None, incoming(1))
    ingestor.connected()  # reconnected before the commit
    ingestor.on_message(None, None, incoming(1, payload=b"message 1"))  # the redelivery

    assert ingestor.step(wait=0) == 2
    assert store.batches == [[b"message 1", b"message 1"]]
    assert client.acks == [(1, 1)]  # once: for the copy that came on this connection


def test_qos_0_messages_are_stored_and_need_no_acknowledgement() -> None:
    ingestor, client, store = ingestor_with()
    ingestor.on_message(None, None, incoming(0, qos=0))
    assert ingestor.step(wait=0) == 1
    assert store.batches == [[b"message 0"]]
    assert client.acks == []


def test_the_writer_acknowledges_only_after_a_slow_commit_returned() -> None:
    client = FakeClient()
    entered, release = threading.Event(), threading.Event()
    committed: list[int] = []

    def slow_store(messages: Sequence[RawMessage]) -> None:
        entered.set()
        release.wait(5)
        committed.append(len(messages))

    ingestor = mqtt.Ingestor(store=slow_store)
    ingestor.client = client
    ingestor.connected()
    stop = threading.Event()
    writer = threading.Thread(target=ingestor.run, args=(stop,), kwargs={"poll": 0.01})
    writer.start()
    try:
        for mid in (1, 2):
            ingestor.on_message(None, None, incoming(mid))
        assert entered.wait(5)
        time.sleep(0.05)
        assert client.acks == []  # the commit has not returned
        release.set()
        deadline = time.monotonic() + 5
        while len(client.acks) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert committed
        assert client.acks == [(1, 1), (2, 1)]
    finally:
        release.set()
        stop.set()
        writer.join(5)


def test_shutdown_commits_and_acknowledges_what_was_received_and_leaves_later_messages_to_the_broker() -> None:
    ingestor, client, store = ingestor_with(batch_size=2)
    for mid in range(1, 6):
        ingestor.on_message(None, None, incoming(mid))
    stop = threading.Event()
    stop.set()

    assert ingestor.run(stop) is True

    assert [len(batch) for batch in store.batches] == [2, 2, 1]
    assert client.acks == [(mid, 1) for mid in range(1, 6)]
    ingestor.on_message(None, None, incoming(6))  # after the drain: not taken, not acknowledged
    assert ingestor.backlog == 0
    assert client.acks[-1] == (5, 1)


def test_shutdown_with_the_database_down_gives_up_without_acknowledging() -> None:
    ingestor, client, store = ingestor_with(fail=100, retry_delays=[0.0])
    ingestor.on_message(None, None, incoming(1))
    stop = threading.Event()
    stop.set()

    assert ingestor.run(stop, drain_attempts=3) is False

    assert client.acks == []
    assert len(store.acked_when_called) == 3


def test_while_running_a_failed_commit_is_retried_until_it_succeeds() -> None:
    ingestor, client, store = ingestor_with(fail=2, retry_delays=[0.01])
    ingestor.on_message(None, None, incoming(1))
    stop = threading.Event()
    writer = threading.Thread(target=ingestor.run, args=(stop,), kwargs={"poll": 0.01})
    writer.start()
    deadline = time.monotonic() + 5
    while not client.acks and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    writer.join(5)
    assert client.acks == [(1, 1)]
    assert ingestor.failures == 2
    assert store.batches == [[b"message 1"]]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", mqtt.BrokerAddress("127.0.0.1", 1883, False)),
        ("mqtt://broker", mqtt.BrokerAddress("broker", 1883, False)),
        ("mqtts://broker", mqtt.BrokerAddress("broker", 8883, True)),
        ("mqtt://ingest:s%40cret@mosquitto:1884", mqtt.BrokerAddress("mosquitto", 1884, False, "ingest", "s@cret")),
    ],
)
def test_the_broker_url_gives_host_port_tls_and_credentials(url: str, expected: mqtt.BrokerAddress) -> None:
    assert mqtt.broker_address(url) == expected


def test_a_broker_url_never_shows_its_password() -> None:
    assert str(mqtt.broker_address("mqtt://ingest:secret@mosquitto")) == "mqtt://ingest@mosquitto:1883"


@pytest.mark.parametrize("url", ["http://broker", "mosquitto:1883", "mqtt://", "mqtt://host:port"])
def test_a_bad_broker_url_says_what_is_expected(url: str) -> None:
    with pytest.raises(ValueError, match="MQTT_URL"):
        mqtt.broker_address(url)


def test_mqtt5_subscribes_to_the_shared_subscription_of_the_spec() -> None:
    assert mqtt.topic_filter(mqtt.READINGS_TOPIC, shared=True) == "$share/ingest/coldtrace/v1/devices/+/readings"
    assert mqtt.topic_filter(mqtt.READINGS_TOPIC, shared=False) == "coldtrace/v1/devices/+/readings"


def test_processes_on_one_machine_get_stable_client_ids_of_their_own(tmp_path: Path) -> None:
    first, held = mqtt.client_id_claim(tmp_path, "host.example")
    second, other = mqtt.client_id_claim(tmp_path, "host.example")
    assert (first, second) == ("coldtrace-ingest-host.example-1", "coldtrace-ingest-host.example-2")
    held.close()  # the first process stops; its successor takes its id, and so its session
    again, _ = mqtt.client_id_claim(tmp_path, "host.example")
    assert again == first
    other.close()


# The real path: Mosquitto -------------------------------------------------------------


def _reachable(url: str) -> bool:
    address = mqtt.broker_address(url)
    return reachable(address.host, address.port)


@pytest.fixture
def broker_url() -> str:
    url = os.environ.get("MQTT_URL", settings.MQTT_URL)
    if not _reachable(url):
        unavailable(f"no MQTT broker at {url}: start Mosquitto or set MQTT_URL")
    return url


class Loggers:
    """Registered devices and a publisher that waits for every PUBACK."""

    def __init__(self, count: int) -> None:
        organisation = OrganisationFactory()
        self.keys: dict[str, Ed25519PrivateKey] = {}
        for _ in range(count):
            device_id = unique("T")
            _, private = services.device_register(device_id=device_id, organisation=organisation)
            assert private is not None
            self.keys[device_id] = private

    @property
    def topics(self) -> list[str]:
        return [TOPIC.format(device_id) for device_id in self.keys]

    def messages(self, first_seq: int, count: int) -> list[tuple[str, bytes]]:
        now = int(time.time())
        out = []
        for seq in range(first_seq, first_seq + count):
            device_id = list(self.keys)[seq % len(self.keys)]
            records = [{"bn": f"urn:dev:{device_id}:", "bt": now - 60, "bu": "Cel", "n": "temp", "v": 5.0}]
            out.append((TOPIC.format(device_id), protocol.message(self.keys[device_id], device_id, seq, records)))
        return out

    def publish(self, url: str, messages: list[tuple[str, bytes]], *, linger: float = 0.0) -> None:
        address = mqtt.broker_address(url)
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("test-pub"), protocol=paho.MQTTv311)
        mqtt.configure(client, address)
        client.connect(address.host, address.port)
        client.loop_start()
        try:
            infos = [client.publish(topic, raw, qos=1) for topic, raw in messages]
            for info in infos:
                info.wait_for_publish(30)
                assert info.is_published()
            time.sleep(linger)
        finally:
            client.disconnect()
            client.loop_stop()


def rows(topics: list[str]) -> list[bytes]:
    return [bytes(raw) for raw in InboxMessage.objects.filter(topic__in=topics).values_list("raw", flat=True)]


def wait_for_rows(
    topics: list[str], count: int, *, timeout: float = 30, alive: Callable[[], bool] = lambda: True
) -> None:
    deadline = time.monotonic() + timeout
    while len(rows(topics)) < count and time.monotonic() < deadline and alive():
        time.sleep(0.1)
    time.sleep(0.3)  # and no more: a duplicate would show up here


class Listening:
    """``mqtt.serve`` on a thread of this process, as the command runs it."""

    def __init__(self, url: str, topics: list[str], *, protocol: mqtt.Protocol = "auto") -> None:
        self.stop = threading.Event()
        self.ingestor = mqtt.Ingestor(store=mqtt.inbox_store(enqueue=False))
        self.connection = mqtt.Connection(
            address=mqtt.broker_address(url),
            client_id=unique("test-ingest"),
            ingestor=self.ingestor,
            protocol=protocol,
            topics=topics,
            group=unique("group"),
            session_expiry=300,
        )
        self.result: list[bool] = []
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()
        assert self.connection.subscribed.wait(15), "the listener did not subscribe"

    def _serve(self) -> None:
        try:
            self.result.append(mqtt.serve(self.connection, self.ingestor, self.stop))
        finally:
            connections.close_all()

    def close(self) -> bool:
        self.stop.set()
        self.thread.join(15)
        return self.result == [True]

    def forget_session(self) -> None:
        """MQTT 3.1.1 sessions never expire: end this one by connecting once with a clean session."""
        address = self.connection.address
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.connection.client_id, clean_session=True)
        mqtt.configure(client, address)
        client.connect(address.host, address.port)
        client.loop_start()
        client.disconnect()
        client.loop_stop()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_every_message_published_to_mosquitto_is_in_the_inbox_exactly_once(broker_url: str) -> None:
    loggers = Loggers(3)
    listening = Listening(broker_url, loggers.topics)
    try:
        messages = loggers.messages(0, 300)
        loggers.publish(broker_url, messages)
        wait_for_rows(loggers.topics, len(messages))
    finally:
        assert listening.close()

    stored = rows(loggers.topics)
    assert sorted(stored) == sorted(raw for _, raw in messages)
    assert listening.connection.version == "5"  # Mosquitto speaks MQTT 5: the shared subscription
    assert listening.ingestor.acked == len(messages)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_mqtt_3_1_1_with_the_plain_topic_also_loses_nothing(broker_url: str) -> None:
    loggers = Loggers(1)
    listening = Listening(broker_url, loggers.topics, protocol="3")
    try:
        messages = loggers.messages(0, 50)
        loggers.publish(broker_url, messages)
        wait_for_rows(loggers.topics, len(messages))
    finally:
        assert listening.close()
        listening.forget_session()
    assert sorted(rows(loggers.topics)) == sorted(raw for _, raw in messages)


# The command in a subprocess: killed mid-batch, restarted --------------------------------


def start_ingest(processes: Processes, url: str, topics: list[str], client_id: str, group: str, *extra: str) -> Process:
    """``manage.py ingest_mqtt`` as a process of its own, on the test database; no Celery worker needed."""
    command = [sys.executable, "manage.py", "ingest_mqtt", "--url", url, "--client-id", client_id]
    command += ["--group", group, "--session-expiry", "300", "--no-enqueue", *extra]
    for topic in topics:
        command += ["--topic", topic]
    env = {**os.environ, "DATABASE_URL": database_url(), "DEBUG": "1", "LOG_LEVEL": "INFO"}
    process = processes.start("ingest", command, env=env)
    process.wait_for_line("subscribed (granted")
    return process


def committed(ingest: Process) -> int:
    """What ``ingest_mqtt`` logged on the way out: "N messages committed, N acknowledged"."""
    match = re.search(r"(\d+) messages committed, \1 acknowledged", ingest.log.read_text())
    assert match, ingest.output()
    return int(match.group(1))


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_the_command_killed_before_committing_loses_nothing_and_stores_each_message_once(
    broker_url: str, processes: Processes
) -> None:
    loggers = Loggers(2)
    client_id, group = unique("test-ingest"), unique("group")
    first, later = loggers.messages(0, 40), loggers.messages(40, 60)
    # Batches that wait a minute: the messages are received, held unacknowledged, and the process is killed.
    extra = ("--max-delay-ms", "60000", "--batch-size", "1000")
    ingest = start_ingest(processes, broker_url, loggers.topics, client_id, group, *extra)
    loggers.publish(broker_url, first)
    time.sleep(1.0)
    assert ingest.kill() == -signal.SIGKILL
    assert rows(loggers.topics) == []

    loggers.publish(broker_url, later)  # while no ingest runs: the broker keeps them in the session
    ingest = start_ingest(processes, broker_url, loggers.topics, client_id, group)
    try:
        wait_for_rows(loggers.topics, len(first) + len(later), alive=ingest.alive)
    finally:
        assert ingest.stop(timeout=30) == 0, ingest.output()

    assert sorted(rows(loggers.topics)) == sorted(raw for _, raw in first + later)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_two_command_processes_split_the_shared_subscription_and_store_each_message_once(
    broker_url: str, processes: Processes
) -> None:
    loggers = Loggers(4)
    group = unique("group")
    ingests = [start_ingest(processes, broker_url, loggers.topics, unique("test-ingest"), group) for _ in range(2)]
    try:
        messages = loggers.messages(0, 400)
        loggers.publish(broker_url, messages)
        wait_for_rows(loggers.topics, len(messages), alive=lambda: all(i.alive() for i in ingests))
    finally:
        codes = [ingest.stop(timeout=30) for ingest in ingests]
    assert codes == [0, 0], processes.logs()
    assert sorted(rows(loggers.topics)) == sorted(raw for _, raw in messages)
    shares = [committed(ingest) for ingest in ingests]
    assert sum(shares) == len(messages)
    assert min(shares) > 0  # the broker split them


# The embedded path: amqtt, as make demo runs it ------------------------------------------


@pytest.fixture
def embedded_broker() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "DEBUG": "1"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mqtt_broker", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"mqtt://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not _reachable(url) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "mqtt_broker exited"
    yield url
    process.send_signal(signal.SIGTERM)
    try:
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.django_db(transaction=True)
def test_with_the_embedded_broker_the_listener_falls_back_to_mqtt_3_1_1_and_loses_nothing(
    embedded_broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mqtt, "PROBE_TIMEOUT", 1.0)  # amqtt leaves an MQTT 5 CONNECT unanswered
    loggers = Loggers(2)
    listening = Listening(embedded_broker, loggers.topics)
    try:
        messages = loggers.messages(0, 100)
        # amqtt drops acknowledged messages it has not routed yet when their publisher leaves: stay a moment.
        loggers.publish(embedded_broker, messages, linger=1.0)
        wait_for_rows(loggers.topics, len(messages))
    finally:
        assert listening.close()
    assert listening.connection.version == "3"
    assert sorted(rows(loggers.topics)) == sorted(raw for _, raw in messages)
