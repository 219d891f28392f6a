"""Simulated loggers: the profiles' temperatures, their messages, and simulate_devices over MQTT and HTTPS."""

from __future__ import annotations

import datetime
import io
import json
import os
import random
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.management import CommandError, call_command
from paho.mqtt.enums import CallbackAPIVersion

from iot_ingest import mqtt, protocol, services, simulator
from iot_ingest.management.commands.simulate_devices import SEQ_RESERVE, SeqState
from iot_ingest.models import InboxMessage, Reading
from tests.brokers import docker_mosquitto, readings, signed_in
from tests.conftest import unavailable
from tests.factories import OrganisationFactory
from tests.iot_ingest.processes import Processes

INTERVAL = 300
HOUR = 3600.0
EVENT = simulator.EVENT_AT


def series(profile: str, hours: float = 24, seed: int = 1) -> list[tuple[float, float | None]]:
    rng = random.Random(seed)
    return [(n * INTERVAL, simulator.temperature(profile, n * INTERVAL, rng)) for n in range(int(hours * 12))]


def longest(readings: list[tuple[float, float | None]], condition: Any) -> float:
    """The longest run, in seconds, of consecutive readings meeting the condition."""
    best = run = 0
    for _, value in readings:
        run = run + 1 if value is not None and condition(value) else 0
        best = max(best, run)
    return best * INTERVAL


# Profiles ----------------------------------------------------------------------------


def test_a_normal_logger_reads_about_5_degrees_well_inside_2_to_8() -> None:
    values = [value for _, value in series("normal", hours=72)]
    assert all(value is not None and 4.6 <= value <= 5.4 for value in values)
    assert len(set(values)) > 10  # noisy, not flat


def test_a_spike_jumps_to_12_degrees_for_45_minutes_once() -> None:
    readings = series("spike")
    high = [offset for offset, value in readings if value is not None and value > 8]
    assert high == [EVENT + n * INTERVAL for n in range(9)]
    assert all(11.5 <= value <= 12.5 for offset, value in readings if offset in high and value is not None)


def test_warming_rises_past_8_degrees_and_stays_near_10_for_11_hours() -> None:
    readings = series("warming", hours=24)
    assert longest(readings, lambda v: v >= 8.0) > 10 * HOUR  # past the 10-hour single-event alarm
    assert longest(readings, lambda v: 9.5 <= v <= 10.5) >= 11 * HOUR - INTERVAL
    rising = [value or 0.0 for offset, value in readings if EVENT <= offset < EVENT + 2 * HOUR]
    assert rising[0] < 6
    assert rising[-1] > 9  # slowly: two hours from 5 to 10 degrees
    assert 4.6 <= (readings[-1][1] or 0.0) <= 5.4  # back to normal by the end of the day


def test_freezing_drops_to_minus_2_degrees_for_90_minutes() -> None:
    readings = series("freezing")
    assert 90 * 60 <= longest(readings, lambda v: -2.5 <= v <= -1.5) <= 95 * 60  # 19 readings 5 min apart
    assert longest(readings, lambda v: v <= -0.5) >= 60 * 60  # the freeze alarm's hour
    assert min(value for _, value in readings if value is not None) > -2.5


def test_a_gap_records_nothing_for_30_minutes() -> None:
    readings = series("gap")
    missing = [offset for offset, value in readings if value is None]
    assert missing == [EVENT + n * INTERVAL for n in range(6)]


def test_a_late_logger_reads_like_a_normal_one() -> None:
    assert series("late") == series("normal")


def test_the_same_seed_gives_the_same_readings() -> None:
    assert series("warming", seed=7) == series("warming", seed=7)
    assert series("warming", seed=7) != series("warming", seed=8)


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown profile 'tropical'"):
        simulator.temperature("tropical", 0, random.Random())


# Messages --------------------------------------------------------------------------------


def test_a_message_is_a_signed_pack_that_the_platform_resolves_to_the_same_readings() -> None:
    key = Ed25519PrivateKey.generate()
    samples = [simulator.Sample(1795867200 + 300 * n, 5.0 + n / 10) for n in range(10)]
    raw = simulator.build_message(key, "LOG-0042", 7, samples)

    envelope = protocol.parse(raw)
    protocol.verify(envelope, key.public_key().public_bytes_raw())
    payload = protocol.read_payload(envelope, topic_device="LOG-0042")
    readings = protocol.resolve(payload, received_at=datetime.datetime.fromtimestamp(1795870000, tz=datetime.UTC))

    assert (payload.device_id, payload.seq) == ("LOG-0042", 7)
    assert [(int(r.at.timestamp()), r.value, r.unit) for r in readings] == [(s.at, s.value, "Cel") for s in samples]
    assert payload.senml[0] == {"bn": "urn:dev:LOG-0042:", "bt": 1795867200, "bu": "Cel", "n": "temp", "v": 5.0}
    assert payload.senml[1] == {"n": "temp", "t": 300, "v": 5.1}


def test_an_empty_pack_is_never_built() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        simulator.senml("LOG-1", [])


def test_a_logger_sends_per_message_readings_due_once_the_last_is_taken() -> None:
    logger = simulator.Logger("LOG-1", Ed25519PrivateKey.generate(), "gap", start=1_000_000, per_message=6)
    assert logger.due_at() == 1_000_000 + 5 * 300
    dues, counts = [], []
    while logger.index < 36:
        dues.append(logger.due_at())
        counts.append(len(logger.take_samples()))
    assert dues == [1_000_000 + 300 * (6 * n + 5) for n in range(6)]
    assert counts == [6, 6, 0, 6, 6, 6]  # the gap's 30 minutes are the third message's 6 readings


def test_the_fleet_hands_out_messages_in_device_time_order_and_none_before_due() -> None:
    def make(device_id: str, start: int) -> simulator.Logger:
        return simulator.Logger(device_id, Ed25519PrivateKey.generate(), "normal", start=start, per_message=2)

    fleet = simulator.Fleet([make("A", 0), make("B", 100)])
    assert fleet.pop_due(299) is None
    order = []
    while (due := fleet.pop_due(1500)) is not None:
        order.append((due[0].device_id, due[1][-1].at))
    assert order == [("A", 300), ("B", 400), ("A", 900), ("B", 1000), ("A", 1500)]
    assert fleet.next_due() == 1600


def test_device_time_is_the_present_unless_replayed_faster_and_never_passes_it() -> None:
    assert simulator.device_clock(now=1000.0, began=900.0, start=0.0, speed=None) == 1000.0
    assert simulator.device_clock(now=910.0, began=900.0, start=0.0, speed=60.0) == 600.0
    assert simulator.device_clock(now=1000.0, began=900.0, start=0.0, speed=60.0) == 1000.0


# Seq state ---------------------------------------------------------------------------------


def test_seqs_are_reserved_on_disk_before_use_so_a_crash_never_replays_one(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = SeqState(path)
    first = state.take("LOG-1")
    assert abs(first - time.time() * 1000) < 60_000  # a new logger starts at the clock, in ms
    assert [state.take("LOG-1") for _ in range(3)] == [first + 1, first + 2, first + 3]
    on_disk = json.loads(path.read_text())["devices"]["LOG-1"]["next_seq"]
    assert on_disk == first + SEQ_RESERVE  # what a crash now would leave: past every seq handed out
    state.close()

    again = SeqState(path)
    assert again.take("LOG-1") == first + 4  # a clean close keeps the exact next seq
    again.close()


def test_two_simulators_cannot_share_a_state_file(tmp_path: Path) -> None:
    state = SeqState(tmp_path / "state.json")
    try:
        with pytest.raises(CommandError, match="another simulate_devices"):
            SeqState(tmp_path / "state.json")
    finally:
        state.close()


# The command ----------------------------------------------------------------------------------


def key_file(tmp_path: Path, count: int) -> tuple[Path, dict[str, Ed25519PrivateKey]]:
    keys = {f"SIM-{uuid.uuid4().hex[:10]}": Ed25519PrivateKey.generate() for _ in range(count)}
    path = tmp_path / "keys.json"
    entries = [{"device_id": d, "private_key": k.private_bytes_raw().hex()} for d, k in keys.items()]
    path.write_text(json.dumps({"devices": entries}))
    return path, keys


def simulate(keys: Path, state: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("simulate_devices", "--keys", str(keys), "--state", str(state), "--seed", "1", *args, stdout=out)
    return out.getvalue()


def test_a_missing_key_file_says_to_seed_the_demo(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"run manage\.py seed_demo first"):
        simulate(tmp_path / "nope.json", tmp_path / "state.json")


def test_an_excursion_for_a_logger_not_simulated_is_refused(tmp_path: Path) -> None:
    keys, _ = key_file(tmp_path, 1)
    with pytest.raises(CommandError, match="not simulated: LOG-9"):
        simulate(keys, tmp_path / "state.json", "--excursion", "LOG-9=spike")


class Subscriber:
    """Collects what arrives on the loggers' topics, as the ingest would."""

    def __init__(self, url: str, topics: list[str]) -> None:
        address = mqtt.broker_address(url)
        self.received: dict[str, list[bytes]] = defaultdict(list)
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:10]}")
        mqtt.configure(self.client, address)
        self.client.on_connect = lambda client, *_: client.subscribe([(topic, 1) for topic in topics])
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.received[message.topic].append(bytes(message.payload))

    def count(self) -> int:
        with self.lock:
            return sum(map(len, self.received.values()))

    def wait_for(self, count: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker_url() -> str:
    url = os.environ.get("MQTT_URL", settings.MQTT_URL)
    address = mqtt.broker_address(url)
    try:
        socket.create_connection((address.host, address.port), timeout=2).close()
    except OSError:
        unavailable(f"no MQTT broker at {url}: start Mosquitto or set MQTT_URL")
    return url


@pytest.mark.services
def test_the_simulator_publishes_validly_signed_messages_that_all_arrive(tmp_path: Path, broker_url: str) -> None:
    keys_path, keys = key_file(tmp_path, 3)
    late = next(iter(keys))
    topics = {f"coldtrace/v1/devices/{device_id}/readings": device_id for device_id in keys}
    subscriber = Subscriber(broker_url, list(topics))
    try:
        out = simulate(
            keys_path, tmp_path / "state.json", "--url", broker_url, "--since", "600", "--messages", "24",
            "--excursion", f"{late}=late",
        )  # fmt: skip
        subscriber.wait_for(24)
        rerun = simulate(keys_path, tmp_path / "state.json", "--url", broker_url, "--since", "60", "--messages", "3")
        subscriber.wait_for(27)
    finally:
        subscriber.close()

    assert out.startswith("24 messages (240 readings) from 3 loggers in ")
    assert rerun.startswith("3 messages (30 readings) from 3 loggers")
    seqs: dict[str, list[int]] = defaultdict(list)
    for topic, raws in subscriber.received.items():
        device_id = topics[topic]
        for raw in raws:
            envelope = protocol.parse(raw)
            protocol.verify(envelope, keys[device_id].public_key().public_bytes_raw())
            seqs[device_id].append(protocol.read_payload(envelope, topic_device=device_id).seq)
    assert sum(map(len, seqs.values())) == 27
    for device_id, device_seqs in seqs.items():
        assert len(set(device_seqs)) == len(device_seqs), f"{device_id} replayed a seq"
    assert len(seqs[late]) == 8 + 1  # its 8 held messages came, all at the end of the first run


@pytest.mark.django_db(transaction=True)
def test_the_simulator_uploads_over_https_and_the_platform_accepts_every_reading(
    tmp_path: Path, live_server: Any
) -> None:
    keys_path, keys = key_file(tmp_path, 2)
    organisation = OrganisationFactory()
    for device_id, key in keys.items():
        services.device_register(
            device_id=device_id, organisation=organisation, public_key=key.public_key().public_bytes_raw()
        )
    first = next(iter(keys))

    out = simulate(
        keys_path, tmp_path / "state.json", "--http", live_server.url, "--since", "300", "--messages", "10",
        "--per-message", "6", "--excursion", f"{first}=freezing",
    )  # fmt: skip

    assert "10 messages (60 readings) from 2 loggers" in out
    assert out.rstrip().endswith("(10 accepted)")
    assert InboxMessage.objects.filter(outcome=InboxMessage.Outcome.ACCEPTED, transport="http").count() == 10
    cold = Reading.objects.filter(device__device_id=first, value__lt=0)
    assert cold.exists()  # the freeze began an hour in and the 5 hours of history include it


@pytest.mark.services
def test_each_logger_signs_in_with_its_own_account_on_the_production_broker(tmp_path: Path) -> None:
    """Against Mosquitto with docker/'s ACL, which lets an account publish only as the logger of its name."""
    keys_path, keys = key_file(tmp_path, 2)
    with Processes(tmp_path) as processes:
        broker = docker_mosquitto(processes, tmp_path, [*keys, "coldtrace-ingest"])
        document = json.loads(keys_path.read_text())
        for entry in document["devices"]:
            entry["mqtt_password"] = broker.passwords[entry["device_id"]]
        keys_path.write_text(json.dumps(document))
        ingest = signed_in(broker, "coldtrace-ingest")
        ingest.subscribe("coldtrace/v1/devices/+/readings")
        url = f"mqtt://127.0.0.1:{broker.port}"  # no account of its own: each logger brings one

        out = simulate(keys_path, tmp_path / "state.json", "--url", url, "--since", "600", "--messages", "6")

        assert out.startswith("6 messages (60 readings) from 2 loggers")
        deadline = time.monotonic() + 30
        while len(ingest.received()) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(Counter(topic for topic, _ in ingest.received()).values()) == 6
        assert {topic for topic, _ in ingest.received()} == {readings(d) for d in keys}
        ingest.close()
        document["devices"][0]["mqtt_password"] = "wrong"
        keys_path.write_text(json.dumps(document))
        with pytest.raises(CommandError, match="did not accept the connection"):
            simulate(keys_path, tmp_path / "state2.json", "--url", url, "--messages", "1")
