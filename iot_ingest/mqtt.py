"""The MQTT subscriber: loggers' messages into the inbox, acknowledged only once committed.

Nothing is lost, nothing counts twice (DESIGN.md). The subscription is QoS 1
on a persistent session with manual acknowledgement: a message's PUBACK goes
out only after ``inbox_receive`` has committed its exact bytes. If the process
dies first, the message stays unacknowledged and the broker delivers it again
(to this client id when it comes back, the session being persistent); the
second copy is stored too and processing settles it as a duplicate.

:class:`Ingestor` holds the rules (batching, the order of commit and ack,
retrying a failed commit, draining on shutdown) and is tested with a fake
client. :class:`Connection` wires it to a paho client: MQTT 5 with a shared
subscription where the broker offers it, else MQTT 3.1.1. The management
command ``ingest_mqtt`` only parses options and handles signals.
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import queue
import socket
import threading
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from django.db import close_old_connections
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from iot_ingest.models import Transport
from iot_ingest.services import RawMessage, inbox_receive

logger = logging.getLogger(__name__)

READINGS_TOPIC = "coldtrace/v1/devices/+/readings"  # spec/device-protocol.md
SHARE_GROUP = "ingest"
BATCH_SIZE = 200
MAX_DELAY = 0.02  # seconds a batch waits for more messages after its first
SESSION_EXPIRY = 24 * 3600  # MQTT 5: the broker keeps our session (and queues for it) this long while we are away
UNSUPPORTED_PROTOCOL_VERSION = 132  # CONNACK reason code; paho maps MQTT 3.1.1's return code 1 to it
PROBE_TIMEOUT = 5.0  # auto: a broker that leaves an MQTT 5 CONNECT unanswered this long is taken for 3.1.1
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # after a failed commit; the last repeats
STATS_EVERY = 60.0

Protocol = Literal["auto", "5", "3"]
Store = Callable[[Sequence[RawMessage]], object]


# The broker's address ---------------------------------------------------------


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        """For logs: never the password."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def broker_address(url: str) -> BrokerAddress:
    """Reads ``mqtt://[user[:password]@]host[:port]`` (port 1883) or ``mqtts://...`` (TLS, port 8883)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT_URL {url!r} must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"MQTT_URL {url!r} names no host")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as error:
        raise ValueError(f"MQTT_URL {url!r}: {error}") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return BrokerAddress(parts.hostname, port, tls, username, password)


def configure(client: paho.Client, address: BrokerAddress) -> None:
    """Credentials and TLS (the system's CA certificates; SSL_CERT_FILE points elsewhere) from the address."""
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()


def client_id_claim(lock_dir: Path, hostname: str | None = None) -> tuple[str, IO[str]]:
    """``coldtrace-ingest-<hostname>-<n>`` with the lowest ``n`` no other process on this machine holds.

    The id is stable across restarts (the first process is always ``-1``), so a
    restarted ingest gets back its persistent session and whatever the broker
    queued for it; several processes on one machine get ids of their own. The
    claim is an advisory lock on ``lock_dir/ingest-mqtt-<n>.lock``, held as long
    as the returned file stays open (the process lives).
    """
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in (hostname or socket.gethostname()))
    lock_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        handle = (lock_dir / f"ingest-mqtt-{n}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        return f"coldtrace-ingest-{host}-{n}", handle
    raise RuntimeError(f"no free ingest slot in {lock_dir}: pass --client-id")


# Batching and acknowledgement -------------------------------------------------------


class Acker(typing.Protocol):
    """What the ingestor needs of an MQTT client: paho's ``Client.ack``."""

    def ack(self, mid: int, qos: int) -> Any: ...


@dataclass(frozen=True)
class _Received:
    mid: int
    qos: int
    connection: int  # the connection it came on: a packet id means nothing on another one
    message: RawMessage


class Ingestor:
    """Commits received messages to the inbox in batches and acknowledges each after its batch committed.

    ``on_message`` runs on the client's network thread and only queues;
    ``run`` (the writer, on the caller's thread) takes up to ``batch_size``
    messages, waiting at most ``max_delay`` seconds after the first, commits
    them with one ``store`` call and then acknowledges them in the order they
    arrived (MQTT 3.1.1 section 4.6). A failed commit acknowledges nothing and
    is retried with backoff. Messages that came on an earlier connection are
    committed but not acknowledged: the broker sends them again on the new one.
    """

    def __init__(
        self,
        *,
        store: Store = inbox_receive,
        batch_size: int = BATCH_SIZE,
        max_delay: float = MAX_DELAY,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        if batch_size < 1 or max_delay < 0:
            raise ValueError("batch_size must be at least 1 and max_delay not negative")
        self.store = store
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.retry_delays = tuple(retry_delays) or (1.0,)
        self.client: Acker | None = None
        self.stored = 0
        self.acked = 0
        self.failures = 0
        self._queue: queue.SimpleQueue[_Received] = queue.SimpleQueue()
        self._batch: list[_Received] = []  # taken from the queue, not yet committed
        self._lock = threading.Lock()
        self._accepting = True
        self._connection = 0

    # The network thread -------------------------------------------------

    def connected(self) -> None:
        """A new connection is up: packet ids of messages from the previous one are void."""
        with self._lock:
            self._connection += 1

    def on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        """Queues the message (paho's ``on_message``); once stopping, leaves it unacknowledged for redelivery."""
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers refuse such topics; an exception here would stop paho's thread
            topic = ""
        received = RawMessage(
            raw=bytes(message.payload),
            transport=Transport.MQTT,
            topic=topic[:256],
            received_at=datetime.datetime.now(datetime.UTC),
        )
        with self._lock:
            if self._accepting:
                self._queue.put(_Received(message.mid, message.qos, self._connection, received))

    # The writer -----------------------------------------------------------

    @property
    def backlog(self) -> int:
        return self._queue.qsize() + len(self._batch)

    def step(self, wait: float) -> int:
        """Commits one batch and acknowledges it; returns its size (0 when nothing came within ``wait`` s).

        When ``store`` raises, the batch is kept, unacknowledged, for the next
        step, and the error propagates.
        """
        if not self._batch:
            self._batch = self._collect(wait)
            if not self._batch:
                return 0
        batch = self._batch
        self.store([item.message for item in batch])
        self._batch = []
        self.stored += len(batch)
        self._ack(batch)
        return len(batch)

    def _collect(self, wait: float) -> list[_Received]:
        try:
            batch = [self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.max_delay
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                # Past the deadline, still take what has already arrived, without waiting.
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _ack(self, batch: Sequence[_Received]) -> None:
        client = self.client
        with self._lock:
            current = self._connection
        for item in batch:
            if item.qos == 0:
                continue
            if client is None or item.connection != current:
                logger.debug("message %s came on an earlier connection; the broker will send it again", item.mid)
                continue
            client.ack(item.mid, item.qos)
            self.acked += 1

    def stop_accepting(self) -> None:
        """Messages arriving from now on are neither queued nor acknowledged: the broker keeps them."""
        with self._lock:
            self._accepting = False

    def run(self, stop: threading.Event, *, poll: float = 0.1, drain_attempts: int = 3) -> bool:
        """Commits and acknowledges until ``stop`` is set, then drains what was received; True when all was.

        While running, a failed commit is retried for ever with backoff (the
        database may be restarting). Once stopping, it is tried
        ``drain_attempts`` times; what still fails stays unacknowledged, so the
        broker delivers it again.
        """
        failures = 0
        last_stats, stored_then = time.monotonic(), 0
        while True:
            stopping = stop.is_set()
            if stopping:
                self.stop_accepting()
            try:
                done = self.step(wait=0 if stopping else poll)
                failures = 0
            except Exception:
                failures += 1
                self.failures += 1
                delay = self.retry_delays[min(failures, len(self.retry_delays)) - 1]
                logger.exception(
                    "could not commit %d message(s) (attempt %d); they stay unacknowledged; retrying in %gs",
                    len(self._batch),
                    failures,
                    delay,
                )
                if stopping and failures >= drain_attempts:
                    logger.error(
                        "stopping with %d message(s) not committed nor acknowledged: the broker will send them again",
                        self.backlog,
                    )
                    return False
                if stopping:
                    time.sleep(min(delay, 1.0))
                else:
                    stop.wait(delay)
                continue
            if stopping and done == 0 and self.backlog == 0:
                return True
            if time.monotonic() - last_stats >= STATS_EVERY:
                if self.stored != stored_then:
                    rate = (self.stored - stored_then) / (time.monotonic() - last_stats)
                    logger.info("%d messages committed to the inbox (%.1f/s lately)", self.stored, rate)
                last_stats, stored_then = time.monotonic(), self.stored


def inbox_store(*, enqueue: bool = True) -> Store:
    """``inbox_receive`` for a long-running process: drops a broken database connection after a failure.

    With ``enqueue=False`` nothing is queued for processing; the sweeper (beat)
    picks the rows up later. Tests use it to need no Celery worker.
    """
    checked = time.monotonic()

    def store(messages: Sequence[RawMessage]) -> object:
        nonlocal checked
        if time.monotonic() - checked > 30:  # honour CONN_MAX_AGE as a request cycle would
            close_old_connections()
            checked = time.monotonic()
        try:
            return inbox_receive(messages, enqueue=enqueue)
        except Exception:
            close_old_connections()
            raise

    return store


# The connection ------------------------------------------------------------------


def topic_filter(topic: str, *, shared: bool, group: str = SHARE_GROUP) -> str:
    """The filter to subscribe to: ``$share/<group>/<topic>`` (MQTT 5 section 4.8.2) or the topic itself."""
    return f"$share/{group}/{topic}" if shared else topic


class Connection:
    """A paho client subscribed for the ingestor: persistent session, QoS 1, manual acknowledgement.

    ``protocol`` "auto" tries MQTT 5 and falls back to 3.1.1 when the broker
    refuses the protocol version. With MQTT 5 the topics are subscribed as a
    shared subscription (unless the broker says it has none), so several
    ingest processes split the load; with 3.1.1 each process receives every
    message, so run one per topic set.
    """

    def __init__(
        self,
        *,
        address: BrokerAddress,
        client_id: str,
        ingestor: Ingestor,
        protocol: Protocol = "auto",
        topics: Sequence[str] = (READINGS_TOPIC,),
        group: str = SHARE_GROUP,
        session_expiry: int = SESSION_EXPIRY,
        keepalive: int = 60,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.ingestor = ingestor
        self.protocol: Protocol = protocol
        self.topics = tuple(topics)
        self.group = group
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.client: paho.Client | None = None
        self.version: Literal["5", "3"] = "3" if protocol == "3" else "5"
        self.subscribed = threading.Event()  # the broker granted the subscription (on the latest connection)
        self._answered = threading.Event()  # a CONNACK came (or a version refusal)
        self._disconnected = threading.Event()
        self._refused_version = False
        self._opened_at: float | None = None  # when the TCP connection of the current attempt opened
        self._stopping = False

    def _build(self) -> paho.Client:
        v5 = self.version == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        configure(client, self.address)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_socket_open = self._on_socket_open
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self.ingestor.on_message
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.session_expiry
            # Unacknowledged messages the broker may send us at once: two batches, one committing, one filling.
            properties.ReceiveMaximum = min(2 * self.ingestor.batch_size, 65535)
        client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=self.keepalive,
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        return client

    def start(self, stop: threading.Event) -> bool:
        """Connects (in the background, retrying with backoff) and returns once connected; False if stopped first."""
        while not stop.is_set():
            self._answered.clear()
            self._refused_version = False
            self._opened_at = None
            self.client = self._build()
            self.ingestor.client = self.client
            self.client.loop_start()
            while not self._answered.wait(0.2):
                if stop.is_set():
                    return False
                if self._probing() and self._opened_at and time.monotonic() - self._opened_at > PROBE_TIMEOUT:
                    # Some 3.1.1 brokers (amqtt) neither answer an MQTT 5 CONNECT nor close the connection.
                    logger.warning("no answer to an MQTT 5 CONNECT in %gs; trying MQTT 3.1.1", PROBE_TIMEOUT)
                    self._refused_version = True
                    break
            if not self._refused_version:
                return True
            self.client.disconnect()  # the network thread closes the socket on its way out
            self.client.loop_stop()
            self.version = "3"
            logger.info("the broker does not speak MQTT 5; connecting with MQTT 3.1.1 (no shared subscription)")
        return False

    def _probing(self) -> bool:
        return self.protocol == "auto" and self.version == "5" and not self._answered.is_set()

    def close(self, timeout: float = 5.0) -> None:
        """Sends what is queued (the last acknowledgements), then a normal DISCONNECT: the session stays."""
        self._stopping = True
        if self.client is None:
            return
        self._disconnected.clear()
        if self.client.is_connected():
            self.client.disconnect()
            self._disconnected.wait(timeout)
        self.client.loop_stop()

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if reason.is_failure:
            if reason.value == UNSUPPORTED_PROTOCOL_VERSION and self.version == "5" and self.protocol == "auto":
                self._refused_version = True
                self._answered.set()
                return
            logger.error("the broker %s refused the connection: %s; retrying", self.address, reason)
            return
        self.ingestor.connected()
        self.subscribed.clear()
        shared = self.version == "5"
        if shared and properties is not None and getattr(properties, "SharedSubscriptionAvailable", 1) == 0:
            logger.warning("the broker offers no shared subscriptions: this process takes every message")
            shared = False
        logger.info(
            "connected to %s as %s (MQTT %s, session %s)",
            self.address,
            self.client_id,
            "5" if self.version == "5" else "3.1.1",
            "resumed" if flags.session_present else "new",
        )
        filters = [(topic_filter(topic, shared=shared, group=self.group), 1) for topic in self.topics]
        client.subscribe(filters)
        logger.info("subscribing to %s at QoS 1", ", ".join(name for name, _ in filters))
        self._answered.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        logger.warning("cannot reach the broker %s; retrying", self.address)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._opened_at = time.monotonic()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        self._disconnected.set()
        if self._probing() and self._opened_at is not None:
            # Closed before any CONNACK: a broker that does not understand the MQTT 5 CONNECT.
            self._refused_version = True
            self._answered.set()
            return
        if self._stopping:
            logger.info("disconnected from %s", self.address)
        else:
            logger.warning("lost the connection to %s (%s); reconnecting", self.address, reason)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        refused = [str(reason) for reason in reasons if reason.is_failure]
        if refused:
            logger.error("the broker refused the subscription: %s (check its ACL for this user)", ", ".join(refused))
        else:
            logger.info("subscribed (granted QoS %s)", ", ".join(str(reason.value) for reason in reasons))
            self.subscribed.set()


def serve(connection: Connection, ingestor: Ingestor, stop: threading.Event) -> bool:
    """Runs until ``stop`` is set: connects, commits and acknowledges; then drains, acknowledges, disconnects."""
    try:
        if not connection.start(stop):
            return True
        return ingestor.run(stop)
    finally:
        connection.close()
        logger.info("%d messages committed, %d acknowledged", ingestor.stored, ingestor.acked)
