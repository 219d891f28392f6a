"""Mosquitto as production runs it: ``docker/mosquitto/``'s configuration and ACL, on a free port.

Only the listener, the password file, the ACL file's path and the data
directory change; the accounts are the test's own, written with
``mosquitto_passwd``. :func:`connect` gives a paho client that records what
the broker answered (CONNACK, PUBACK and SUBACK reason codes), in MQTT 5 or
3.1.1. Used by ``test_deployment.py`` (the broker's rules) and
``test_topology.py`` (the whole platform behind it).
"""

from __future__ import annotations

import getpass
import secrets
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.iot_ingest.processes import (
    DEADLINE,
    Process,
    Processes,
    executable,
    free_port,
    reachable,
    unique,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
MOSQUITTO = ROOT / "docker" / "mosquitto"

# The lines a test run must change (compose.yaml mounts the files at /mosquitto/config, on port 1883).
LOCAL_LINES = ("listener", "password_file", "acl_file", "persistence_location")


def local_config(port: int, passwd: Path, data: Path) -> str:
    """docker/mosquitto/mosquitto.conf with its listener, files and data directory moved; nothing else."""
    replacements = {
        "listener": f"listener {port} 127.0.0.1",
        "password_file": f"password_file {passwd}",
        "acl_file": f"acl_file {MOSQUITTO / 'acl'}",
        "persistence_location": f"persistence_location {data}/",
    }
    lines, seen = [], []
    for line in (MOSQUITTO / "mosquitto.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        if key in replacements:
            seen.append(key)
            line = replacements[key]
        lines.append(line)
    assert sorted(seen) == sorted(LOCAL_LINES), f"mosquitto.conf should set each of {LOCAL_LINES} once: {seen}"
    # As root, mosquitto would switch users, and lose the signal that kills it with the test.
    return "\n".join([*lines, f"user {getpass.getuser()}", ""])


@dataclass
class Broker:
    port: int
    passwords: dict[str, str]
    process: Process
    processes: Processes

    def url(self, user: str) -> str:
        """``mqtt://user:password@127.0.0.1:port`` (token_urlsafe passwords need no quoting)."""
        return f"mqtt://{user}:{self.passwords[user]}@127.0.0.1:{self.port}"


def docker_mosquitto(processes: Processes, directory: Path, users: Iterable[str]) -> Broker:
    """The real mosquitto with docker/mosquitto/'s files and one account (random password) per user."""
    binary, passwd_tool = executable("mosquitto"), executable("mosquitto_passwd")
    passwords = {user: secrets.token_urlsafe(16) for user in users}
    passwd = directory / "passwd"
    for n, (user, password) in enumerate(passwords.items()):
        create = ["-c"] if n == 0 else []
        subprocess.run([passwd_tool, *create, "-b", str(passwd), user, password], check=True, timeout=30)
    assert not any(password in passwd.read_text() for password in passwords.values()), "hashes only"
    data = directory / "mosquitto-data"
    data.mkdir()
    for _ in range(5):  # another process may take the free port first
        port = free_port()
        config = directory / f"mosquitto-{port}.conf"
        config.write_text(local_config(port, passwd, data))
        process = processes.start("mosquitto", [binary, "-c", str(config)])
        try:
            wait_until(
                "mosquitto to listen",
                lambda: reachable("127.0.0.1", port),  # noqa: B023 (called within this iteration)
                processes=processes,
                watch=[process],
            )
        except pytest.fail.Exception:
            if process.alive():
                raise
            continue
        return Broker(port, passwords, process, processes)
    pytest.fail(f"mosquitto did not start\n{processes.logs()}")


@dataclass
class Client:
    """A paho client (callback API 2) that records what the broker answered."""

    client: paho.Client
    connected: threading.Event = field(default_factory=threading.Event)
    connack: ReasonCode | None = None
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    subacks: list[ReasonCode] = field(default_factory=list)
    subscribed: threading.Event = field(default_factory=threading.Event)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """QoS 1; the PUBACK's reason code (always "Success" in MQTT 3.1.1, whose PUBACK carries none)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(DEADLINE)
        assert info.is_published(), f"no PUBACK for {topic}"
        return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> list[ReasonCode]:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(DEADLINE), f"no SUBACK for {topic}"
        return self.subacks

    def received(self) -> list[tuple[str, bytes]]:
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    broker: Broker,
    user: str | None,
    password: str | None = None,
    *,
    protocol: MQTTProtocolVersion = paho.MQTTv5,
    **session: Any,
) -> Client:
    """Connects, waiting for the CONNACK; ``connack`` tells whether the broker accepted."""
    client_id = session.pop("client_id", unique("test"))
    paho_client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    state = Client(paho_client)

    def on_connect(client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        state.connack = reason
        state.connected.set()

    def on_publish(client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any) -> None:
        state.pubacks[mid] = reason

    def on_subscribe(client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Any) -> None:
        state.subacks = reasons
        state.subscribed.set()

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with state.lock:
            state.messages.append((message.topic, bytes(message.payload)))

    paho_client.on_connect, paho_client.on_publish = on_connect, on_publish
    paho_client.on_subscribe, paho_client.on_message = on_subscribe, on_message
    if user is not None:
        paho_client.username_pw_set(user, password)
    if protocol == paho.MQTTv5:
        properties = None
        if session.get("expiry"):
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = session["expiry"]
        paho_client.connect("127.0.0.1", broker.port, clean_start=session.get("clean", True), properties=properties)
    else:
        paho_client.connect("127.0.0.1", broker.port)
    paho_client.loop_start()
    assert state.connected.wait(DEADLINE), f"no CONNACK\n{broker.processes.logs()}"
    return state


def signed_in(broker: Broker, user: str, **session: Any) -> Client:
    client = connect(broker, user, broker.passwords[user], **session)
    assert client.connack is not None
    assert not client.connack.is_failure, f"{user}: {client.connack}"
    return client


def readings(device: str) -> str:
    return f"coldtrace/v1/devices/{device}/readings"
