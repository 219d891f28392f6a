"""`make bench`, cold chain end to end: readings through the real services, beside the raw limits.

Simulated loggers publish signed messages to Mosquitto; ``ingest_mqtt``
processes commit them to the inbox; ``celery worker`` processes (Redis) turn
them into readings and evaluate the shipments' contracts in PostgreSQL. Every
part runs as its own process on the bench's throwaway database, as deployed,
on a queue, topics and subscription group of its own. Beside each figure, its
limit measured in the same run on the same services: paho publish to
subscribe, and PostgreSQL COPY of the same reading rows.

Figures are measured, never asserted.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import io
import itertools
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone
from paho.mqtt.enums import CallbackAPIVersion

from iot_ingest import mqtt, services, simulator
from iot_ingest.models import InboxMessage, Reading
from ledger import services as ledger
from traceability import coldchain, selectors
from traceability import services as traceability
from traceability.celery import app as celery_app
from traceability.models import Alert, Batch, Organisation, Shipment

PER_MESSAGE = 10  # readings per message, as loggers send them
LOGGERS = 50  # each on a dispatched shipment of its own
PUBLISHERS = 3  # paho clients publishing the load
WINDOW = 100  # QoS 1 messages a publisher keeps in flight, awaiting their PUBACK
# Published but not yet in the inbox, at most: Mosquitto queues 1000 messages per
# subscriber by default (max_queued_messages) and silently drops QoS 1 messages beyond;
# at 1000 it still dropped some, now and then.
AHEAD = 500
STALL = 15.0  # seconds without a message arriving, all published, before the bench says some were dropped
# The load at which alert latency is measured: the goal's 20,000 readings/s, when the end-to-end rate reached
# it; else PACED_SHARE of the rate reached, a load that is kept up with.
GOAL_RATE = 20_000.0  # readings/s
PACED_SHARE = 0.8
PROBE_EVERY = 0.2  # seconds between contract-breaking messages during the paced load ...
PROBES = 300  # ... for at most a minute
PROBE_CELSIUS = 26.0  # at or above a refrigerated contract's hard ceiling (25 °C): critical at once
PROBE_ALERT = "rule:hard ceiling"
STAGES = ("to the inbox", "queued for a worker", "processed and evaluated", "alert seen committed")
TICK = 0.01  # seconds of paced messages a publisher may send at once, rather than one sleep each
POLL = 0.05  # seconds between looks at the inbox, the alerts and the queue
TIMEOUT = 600.0  # seconds the load may take before the bench gives up
LOG_TAIL = 2000  # characters of a failed process's log shown


@dataclass(frozen=True)
class Pair:
    """A logger riding on a shipment of its own."""

    device_id: str
    key: Ed25519PrivateKey
    shipment_id: int


@dataclass(frozen=True)
class Message:
    topic: str
    raw: bytes


@dataclass
class Result:
    messages: int
    seconds: float  # from the first publish until every reading is stored and evaluated
    stored_seconds: float  # from the first publish until every reading is stored
    readings_rate: float
    inbox_rate: float  # messages/s from the first publish until all are in the inbox
    latencies_ms: list[float]  # publish of a contract-breaking reading -> its alert committed, at paced_rate
    latency_stages_ms: dict[str, list[float]] = field(default_factory=dict)  # STAGES -> each probe's share
    paced_rate: float = 0.0  # messages/s
    offered_rate: float = 0.0  # readings/s published by the paced load: below its pace, the inbox held it back
    kept_rate: float = 0.0  # readings/s stored while the paced load was published: below that, a queue grew
    peak_mib: dict[str, float] = field(default_factory=dict)  # role -> largest VmHWM
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # role -> CPU time during the load
    paced_seconds: float = 0.0  # from the paced load's first publish until every reading is stored and evaluated
    paced_cpu_seconds: dict[str, float] = field(default_factory=dict)  # role -> CPU time meanwhile
    copy_rate: float = 0.0
    commit_rate: float = 0.0  # readings/s put under a Merkle root in the ledger, after the load
    paho_rate: float = 0.0
    notes: list[str] = field(default_factory=list)


def missing_service() -> str | None:
    """Says which service the table needs and cannot reach; None when PostgreSQL, Redis and Mosquitto are there."""
    if connection.vendor != "postgresql":
        return f"skipped: the database is {connection.vendor}; set DATABASE_URL to PostgreSQL"
    broker = settings.CELERY_BROKER_URL
    if not broker.startswith(("redis://", "rediss://")):
        return f"skipped: CELERY_BROKER_URL is {broker}; set it to Redis (redis://...)"
    try:
        redis.Redis.from_url(broker, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        return f"skipped: Redis at CELERY_BROKER_URL does not answer ({error})"
    try:
        address = mqtt.broker_address(settings.MQTT_URL)
        socket.create_connection((address.host, address.port), timeout=2).close()
    except (ValueError, OSError) as error:
        return f"skipped: no MQTT broker at MQTT_URL ({error})"
    return None


def process_environment() -> dict[str, str]:
    """What a process the bench starts needs: this (throwaway) database and the ledger key, production settings."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}{password}@{host}/{db['NAME']}",
        "LEDGER_KEY_FILE": str(settings.LEDGER_KEY_FILE),
        "LEDGER_CREATE_KEY": "0",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
    }


def run(*, readings: int, rate: float, ingest: int, workers: int, pool: str) -> Result:
    """Publishes ``readings`` (10 a message; ``rate`` messages/s, 0: as fast as the inbox takes them) through
    ingest and worker processes and times them; then half as many again at ``paced_rate``, probing the alert
    latency meanwhile.

    Creates loggers and shipments in the current (throwaway) database, starts
    the processes on it, and stops them (their process groups) before returning.
    """
    count = max(readings // PER_MESSAGE // LOGGERS, 2) * LOGGERS
    paced = count // 2
    per_logger = (count + paced) // LOGGERS * PER_MESSAGE
    arming = datetime.timedelta(seconds=coldchain.DEFAULT_ARMING_SECONDS + 60)
    now = timezone.now()
    # Each logger's readings one second apart, from a minute after arming until a minute ago.
    dispatched = now - datetime.timedelta(seconds=per_logger + 60) - arming
    prefix = f"coldtrace-bench-{os.getpid()}/v1/devices"  # not the loggers' topic: no other ingest sees the load
    fleet = fleet_create(LOGGERS, name="bench-load", dispatched_at=dispatched)
    probe_pairs = fleet_create(PROBES, name="bench-probe", dispatched_at=now - arming)
    ledger.entries_sequence()  # the setup's ledger entries, so that the workers start with none pending
    with Stack(ingest=ingest, workers=workers, pool=pool, topic_filter=f"{prefix}/+/readings") as stack:
        # Each logger's messages in seq order, round robin: the second part carries on where the first ends.
        messages = load_sign(fleet, count + paced, first_at=int((dispatched + arming).timestamp()), prefix=prefix)
        load = messages[:count]
        probes = [(pair.shipment_id, probe_sign(pair, prefix=prefix)) for pair in probe_pairs]
        stack.ready()
        result = _drive(stack, load, [], rate=rate)
        result.paced_rate = paced_rate(result.readings_rate) / PER_MESSAGE
        steady = _drive(stack, messages[count:], probes, rate=result.paced_rate)
        result.latencies_ms, result.latency_stages_ms = steady.latencies_ms, steady.latency_stages_ms
        result.offered_rate, result.kept_rate = steady.offered_rate, steady.kept_rate
        result.paced_seconds, result.paced_cpu_seconds = steady.seconds, steady.cpu_seconds
        result.notes += steady.notes
        result.peak_mib = stack.peak_mib()
    result.notes += _shortfalls(len(messages) * PER_MESSAGE, probe_pairs)
    result.paho_rate, received = paho_rate(load)
    if received < len(load):
        result.notes.append(f"raw paho: {len(load) - received:,} of {len(load):,} messages never arrived")
    result.copy_rate = copy_rate()
    result.commit_rate = commit_rate([pair.shipment_id for pair in fleet])
    return result


def paced_rate(readings_rate: float) -> float:
    """Readings/s at which alert latency is measured, given the end-to-end rate reached."""
    return GOAL_RATE if readings_rate >= GOAL_RATE else readings_rate * PACED_SHARE


# The fleet -------------------------------------------------------------------


def fleet_create(count: int, *, name: str, dispatched_at: datetime.datetime) -> list[Pair]:
    """``count`` loggers, each on a refrigerated shipment of its own, dispatched at ``dispatched_at``.

    Made through the services from the demo data, as a manufacturer would:
    create (one unit of stock), dispatch, register the logger, assign it.
    """
    cold = Batch.objects.filter(product__storage_profile=coldchain.StorageProfile.REFRIGERATED, status="active")
    first = cold.select_related("product__manufacturer").first()
    if first is None:
        raise RuntimeError("the bench needs the demo data (seed_demo): no active refrigerated batch")
    maker = first.product.manufacturer
    actor = User.objects.filter(membership__organisation=maker)[0]
    carrier = Organisation.objects.filter(kind=Organisation.Kind.LOGISTICS)[0]
    consignee = Organisation.objects.filter(kind=Organisation.Kind.DISPENSER)[0]
    origin, destination = maker.sites.get(), consignee.sites.order_by("gln")[0]
    batches = cold.filter(product__manufacturer=maker)
    stock = {batch: selectors.batch_available(organisation=maker, batch=batch) for batch in batches}
    pairs = []
    with transaction.atomic():
        for number in range(count):
            batch = max(stock, key=stock.__getitem__)
            stock[batch] -= 1
            shipment = traceability.shipment_create(
                actor=actor,
                carrier=carrier,
                consignee=consignee,
                origin=origin,
                destination=destination,
                items=[traceability.ItemSpec(batch=batch, quantity=1)],
            )
            traceability.shipment_dispatch(actor=actor, shipment=shipment, occurred_at=dispatched_at)
            device, key = services.device_register(device_id=f"{name}-{number:04d}", organisation=maker)
            assert key is not None
            services.device_assign(actor=actor, device=device, shipment=shipment, starts_at=dispatched_at)
            pairs.append(Pair(device.device_id, key, shipment.pk))
    return pairs


def load_sign(pairs: Sequence[Pair], count: int, *, first_at: int, prefix: str) -> list[Message]:
    """``count`` messages of 2-8 °C readings a second apart, round robin over the loggers, each in seq order."""
    messages = []
    for number in range(count):
        pair, seq = pairs[number % len(pairs)], number // len(pairs)
        at = first_at + seq * PER_MESSAGE
        samples = [simulator.Sample(at + i, 4.5 + (seq + i) % 10 / 10) for i in range(PER_MESSAGE)]
        raw = simulator.build_message(pair.key, pair.device_id, seq, samples)
        messages.append(Message(f"{prefix}/{pair.device_id}/readings", raw))
    return messages


def probe_sign(pair: Pair, *, prefix: str) -> Message:
    """A message whose last reading, just now, is past the hard ceiling: its shipment alerts at once."""
    at = int(time.time()) - PER_MESSAGE
    samples = [simulator.Sample(at + i, 5.0) for i in range(PER_MESSAGE - 1)]
    samples.append(simulator.Sample(at + PER_MESSAGE - 1, PROBE_CELSIUS))
    return Message(f"{prefix}/{pair.device_id}/readings", simulator.build_message(pair.key, pair.device_id, 0, samples))


# The processes ---------------------------------------------------------------


class Stack:
    """``ingest_mqtt`` and ``celery worker`` processes on this database, on a queue and topics of their own.

    A context manager: leaving it stops every process group it started; the
    processes' logs are kept (and named in the error) only when it fails.
    """

    def __init__(self, *, ingest: int, workers: int, pool: str, topic_filter: str) -> None:
        self.queue = f"coldtrace-bench-{os.getpid()}"
        self.logs = Path(tempfile.mkdtemp(prefix=f"{self.queue}-"))
        self.names = [f"{self.queue}-w{n}@{socket.gethostname()}" for n in range(workers)]
        worker = [sys.executable, "-m", "celery", "-A", "traceability", "worker", "-Q", self.queue, "--pool", pool]
        worker += ["--concurrency", "1", "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
        subscriber = [sys.executable, "manage.py", "ingest_mqtt", "--url", settings.MQTT_URL, "--session-expiry", "0"]
        subscriber += ["--group", self.queue, "--topic", topic_filter]
        self.commands = {f"ingest-{n}": [*subscriber, "--client-id", f"{self.queue}-ingest-{n}"] for n in range(ingest)}
        self.commands |= {f"worker-{n}": [*worker, "-n", name] for n, name in enumerate(self.names)}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Stack:
        environment = self.environment()
        try:
            for role, command in self.commands.items():
                with (self.logs / f"{role}.log").open("wb") as log:
                    self.processes[role] = subprocess.Popen(  # noqa: S603 (our interpreter, our arguments)
                        command, cwd=settings.BASE_DIR, env=environment, stdout=log, stderr=log,
                        start_new_session=True,
                    )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.stop()
        if kind is None:
            shutil.rmtree(self.logs, ignore_errors=True)

    def environment(self) -> dict[str, str]:
        """The bench's database, broker, queue and ledger key; production settings otherwise."""
        return {
            **process_environment(),
            "CELERY_QUEUE": self.queue,
            # Workers de-duplicate evaluation requests in the cache, so they share one, as deployed: the broker's
            # Redis database, away from a deployment's own cache (a separate database in docker/.env.example).
            "CACHE_URL": settings.CELERY_BROKER_URL,
            "LOG_LEVEL": "INFO",
        }

    def ready(self, timeout: float = 60.0) -> None:
        """Waits until every ingest process is subscribed and every worker answers a ping."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            logs = [self.log(role) for role in self.processes if role.startswith("ingest")]
            subscribed = all("subscribed (granted QoS" in log for log in logs)
            if subscribed and len(celery_app.control.ping(destination=self.names, timeout=0.5)) == len(self.names):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the ingest and worker processes were not ready within {timeout:g} s; logs in {self.logs}")

    def check(self) -> None:
        """Raises, with its log, when a process has exited."""
        for role, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{role} exited ({process.returncode}):\n{self.log(role)[-LOG_TAIL:]}")

    def log(self, role: str) -> str:
        return (self.logs / f"{role}.log").read_text(errors="replace")

    def pids(self) -> dict[int, str]:
        """pid -> role of the processes working for the load: ours, prefork children, our database sessions."""
        pids = {pid: role.split("-")[0] for role, p in self.processes.items() for pid in [p.pid, *_children(p.pid)]}
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return pids | {pid: "postgres" for (pid,) in cursor.fetchall()}

    def peak_mib(self) -> dict[str, float]:
        """The largest peak resident memory (VmHWM) among each role's processes, prefork children included."""
        peaks: dict[str, float] = collections.defaultdict(float)
        for pid, role in self.pids().items():
            peaks[role] = max(peaks[role], _vm_hwm_kib(pid) / 1024)
        return {role: peak for role, peak in peaks.items() if role != "postgres"}

    def stop(self) -> None:
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)  # ingest drains, workers finish their task
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            _signal_group(process, signal.SIGKILL)
            process.wait()
        bindings = [f"_kombu.{kind}.{self.queue}" for kind in ("binding", "binding_permanent")]
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(*_queue_keys(self.queue), *bindings)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)  # its own group (start_new_session): prefork children too


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").glob("*") for child in _read(task / "children").split()]


def _cpu_seconds(pid: int) -> float:
    fields = _read(Path(f"/proc/{pid}/stat")).rsplit(")", 1)[-1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0  # utime + stime


def _vm_hwm_kib(pid: int) -> int:
    lines = _read(Path(f"/proc/{pid}/status")).splitlines()
    return next((int(line.split()[1]) for line in lines if line.startswith("VmHWM:")), 0)


def _read(path: Path) -> str:
    """A /proc file's text; empty once the process is gone."""
    try:
        return path.read_text()
    except OSError:
        return ""


def _queue_keys(queue: str) -> list[str]:
    """The Redis lists behind a Celery queue, one per priority step (kombu's naming)."""
    return [queue] + [f"{queue}\x06\x16{priority}" for priority in (3, 6, 9)]


class CpuMeter:
    """CPU time each role used between the first and the last sample, processes that came and went included."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.bench = time.process_time()
        self.sample(first=True)

    def sample(self, *, first: bool = False) -> None:
        for pid, role in self.stack.pids().items():
            used = _cpu_seconds(pid)
            if first:
                self.first[pid] = used
            self.last[pid] = (role, used)

    def used(self) -> dict[str, float]:
        totals: dict[str, float] = collections.defaultdict(float)
        for pid, (role, used) in self.last.items():
            totals[role] += used - self.first.get(pid, 0.0)
        totals["bench"] = time.process_time() - self.bench  # publishing and watching
        return dict(totals)


# Publishing ------------------------------------------------------------------


class Gate:
    """Lets publishers through at ``rate`` messages/s at most (0: no limit), and holds them back while ``ahead``
    messages are published and not yet arrived, so that none is dropped."""

    def __init__(self, ahead: int, rate: float = 0.0) -> None:
        self.ahead = ahead
        self.gap = 1 / rate if rate > 0 else 0.0
        self.published = self.arrived = 0
        self._next = 0.0
        self._condition = threading.Condition()

    def take(self) -> None:
        with self._condition:
            while self.published - self.arrived >= self.ahead:
                self._condition.wait(0.1)
            self.published += 1
            self._next = max(self._next + self.gap, time.monotonic())
            due = self._next
        ahead = due - time.monotonic()
        if ahead > TICK:  # a sleep a message would cost the publishers (and the machine) more than the load
            time.sleep(ahead)

    def arrive(self, count: int) -> None:
        with self._condition:
            self.arrived = count
            self._condition.notify_all()


def _client(name: str) -> paho.Client:
    """A connected paho client, its network loop running."""
    address = mqtt.broker_address(settings.MQTT_URL)
    client_id = f"coldtrace-bench-{os.getpid()}-{name}"
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
    mqtt.configure(client, address)
    client.max_inflight_messages_set(WINDOW)
    connected = threading.Event()
    client.on_connect = lambda client, userdata, flags, reason, properties: connected.set()
    client.connect(address.host, address.port)
    client.loop_start()
    if not connected.wait(10):
        client.loop_stop()
        raise RuntimeError(f"the MQTT broker {address} did not accept {name}")
    return client


def _close(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


def publish(messages: Sequence[Message], gate: Gate, *, name: str, errors: list[BaseException]) -> None:
    """Publishes at QoS 1 as fast as the broker acknowledges (``WINDOW`` in flight) and the gate lets through."""
    try:
        client = _client(name)
        try:
            inflight: collections.deque[paho.MQTTMessageInfo] = collections.deque()
            for message in messages:
                gate.take()
                inflight.append(client.publish(message.topic, message.raw, qos=1))
                while len(inflight) > WINDOW:
                    inflight.popleft().wait_for_publish(30)
            while inflight:
                inflight.popleft().wait_for_publish(30)
        finally:
            _close(client)
    except BaseException as error:
        errors.append(error)


def _publishing(messages: Sequence[Message], gate: Gate, errors: list[BaseException], n: int) -> list[threading.Thread]:
    """``n`` publisher threads, started, sharing out the messages."""
    threads = [
        threading.Thread(
            target=publish, args=(messages[k::n], gate), kwargs={"name": f"bench-pub{k}", "errors": errors}
        )
        for k in range(n)
    ]
    for thread in threads:
        thread.start()
    return threads


# The end-to-end run ------------------------------------------------------------


def _drive(stack: Stack, load: list[Message], probe_messages: list[tuple[int, Message]], *, rate: float) -> Result:
    """Publishes the load, and probes while it lasts; returns once every reading is stored and evaluated."""
    watch = _Watch(stack.queue)
    probes = _Probes(probe_messages)
    gate, errors = Gate(AHEAD, rate), list[BaseException]()
    cpu = CpuMeter(stack)
    start = probes.start = time.time()
    threads = _publishing(load, gate, errors, PUBLISHERS)
    arrived, arriving = 0, start  # the inbox's count at the last look, and when it last grew
    offered: float | None = None  # readings/s published, from the first publish to the last
    kept: float | None = None  # readings/s stored over the same time
    try:
        for step in itertools.count():
            if errors:
                raise RuntimeError(f"publishing failed: {errors[0]!r}")
            if time.time() - start > TIMEOUT:
                raise RuntimeError(f"not done in {TIMEOUT:g} s: {watch.state(len(load) + len(probes.published))}")
            stack.check()
            probes.send()
            if (count := watch.arrived()) != arrived:
                arrived, arriving = count, time.time()
            gate.arrive(arrived - len(probes.published))  # the probes are not held back by the gate
            probes.look()
            published = not any(thread.is_alive() for thread in threads)
            if published and kept is None:
                took = time.time() - start
                offered, kept = len(load) * PER_MESSAGE / took, watch.processed() * PER_MESSAGE / took
            if published and arrived < len(load) + len(probes.published) and time.time() - arriving > STALL:
                raise RuntimeError(
                    f"messages were lost before the inbox: {watch.state(len(load) + len(probes.published))}; "
                    "did the MQTT broker drop some (Mosquitto's log: 'Outgoing messages are being dropped')?"
                )
            if watch.done(published=published, expected=len(load) + len(probes.published)):
                break
            if step % 10 == 0:
                cpu.sample()
            time.sleep(POLL)
        cpu.sample()
        probes.wait(deadline=time.time() + 10)
    finally:
        for thread in threads:
            thread.join()
        _close(probes.client)
    assert watch.inboxed_at is not None
    assert watch.done_at is not None
    assert watch.stored_at is not None
    result = Result(
        messages=len(load),
        seconds=watch.done_at - start,
        stored_seconds=watch.stored_at - start,
        readings_rate=len(load) * PER_MESSAGE / (watch.done_at - start),
        inbox_rate=(len(load) + len(probes.published)) / (watch.inboxed_at - start),
        latencies_ms=probes.latencies_ms(),
        latency_stages_ms=probes.stages(),
        cpu_seconds=cpu.used(),
        offered_rate=offered or 0.0,
        kept_rate=kept or 0.0,
    )
    result.notes += _missed(probes)
    return result


class _Probes:
    """Contract-breaking messages, one every PROBE_EVERY seconds: when each was published, when its alert was seen."""

    def __init__(self, probes: Sequence[tuple[int, Message]]) -> None:
        self.probes = list(probes)  # (shipment, message)
        self.shipments = [shipment for shipment, _ in self.probes]
        self.client = _client("probe")
        self.start = 0.0
        self.published: dict[int, float] = {}  # shipment -> wall-clock time, the workers' clock too
        self.alerted: dict[int, float] = {}

    def send(self) -> None:
        """Publishes the next probe when it is due."""
        if len(self.published) < len(self.probes) and time.time() >= self.start + len(self.published) * PROBE_EVERY:
            shipment, message = self.probes[len(self.published)]
            self.published[shipment] = time.time()
            self.client.publish(message.topic, message.raw, qos=1)

    def look(self) -> None:
        """Notes the alerts committed since the last look: seen, so their commit is visible.

        By shipment, not by id: two workers commit alerts out of id order.
        """
        waiting = [shipment for shipment in self.published if shipment not in self.alerted]
        seen = time.time()
        alerts = Alert.objects.filter(key=PROBE_ALERT, shipment_id__in=waiting) if waiting else Alert.objects.none()
        for shipment in alerts.values_list("shipment_id", flat=True):
            self.alerted.setdefault(shipment, seen)

    def wait(self, *, deadline: float) -> None:
        """Waits for the alerts of the probes published so far."""
        while len(self.alerted) < len(self.published) and time.time() < deadline:
            self.look()
            time.sleep(POLL)

    def latencies_ms(self) -> list[float]:
        return [(self.alerted[s] - t) * 1000 for s, t in self.published.items() if s in self.alerted]

    def stages(self) -> dict[str, list[float]]:
        """Where each alerted probe's latency went, in ms: publish to the inbox's receipt (Mosquitto, ingest),
        receipt to processing (queue), processing to the alert raised (store, commit, evaluation), and raised
        to seen committed (the evaluation's commit, the bench's polling)."""
        topics = {message.topic: shipment for shipment, message in self.probes}
        received = {
            topics[topic]: (received_at.timestamp(), processed_at.timestamp() if processed_at else None)
            for topic, received_at, processed_at in InboxMessage.objects.filter(topic__in=topics).values_list(
                "topic", "received_at", "processed_at"
            )
        }
        raised = dict(
            Alert.objects.filter(key=PROBE_ALERT, shipment_id__in=self.alerted).values_list("shipment_id", "raised_at")
        )
        stages: dict[str, list[float]] = collections.defaultdict(list)
        for shipment, published in self.published.items():
            if shipment not in self.alerted or shipment not in received or shipment not in raised:
                continue
            inbox, processing = received[shipment]
            if processing is None:
                continue
            marks = [published, inbox, processing, raised[shipment].timestamp(), self.alerted[shipment]]
            for name, start, end in zip(STAGES, marks, marks[1:], strict=False):
                stages[name].append((end - start) * 1000)
        return dict(stages)


class _Watch:
    """When every message was in the inbox, and when every one was processed and its shipment evaluated."""

    def __init__(self, queue: str) -> None:
        self.base, self.counted = self._top(), InboxMessage.objects.count()
        self.keys = _queue_keys(queue)
        self.redis = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        self.routing = f'"{queue}"]'.encode()  # ends kombu's unacked entry [message, exchange, routing key]
        self.inboxed_at: float | None = None
        self.stored_at: float | None = None  # every message in the inbox processed; evaluations may be queued
        self.done_at: float | None = None
        self._idle_since: float | None = None

    def processed(self) -> int:
        """Messages of this run in the inbox and no longer pending (the backlog index counts the pending)."""
        return self.arrived() - InboxMessage.objects.filter(outcome=InboxMessage.Outcome.PENDING).count()

    def arrived(self) -> int:
        """About how many messages are in the inbox: ids come from a sequence, so the top id counts them cheaply
        (a rollback skips ids; two ingest processes commit out of id order)."""
        return self._top() - self.base

    def done(self, *, published: bool, expected: int) -> bool:
        """Done when all is in the inbox and, two looks in a row, nothing is pending there, queued or running."""
        now = time.time()
        if self.inboxed_at is None:
            if not (published and self.arrived() >= expected and self._counted() >= expected):
                return False
            self.inboxed_at = now
        if InboxMessage.objects.filter(outcome=InboxMessage.Outcome.PENDING).exists():
            self._idle_since = None
            return False
        self.stored_at = self.stored_at or now
        if self.busy():
            self._idle_since = None
            return False
        if self._idle_since is None:
            self._idle_since = now
            return False
        self.done_at = self._idle_since
        return True

    def busy(self) -> bool:
        """A task of the queue is waiting, or taken and not yet acknowledged (running: tasks are acked late)."""
        with self.redis.pipeline(transaction=True) as pipe:  # one snapshot: no task moves in between
            for key in self.keys:
                pipe.llen(key)
            pipe.hvals("unacked")
            *lengths, unacked = pipe.execute()
        return any(lengths) or any(entry.endswith(self.routing) for entry in unacked)

    def state(self, expected: int) -> str:
        """Where the load stands, for a run that does not finish (a task lost, messages dropped)."""
        pending = InboxMessage.objects.filter(outcome=InboxMessage.Outcome.PENDING).count()
        queue = "busy" if self.busy() else "idle"
        return f"{self.arrived():,} of {expected:,} messages in the inbox, {pending:,} pending; the queue is {queue}"

    def _counted(self) -> int:
        """Exactly how many messages are in the inbox; a scan, so only once the top id says all are there."""
        return InboxMessage.objects.count() - self.counted

    @staticmethod
    def _top() -> int:
        top: int | None = InboxMessage.objects.aggregate(top=Max("id"))["top"]
        return top or 0


def _shortfalls(readings: int, probes: Sequence[Pair]) -> list[str]:
    """What did not go as sent: load readings missing, messages not accepted."""
    notes = []
    stored = Reading.objects.exclude(shipment_id__in=[pair.shipment_id for pair in probes]).count()
    if stored != readings:
        notes.append(f"{stored:,} of {readings:,} load readings stored")
    outcomes = dict(InboxMessage.objects.values_list("outcome").annotate(n=Count("id")).values_list("outcome", "n"))
    if set(outcomes) != {InboxMessage.Outcome.ACCEPTED}:
        notes.append(f"inbox outcomes: {outcomes}")
    return notes


def _missed(probes: _Probes) -> list[str]:
    """Probes without an alert, or too few of them to span the load."""
    notes = []
    missing = len(probes.published) - len(probes.alerted)
    if missing:
        notes.append(f"{missing} of {len(probes.published)} probes had no alert 10 s after the load")
    if probes.probes and len(probes.published) == len(probes.probes):
        notes.append(f"the {len(probes.probes)} probes ran out before the load ended")
    return notes


# The limits ------------------------------------------------------------------


def paho_rate(messages: Sequence[Message]) -> tuple[float, int]:
    """Raw paho at QoS 1, one publisher here, one subscriber in a process of its own: (messages/s, received).

    The same message bytes, on a topic of the bench's own on the same broker,
    held back by the same gate as the load.
    """
    topic = f"coldtrace-bench-{os.getpid()}/raw"
    context = multiprocessing.get_context("fork")  # the subscriber needs nothing but paho
    received: Synchronized[int] = context.Value("q", 0, lock=False)  # type: ignore[assignment]
    last: Synchronized[float] = context.Value("d", 0.0, lock=False)  # type: ignore[assignment]
    ready, done = context.Event(), context.Event()
    subscriber = context.Process(target=_subscribe, args=(topic, received, last, ready, done), daemon=True)
    subscriber.start()
    try:
        if not ready.wait(10):
            raise RuntimeError("the raw subscriber did not subscribe within 10 s")
        gate, errors = Gate(AHEAD), list[BaseException]()
        start = time.time()
        (thread,) = _publishing([Message(topic, m.raw) for m in messages], gate, errors, 1)
        progress, count = time.monotonic(), -1
        while received.value < len(messages) and time.monotonic() - progress < 2:  # or nothing came for 2 s
            if received.value != count:
                count, progress = received.value, time.monotonic()
            gate.arrive(count)
            time.sleep(0.002)
        thread.join()
        if errors:
            raise RuntimeError(f"raw publishing failed: {errors[0]!r}")
        return received.value / (last.value - start), received.value
    finally:
        done.set()
        subscriber.join(10)
        if subscriber.is_alive():
            subscriber.kill()


def _subscribe(topic: str, received: Synchronized[int], last: Synchronized[float], ready: Any, done: Any) -> None:
    """The raw subscriber (a forked process): counts the messages; paho acknowledges each on receipt."""
    address = mqtt.broker_address(settings.MQTT_URL)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-raw-sub-{os.getpid()}", protocol=paho.MQTTv311)
    mqtt.configure(client, address)

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        last.value = time.time()
        received.value += 1

    client.on_message = on_message
    client.on_connect = lambda client, userdata, flags, reason, properties: client.subscribe(topic, qos=1)
    client.on_subscribe = lambda client, userdata, mid, reasons, properties: ready.set()
    client.connect(address.host, address.port)
    client.loop_start()
    done.wait(TIMEOUT)
    _close(client)


COMMITTED_AT_LEAST = 200_000  # readings the commit figure is measured over, in whole shipments


def commit_rate(shipment_ids: Sequence[int]) -> float:
    """Readings/s that ``readings_commit`` puts under a Merkle root in the ledger, in one process, as beat
    has it done every few minutes: work the end-to-end figure leaves out, on the same machine in production."""
    committed, start = 0, time.perf_counter()
    for shipment in Shipment.objects.filter(pk__in=shipment_ids).order_by("pk"):
        commit = services.readings_commit(shipment)
        committed += commit.count if commit is not None else 0
        if committed >= COMMITTED_AT_LEAST:
            break
    return committed / (time.perf_counter() - start)


def copy_rate() -> float:
    """Rows/s of a PostgreSQL COPY of the stored readings into a temporary table with the same columns, in
    the binary format processing writes."""
    table, count, rows = Reading._meta.db_table, Reading.objects.count(), io.BytesIO()
    with connection.cursor() as cursor:
        cursor.cursor.copy_expert(f"COPY {table} TO STDOUT WITH (FORMAT binary)", rows)
        rows.seek(0)
        cursor.execute(f"CREATE TEMPORARY TABLE bench_reading (LIKE {table})")
        try:
            start = time.perf_counter()
            cursor.cursor.copy_expert("COPY bench_reading FROM STDIN WITH (FORMAT binary)", rows)
            elapsed = time.perf_counter() - start
        finally:
            cursor.execute("DROP TABLE bench_reading")
    return count / elapsed


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile; 0 without values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))] if ordered else 0.0
