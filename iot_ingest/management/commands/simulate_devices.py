"""Simulated loggers publish signed readings over MQTT (or HTTPS), with excursion profiles for the demo."""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import json
import os
import random
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from paho.mqtt.enums import CallbackAPIVersion

from iot_ingest import mqtt, simulator

SEQ_RESERVE = 1000  # seqs written ahead to the state file, so a crash never hands one out twice
HTTP_BATCH = 100  # messages per POST (the endpoint takes up to 1000)
PUBACK_WINDOW = 100  # MQTT messages in flight before waiting for the oldest's PUBACK
PUBACK_TIMEOUT = 30.0
# amqtt 0.12 (the demo's broker) acknowledges a message before routing it and drops what it has not routed yet
# when the publisher disconnects; a moment's wait before leaving lets it catch up.
LINGER = 1.0
INGEST_PATH = "/api/v1/ingest/readings"


class SeqState:
    """Each logger's next seq, kept in a JSON file that one simulator at a time holds.

    The file always holds a seq past any handed out: a block of
    ``SEQ_RESERVE`` is written before it is used, and the exact next seq on
    close. A logger new to the file starts at the current Unix time in
    milliseconds, so even a lost file does not replay a seq the platform has
    already accepted (that would be rejected as a replay).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock: IO[str] = Path(f"{path}.lock").open("a")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise CommandError(f"another simulate_devices is using {path}; pass --state to run a second one") from None
        try:
            document = json.loads(path.read_text()) if path.exists() else {}
            self.next = {name: int(entry["next_seq"]) for name, entry in document.get("devices", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CommandError(f"{path} is not a simulator state file ({error}); move it away") from None
        self.reserved = dict(self.next)

    def take(self, device_id: str) -> int:
        seq = self.next.get(device_id)
        if seq is None:
            seq = time.time_ns() // 1_000_000
        if seq >= self.reserved.get(device_id, seq):
            self.reserved[device_id] = seq + SEQ_RESERVE
            self._write(self.reserved)
        self.next[device_id] = seq + 1
        return seq

    def close(self) -> None:
        self._write(self.next)
        self._lock.close()

    def _write(self, seqs: dict[str, int]) -> None:
        merged = {**self.reserved, **seqs}
        document = {"devices": {name: {"next_seq": seq} for name, seq in sorted(merged.items())}}
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps(document, indent=1) + "\n")
        os.replace(temporary, self.path)


class MqttSink:
    """Publishes at QoS 1 and counts a message only once the broker acknowledged it (PUBACK)."""

    def __init__(self, url: str, *, account: tuple[str, str] | None = None) -> None:
        """One connection to ``url``; ``account`` (username, password) replaces the URL's credentials."""
        try:
            self.address = mqtt.broker_address(url)
        except ValueError as error:
            raise CommandError(str(error)) from None
        if account is not None:
            self.address = dataclasses.replace(self.address, username=account[0], password=account[1])
        suffix = account[0] if account is not None else f"{socket.gethostname()}-{os.getpid()}"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"coldtrace-sim-{suffix}",
            protocol=paho.MQTTv311,
        )
        mqtt.configure(self.client, self.address)
        self.client.max_inflight_messages_set(PUBACK_WINDOW)
        self.client.reconnect_delay_set(1, 30)
        self._connected = threading.Event()
        self.client.on_connect = lambda client, userdata, flags, reason, properties: (
            self._connected.set() if not reason.is_failure else None
        )
        self._inflight: collections.deque[paho.MQTTMessageInfo] = collections.deque()
        self.sent = 0
        try:
            self.client.connect(self.address.host, self.address.port)
        except OSError as error:
            raise CommandError(f"cannot reach the MQTT broker {self.address}: {error}") from None
        self.client.loop_start()
        if not self._connected.wait(10):
            self.client.loop_stop()
            raise CommandError(f"the MQTT broker {self.address} did not accept the connection")

    def send(self, topic: str, raw: bytes) -> None:
        self._inflight.append(self.client.publish(topic, raw, qos=1))
        while len(self._inflight) > PUBACK_WINDOW:
            self._settle(self._inflight.popleft())

    def flush(self) -> None:
        while self._inflight:
            self._settle(self._inflight.popleft())

    def _settle(self, info: paho.MQTTMessageInfo) -> None:
        try:
            info.wait_for_publish(PUBACK_TIMEOUT)
        except (RuntimeError, ValueError) as error:
            raise CommandError(f"the broker did not take a message: {error}") from None
        if not info.is_published():
            raise CommandError(f"no PUBACK from {self.address} within {PUBACK_TIMEOUT:g}s; stopping")
        self.sent += 1

    def close(self) -> None:
        self.flush()
        if self.sent:
            time.sleep(LINGER)
        self.client.disconnect()
        self.client.loop_stop()

    def outcomes(self) -> str:
        return ""


class AccountSinks:
    """One MQTT connection per logger, each signed in with the logger's own broker account.

    What a production broker needs: its ACL lets an account publish only to
    the topics of the logger it is named after. MQTT 3.1.1 acknowledges a
    publish the ACL refuses like any other, so a wrong password shows as a
    refused connection, a wrong account as readings that never arrive.
    """

    def __init__(self, url: str, accounts: dict[str, tuple[str, str]]) -> None:
        self.sinks: dict[str, MqttSink] = {}
        try:
            for device_id, account in accounts.items():
                self.sinks[device_id] = MqttSink(url, account=account)
        except CommandError:
            self.close()
            raise

    @property
    def sent(self) -> int:
        return sum(sink.sent for sink in self.sinks.values())

    def send(self, topic: str, raw: bytes) -> None:
        self.sinks[topic.split("/")[3]].send(topic, raw)  # coldtrace/v1/devices/{device_id}/readings

    def flush(self) -> None:
        for sink in self.sinks.values():
            sink.flush()

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()

    def outcomes(self) -> str:
        return ""


class HttpSink:
    """POSTs batches to the HTTPS ingest endpoint as ``{"messages": [...]}``; retries while the server is away."""

    def __init__(self, url: str) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith(INGEST_PATH) else base + INGEST_PATH
        self._batch: list[bytes] = []
        self.sent = 0
        self.counts: collections.Counter[str] = collections.Counter()

    def send(self, topic: str, raw: bytes) -> None:
        self._batch.append(raw)
        if len(self._batch) >= HTTP_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._batch:
            return
        body = json.dumps({"messages": [raw.decode("ascii") for raw in self._batch]}).encode()
        request = urllib.request.Request(  # noqa: S310 (the URL is the operator's own option)
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        for attempt in range(6):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                    answer = json.loads(response.read())
                break
            except urllib.error.HTTPError as error:
                if error.code < 500:
                    raise CommandError(f"{self.url} answered {error.code}: {error.read()[:500]!r}") from None
                problem = f"{error.code}"
            except (urllib.error.URLError, OSError) as error:
                problem = str(error)
            if attempt == 5:
                raise CommandError(f"cannot POST to {self.url}: {problem}")
            time.sleep(2**attempt)
        self.counts.update(result.get("outcome", "?") for result in answer.get("results", []))
        self.sent += len(self._batch)
        self._batch = []

    def close(self) -> None:
        self.flush()

    def outcomes(self) -> str:
        return " (" + ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.counts.items())) + ")"


class Pacer:
    """At most ``rate`` sends a second (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.gap = 1 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    def wait(self, stop: threading.Event) -> None:
        if self.gap:
            delay = self.next - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            self.next = max(self.next, time.monotonic() - 1) + self.gap


def _stopper(stop: threading.Event) -> Callable[[int, Any], None]:
    """The first Ctrl-C stops after sending what is due and what late loggers hold; the second aborts."""

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    return handler


def _excursion(value: str) -> tuple[str, str]:
    device_id, _, profile = value.partition("=")
    if not device_id or profile not in simulator.PROFILES:
        raise ValueError(f"expected DEVICE=PROFILE with a profile from {', '.join(simulator.PROFILES)}")
    return device_id, profile


class Command(BaseCommand):
    help = (
        "Publishes signed readings (spec/device-protocol.md) from simulated loggers, at QoS 1, waiting for each "
        "PUBACK; or POSTs them with --http. Keys come from the file seed_demo writes. Profiles: "
        + "; ".join(f"{name}: {text}" for name, text in simulator.PROFILES.items())
        + f". Events begin {simulator.EVENT_AT / 60:g} min of device time after the start."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--keys",
            type=Path,
            default=settings.VAR_DIR / "demo-devices.json",
            help='{"devices": [{"device_id": ..., "private_key": "<64 hex>"}]}; a logger with "mqtt_password" '
            '(and optionally "mqtt_username", else its device id) publishes over a connection of its own, '
            "signed in with that broker account",
        )
        parser.add_argument("--devices", type=int, help="simulate the first N loggers of the file (default all)")
        parser.add_argument("--interval", type=float, default=300, help="seconds of device time between readings")
        parser.add_argument("--per-message", type=int, default=10, help="readings per message")
        parser.add_argument(
            "--since",
            type=float,
            default=0,
            help="start device time this many minutes ago and send that history first (as fast as --rate allows)",
        )
        parser.add_argument(
            "--speed",
            type=float,
            help="replay device time from --since X times faster than real time instead of all at once; "
            "device time never passes the present, so readings are never stamped in the future",
        )
        parser.add_argument("--rate", type=float, default=0, help="at most this many messages a second (0: no limit)")
        parser.add_argument("--duration", type=float, help="stop after this many seconds (default: at Ctrl-C)")
        parser.add_argument("--messages", type=int, help="stop after this many messages")
        parser.add_argument("--profile", choices=list(simulator.PROFILES), default="normal", help="for every logger")
        parser.add_argument(
            "--excursion",
            action="append",
            default=[],
            type=_excursion,
            metavar="DEVICE=PROFILE",
            help="a profile for one logger (repeatable)",
        )
        parser.add_argument(
            "--state",
            type=Path,
            default=settings.VAR_DIR / "simulator-state.json",
            help="where each logger's next seq is kept, so a rerun never replays a seq",
        )
        parser.add_argument("--url", default=settings.MQTT_URL, help="the MQTT broker (MQTT_URL)")
        parser.add_argument("--http", metavar="URL", help=f"POST batches to URL{INGEST_PATH} instead of MQTT")
        parser.add_argument("--seed", type=int, help="seed for the readings' noise (default: random)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["interval"] <= 0 or options["per_message"] < 1 or options["since"] < 0:
            raise CommandError("--interval must be positive, --per-message at least 1, --since not negative")
        if options["speed"] is not None and options["speed"] <= 0:
            raise CommandError("--speed must be positive")
        keys, accounts = self._keys(options["keys"], options["devices"])
        profiles = dict(options["excursion"])
        unknown = sorted(set(profiles) - {device_id for device_id, _ in keys})
        if unknown:
            raise CommandError(f"--excursion names logger(s) not simulated: {', '.join(unknown)}")
        began = time.time()
        start = int(began - options["since"] * 60)
        seed = options["seed"] if options["seed"] is not None else random.randrange(2**32)
        fleet = simulator.Fleet(
            simulator.Logger(
                device_id=device_id,
                private_key=key,
                profile=profiles.get(device_id, options["profile"]),
                start=start,
                interval=options["interval"],
                per_message=options["per_message"],
                rng=random.Random(f"{seed}:{device_id}"),
            )
            for device_id, key in keys
        )
        stop = threading.Event()
        handlers = {signum: signal.signal(signum, _stopper(stop)) for signum in (signal.SIGINT, signal.SIGTERM)}
        state = SeqState(options["state"])
        try:
            sink: MqttSink | AccountSinks | HttpSink
            if options["http"]:
                sink = HttpSink(options["http"])
            elif accounts:
                if len(accounts) != len(keys):
                    raise CommandError("give every simulated logger an mqtt_password, or none of them")
                sink = AccountSinks(options["url"], accounts)
            else:
                sink = MqttSink(options["url"])
            try:
                made, readings = self._run(fleet, state, sink, options, began=began, start=start, stop=stop)
                for logger in fleet.loggers:  # late loggers upload their buffer now
                    for raw in logger.held:
                        sink.send(logger.topic, raw)
                    logger.held.clear()
            finally:
                sink.close()
        finally:
            state.close()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        elapsed = time.time() - began
        self.stdout.write(
            f"{sink.sent} messages ({readings} readings) from {len(fleet.loggers)} loggers in {elapsed:.1f} s: "
            f"{sink.sent / elapsed if elapsed else 0:.1f} messages/s{sink.outcomes()}"
        )
        if sink.sent != made:
            raise CommandError(f"{made - sink.sent} of {made} messages were not sent")

    def _run(
        self,
        fleet: simulator.Fleet,
        state: SeqState,
        sink: MqttSink | AccountSinks | HttpSink,
        options: dict[str, Any],
        *,
        began: float,
        start: float,
        stop: threading.Event,
    ) -> tuple[int, int]:
        """Sends messages as they fall due until a limit or a signal; returns (messages made, readings)."""
        made = readings = 0
        pacer = Pacer(options["rate"])

        def done() -> bool:
            return (options["messages"] is not None and made >= options["messages"]) or (
                options["duration"] is not None and time.time() - began >= options["duration"]
            )

        while not stop.is_set() and not done():
            clock = simulator.device_clock(now=time.time(), began=began, start=start, speed=options["speed"])
            due = fleet.pop_due(clock)
            if due is None:
                sink.flush()  # nothing due: what is buffered goes out now
                speed = options["speed"] or 1.0
                stop.wait(min(max((fleet.next_due() - clock) / speed, 0.01), 0.5))
                continue
            logger, samples = due
            if not samples:  # a gap: no readings, no message
                continue
            raw = simulator.build_message(logger.private_key, logger.device_id, state.take(logger.device_id), samples)
            made += 1
            readings += len(samples)
            if logger.late:
                logger.held.append(raw)
                continue
            pacer.wait(stop)
            sink.send(logger.topic, raw)
        return made, readings

    def _keys(
        self, path: Path, count: int | None
    ) -> tuple[list[tuple[str, Ed25519PrivateKey]], dict[str, tuple[str, str]]]:
        """Each logger's signing key, and the broker accounts of those that have one."""
        try:
            document = json.loads(path.read_text())
            entries = document["devices"][:count] if count is not None else document["devices"]
            keys = [
                (entry["device_id"], Ed25519PrivateKey.from_private_bytes(bytes.fromhex(entry["private_key"])))
                for entry in entries
            ]
            accounts = {
                entry["device_id"]: (str(entry.get("mqtt_username", entry["device_id"])), str(entry["mqtt_password"]))
                for entry in entries
                if "mqtt_password" in entry
            }
        except FileNotFoundError:
            raise CommandError(f"no key file {path}: run manage.py seed_demo first, or pass --keys") from None
        except (ValueError, KeyError, TypeError) as error:
            raise CommandError(f"{path} is not a key file ({error!r})") from None
        if not keys:
            raise CommandError(f"{path} lists no loggers")
        return keys, accounts
