"""The production topology, for real, without containers: every process compose.yaml runs, as a subprocess.

Mosquitto from ``docker/mosquitto/`` (its ACL as it is, an account per logger
and one for ``coldtrace-ingest``), a Redis of the test's own, gunicorn, two
Celery workers, one beat and two ``ingest_mqtt`` in one MQTT 5 shared
subscription, all on the test's PostgreSQL database and each started with
compose.yaml's own command. Six loggers on six shipments replay three hours
of readings, time compressed, three of them with an excursion profile, each
signed in to the broker as itself. The test watches what a user would: every
reading stored once, the alerts, the ledger, the consumer page and
``/metrics``; and a logger that publishes as another is refused.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from iot_ingest import services, simulator
from iot_ingest.models import InboxMessage, Reading
from tests.brokers import Broker, connect, docker_mosquitto, readings, signed_in
from tests.conftest import Persona
from tests.factories import ProductFactory
from tests.iot_ingest.processes import (
    Fleet,
    Logger,
    Platform,
    Process,
    Processes,
    Redis,
    Sent,
    entries,
    free_port,
    unique,
    wait_until,
)
from tests.scenarios import register_batch
from tests.test_deployment import services as compose_services
from traceability import services as traceability
from traceability.models import Alert, Batch, Excursion, Product

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

# The load: three hours of device time at a reading every 2 min, five a message, replayed 360 times faster
# than real time (about 30 s). The freezing profile's event ends 170 min in, so three hours show it whole.
SINCE_MINUTES = 180
INTERVAL = 120
PER_MESSAGE = 5
SPEED = 360
MESSAGES_DUE = SINCE_MINUTES * 60 // (INTERVAL * PER_MESSAGE)  # a logger's messages due by now: 18
BUDGET_MINUTES = 30  # the spike (45 min at 12 °C) spends the stability budget: a breach
PROFILES = ("normal", "normal", "normal", "spike", "freezing", "gap")
SETTLE = 180.0  # seconds the platform may take to store and evaluate the whole load on a busy 2-core machine

# Alerts left open at the end, by profile (the product is freeze-sensitive). Data-gap alerts raised while a
# logger had not yet reported are resolved once its readings fill the gap; the gap profile's own gap stays.
ALERTS = {
    "normal": Counter[str](),
    "spike": Counter(
        [
            "rule:early warning, warm",
            "rule:stability budget 50 %",
            "rule:stability budget 80 %",
            "rule:stability budget spent",
        ]
    ),
    "freezing": Counter(["rule:early warning, cold", "rule:freeze", "freeze_thaw"]),
    "gap": Counter(["gap"]),
}
SPIKE_SECONDS = math.ceil(simulator.SPIKE[0] / INTERVAL) * INTERVAL  # 45 min at 12 °C, read every 2 min: 46 min
EXCURSIONS = {"spike": ("above", 12.0), "freezing": ("below", -2.0)}  # direction and level of the profile's event


def expected_load(profile: str) -> Sent:
    """The messages and readings a logger of ``profile`` sends in MESSAGES_DUE messages' time (gaps send none)."""
    logger = simulator.Logger(
        device_id="X",
        private_key=Ed25519PrivateKey.generate(),
        profile=profile,
        start=0,
        interval=INTERVAL,
        per_message=PER_MESSAGE,
    )
    sizes = [len(logger.take_samples()) for _ in range(MESSAGES_DUE)]
    return Sent(messages=sum(1 for size in sizes if size), readings=sum(sizes))


# The world: two batches of one product on six shipments, a logger on each -------------------------------


@dataclass
class World:
    fleet: Fleet
    held: Batch  # on the normal loggers' shipments
    troubled: Batch  # on the spike, freezing and gap loggers' shipments


def dispatch(*, manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> World:
    """Six shipments dispatched a little over three hours ago, each with a newly registered logger on board."""
    product: Product = ProductFactory(  # type: ignore[no-untyped-call,assignment]
        manufacturer=manufacturer.organisation, stability_budget_minutes=BUDGET_MINUTES
    )
    held = register_batch(manufacturer, product, lot="HELD1")
    troubled = register_batch(manufacturer, product, lot="TROUBLE1")
    left = timezone.now() - datetime.timedelta(minutes=SINCE_MINUTES + 1)
    fleet = Fleet()
    for profile in PROFILES:
        planned = traceability.shipment_create(
            actor=manufacturer.user,
            carrier=carrier.organisation,
            consignee=pharmacy.organisation,
            origin=manufacturer.site,
            destination=pharmacy.site,
            items=[traceability.ItemSpec(batch=held if profile == "normal" else troubled, quantity=10)],
        )
        shipment = traceability.shipment_dispatch(actor=manufacturer.user, shipment=planned, occurred_at=left)
        device, key = services.device_register(device_id=unique("LOG"), organisation=manufacturer.organisation)
        assert key is not None
        services.device_assign(actor=manufacturer.user, device=device, shipment=shipment, starts_at=left)
        fleet.loggers.append(Logger(device, key, profile, shipment))
    return World(fleet, held, troubled)


# The topology -------------------------------------------------------------------------------------------


def production_command(service: str, *extra: str, replace: dict[str, str] | None = None) -> list[str]:
    """compose.yaml's command for ``service``, run by this interpreter, options swapped by prefix, ``extra`` added."""
    argv = list(compose_services()[service]["command"])
    program = {"python": [sys.executable], "celery": [sys.executable, "-m", "celery"]}
    program["gunicorn"] = [sys.executable, "-m", "gunicorn"]
    replaced = [next((new for old, new in (replace or {}).items() if arg.startswith(old)), arg) for arg in argv[1:]]
    return [*program[argv[0]], *replaced, *extra]


@dataclass
class Topology:
    processes: Processes
    broker: Broker
    redis: Redis
    platform: Platform
    web: str  # gunicorn's base URL
    metrics_key: str
    services: list[Process]  # the long-running processes: any of them exiting fails the test

    def get(self, path: str, **headers: str) -> tuple[int, str]:
        request = urllib.request.Request(self.web + path, headers=headers)  # noqa: S310 (our own server)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as Prometheus reads it: sample name (with its labels, if any) -> value."""
        status, body = self.get("/metrics", Authorization=f"Bearer {self.metrics_key}")
        assert status == 200, body
        return {
            sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }

    def wait(self, what: str, condition: Callable[[], bool], *, fleet: Fleet, timeout: float = SETTLE) -> None:
        wait_until(
            what,
            condition,
            processes=self.processes,
            watch=self.services,
            state=fleet.state,
            timeout=timeout,
        )


def start(processes: Processes, directory: Path, devices: Sequence[str]) -> Topology:
    """Every process of compose.yaml, started at once, then waited for; the platform's on the test's database."""
    broker = docker_mosquitto(processes, directory, ["coldtrace-ingest", *devices])
    redis = Redis(processes)
    platform = Platform(processes, broker_url=redis.url, mqtt_url=broker.url("coldtrace-ingest"))
    metrics_key = secrets.token_urlsafe(16)
    platform.env |= {
        "METRICS_KEY": metrics_key,
        "CACHE_URL": f"rediscache://127.0.0.1:{redis.port}/1",  # as docker/.env.example: one cache for all
    }
    port = free_port()
    web = processes.start(
        "gunicorn", production_command("web", replace={"--bind=": f"--bind=127.0.0.1:{port}"}), env=platform.env
    )
    workers = [
        processes.start("worker", production_command("worker", "--hostname", f"worker{n}@%h"), env=platform.env)
        for n in (1, 2)
    ]
    beat = processes.start(
        "beat",
        production_command("beat", replace={"/app/var/run/": str(directory / "celerybeat-schedule")}),
        env=platform.env,
    )
    ingests = [processes.start("ingest", production_command("ingest"), env=platform.env) for _ in (1, 2)]
    assert redis.process is not None
    running = [broker.process, redis.process, web, *workers, beat, *ingests]
    topology = Topology(processes, broker, redis, platform, f"http://127.0.0.1:{port}", metrics_key, running)
    for worker in workers:
        worker.wait_for_line(" ready.")
    beat.wait_for_line("beat: Starting")
    for ingest in ingests:
        ingest.wait_for_line("subscribed (granted")
    wait_until(
        "gunicorn to answer /health/",
        lambda: _answers(topology, "/health/"),
        processes=processes,
        watch=topology.services,
    )
    return topology


def _answers(topology: Topology, path: str) -> bool:
    try:
        return topology.get(path)[0] == 200
    except OSError:
        return False


def simulate(topology: Topology, logger: Logger, directory: Path) -> Process:
    """``simulate_devices`` for one logger, signed in to the broker as the logger itself (MQTT_URL).

    One process per logger: one simulator signs all its loggers in with the
    one account of MQTT_URL, and the ACL lets an account publish only to the
    topics of the logger of its own name.
    """
    keys = directory / f"{logger.device_id}.json"
    keys.write_text(
        json.dumps({"devices": [{"device_id": logger.device_id, "private_key": logger.key.private_bytes_raw().hex()}]})
    )
    options = ["--keys", str(keys), "--state", str(directory / f"{logger.device_id}-state.json")]
    options += ["--since", str(SINCE_MINUTES), "--interval", str(INTERVAL), "--per-message", str(PER_MESSAGE)]
    options += ["--speed", str(SPEED), "--messages", str(expected_load(logger.profile).messages), "--seed", "7"]
    options += ["--excursion", f"{logger.device_id}={logger.profile}"]
    env = topology.platform.env | {"MQTT_URL": topology.broker.url(logger.device_id)}
    command = [sys.executable, "manage.py", "simulate_devices", *options]
    return topology.processes.start(f"simulate-{logger.profile}", command, env=env)


# The checks ----------------------------------------------------------------------------------------------


def forged(topology: Topology, fleet: Fleet) -> list[bytes]:
    """One logger publishes, under its own account, a message on another logger's topic: MQTT 5 and 3.1.1.

    MQTT 5's PUBACK says "Not authorized"; MQTT 3.1.1's PUBACK cannot say so,
    and the broker drops the message silently. Returns the payloads, which
    must never reach the inbox.
    """
    forger, victim = fleet.loggers[0], fleet.loggers[1]
    payloads = []
    for seq, protocol in enumerate((paho.MQTTv5, paho.MQTTv311), start=1):
        samples = [simulator.Sample(int(time.time()) - 60, 5.0)]
        payload = simulator.build_message(forger.key, victim.device_id, seq, samples)
        client = signed_in(topology.broker, forger.device_id, protocol=protocol)
        answer = client.publish(readings(victim.device_id), payload)
        if protocol == paho.MQTTv5:
            assert answer.getName() == "Not authorized", answer
            assert answer.value == 0x87
        else:
            assert not answer.is_failure, "MQTT 3.1.1's PUBACK carries no reason"
        client.close()
        payloads.append(payload)
    anonymous = connect(topology.broker, None, protocol=paho.MQTTv5)
    assert anonymous.connack is not None
    assert anonymous.connack.is_failure, anonymous.connack
    anonymous.close()
    return payloads


def settled(topology: Topology, fleet: Fleet, sent: Sent) -> bool:
    """Every message stored and processed, every alert the profiles raise raised, and no task left to run."""
    if not fleet.settled(sent):
        return False
    for logger in fleet.loggers:
        raised = Counter(
            Alert.objects.filter(shipment=logger.shipment)
            .exclude(status=Alert.Status.RESOLVED)
            .values_list("key", flat=True)
        )
        if raised != ALERTS[logger.profile]:
            return False
        if Excursion.objects.filter(shipment=logger.shipment, ended_at__isnull=True).exists():
            return False
    return topology.redis.backlog(topology.platform.queue) == 0


def assert_stored_exactly_once(fleet: Fleet, sent: Sent, forgeries: list[bytes]) -> None:
    inbox = fleet.inbox()
    assert inbox.get("accepted") == sent.messages, inbox
    # A copy the broker delivered again (after a reconnect) is stored and settled as a duplicate: allowed.
    assert not (inbox.keys() - {"accepted", "duplicate", "all"}), f"pending, rejected or dead rows: {inbox}"
    assert InboxMessage.objects.count() == inbox["all"], "a message on no logger's topic reached the inbox"
    for payload in forgeries:
        assert not InboxMessage.objects.filter(raw=payload).exists(), "a message the broker refused was stored"
    accepted = InboxMessage.objects.filter(outcome="accepted")
    assert accepted.values("device", "seq").distinct().count() == sent.messages
    stored = Reading.objects.all()
    assert stored.count() == sent.readings
    assert stored.values("device", "message__seq", "index").distinct().count() == sent.readings
    assert stored.values("device", "measured_at").distinct().count() == sent.readings
    assert not stored.filter(shipment__isnull=True).exists()
    for logger in fleet.loggers:
        expected = expected_load(logger.profile)
        assert Reading.objects.filter(device=logger.device, shipment=logger.shipment).count() == expected.readings
        messages = Reading.objects.filter(device=logger.device).values("message__seq").distinct().count()
        assert messages == expected.messages, logger.profile


def assert_alerts_and_ledger(fleet: Fleet) -> None:
    for logger in fleet.loggers:
        alerts = Alert.objects.filter(shipment=logger.shipment)
        still = Counter(alerts.exclude(status=Alert.Status.RESOLVED).values_list("key", flat=True))
        resolved = set(alerts.filter(status=Alert.Status.RESOLVED).values_list("key", flat=True))
        assert still == ALERTS[logger.profile], f"{logger.profile}: {still}"
        assert resolved <= {"gap"}, f"{logger.profile}: only gaps filled by readings resolve themselves: {resolved}"
        excursions = Excursion.objects.filter(shipment=logger.shipment)
        found = entries(logger.shipment)
        assert found["shipment.dispatched"] == 1
        assert found["excursion.started"] == excursions.count(), found
        assert found["excursion.ended"] == excursions.filter(ended_at__isnull=False).count(), found
        assert found["contract.breached"] == alerts.filter(severity=Alert.Severity.CRITICAL).count(), found
        if logger.profile in EXCURSIONS:
            direction, level = EXCURSIONS[logger.profile]
            excursion = excursions.get()
            assert (excursion.direction, excursion.ended_at is not None) == (direction, True)
            # Sent to 0.01 °C: 12.0 + 0.4 comes back as 12.4, which is 0.40000000000000036 above 12.0.
            assert abs(excursion.peak_celsius - level) <= simulator.MAX_NOISE + 1e-9, excursion.peak_celsius
            if logger.profile == "spike":  # from its first reading above 8 °C to its first back in range
                assert excursion.duration_seconds == SPIKE_SECONDS, excursion.duration_seconds
            assert found["contract.breached"] >= 1
        else:
            assert not excursions.exists(), logger.profile


def cold_chain(topology: Topology, batch: Batch) -> str:
    """The consumer page of the batch's Digital Link, from gunicorn: the text of its cold-chain section."""
    link = urlsplit(batch.digital_link())
    status, html = topology.get(f"{link.path}?{link.query}" if link.query else link.path)
    assert status == 200, html[:2000]
    found = re.search(r'<section id="cold-chain".*?</section>', html, re.S)
    assert found, html[:2000]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group())).strip()


# The test ------------------------------------------------------------------------------------------------


def test_the_production_topology_stores_evaluates_and_shows_a_fleets_readings(
    processes: Processes, manufacturer: Persona, carrier: Persona, pharmacy: Persona, tmp_path: Path
) -> None:
    world = dispatch(manufacturer=manufacturer, carrier=carrier, pharmacy=pharmacy)
    fleet = world.fleet
    topology = start(processes, tmp_path, [logger.device_id for logger in fleet.loggers])
    forgeries = forged(topology, fleet)

    simulators = [simulate(topology, logger, tmp_path) for logger in fleet.loggers]
    topology.wait("the first readings", Reading.objects.exists, fleet=fleet)
    during = topology.metrics()
    topology.wait("every simulator to finish", lambda: not any(p.alive() for p in simulators), fleet=fleet)
    sent = Sent(0, 0)
    for process in simulators:
        one = topology.platform.sent(process)
        sent = Sent(sent.messages + one.messages, sent.readings + one.readings)
    expected = [expected_load(profile) for profile in PROFILES]
    assert sent == Sent(sum(e.messages for e in expected), sum(e.readings for e in expected))
    topology.wait("every message stored and evaluated", lambda: settled(topology, fleet, sent), fleet=fleet)
    after = topology.metrics()
    verdict = topology.platform.ledger_verified()

    assert verdict.startswith("OK "), verdict
    assert_stored_exactly_once(fleet, sent, forgeries)
    assert_alerts_and_ledger(fleet)
    # /metrics, scraped while the loggers were still sending and at the end.
    assert 0 < during["coldtrace_ingest_readings_total"] < sent.readings
    assert "coldtrace_inbox_backlog_messages" in during
    assert after["coldtrace_ingest_readings_total"] == sent.readings
    assert after["coldtrace_ingest_messages_received_total"] == sent.messages
    assert after["coldtrace_ingest_messages_total{outcome=accepted}"] == sent.messages
    assert after["coldtrace_inbox_backlog_messages"] == 0
    assert after["coldtrace_inbox_dead_letter_messages"] == 0
    # The consumer page of each batch, from gunicorn.
    held = cold_chain(topology, world.held)
    assert "Kept between 2 and 8 °C for all 3 legs" in held, held
    assert "3 legs are still in transit" in held, held
    troubled = cold_chain(topology, world.troubled)
    assert "Temperature problems on legs" in troubled, troubled  # legs dispatched at one moment: any order
    assert f"Too warm: 8 °C or more for {SPIKE_SECONDS // 60} min, up to " in troubled, troubled
    assert "Too cold: 2 °C or less for" in troubled, troubled
    assert "For part of this leg the temperature logger recorded nothing." in troubled, troubled
    # The shared subscription split the load between the two ingest processes, each message to one of them.
    committed = []
    for ingest in (p for p in topology.services if p.name.startswith("ingest")):
        assert ingest.stop() == 0, ingest.output()
        found = re.search(r"(\d+) messages committed, (\d+) acknowledged", ingest.log.read_text())
        assert found, ingest.output()
        committed.append(int(found[1]))
    assert sum(committed) == InboxMessage.objects.count()
    assert all(committed), committed
    # Each logger signed in to the broker as itself (mosquitto's log reaches its file when it exits).
    assert topology.broker.process.stop() == 0
    connections = topology.broker.process.log.read_text()
    for logger in fleet.loggers:
        assert f"u'{logger.device_id}'" in connections, logger.device_id
