"""Runs the whole embedded platform for `make demo`; Ctrl-C stops everything.

web server, MQTT broker (embedded, unless one already listens at MQTT_URL),
ingest, a Celery worker with beat (ledger sequencing and checkpoints, inbox
sweeps, evaluations) and simulated loggers: twelve hours of device time are
replayed in a minute (three loggers with an excursion), then they
report live.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand

MANAGE = [sys.executable, "manage.py"]
SIMULATION = [
    *("--since", "720", "--interval", "300", "--per-message", "6", "--speed", "720"),
    *("--excursion", "LOG-0001=warming", "--excursion", "LOG-0002=freezing", "--excursion", "LOG-0004=spike"),
]


def listening(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 1883), timeout=1):
            return True
    except OSError:
        return False


class Command(BaseCommand):
    help = "Runs web, MQTT broker, ingest, worker with beat and simulated loggers until Ctrl-C."

    def handle(self, *args: Any, **options: Any) -> None:
        commands: dict[str, list[str]] = {}
        ingest = [*MANAGE, "ingest_mqtt"]
        if not listening(settings.MQTT_URL):
            commands["broker"] = [*MANAGE, "mqtt_broker", "--bind", _bind(settings.MQTT_URL)]
            ingest.extend(["--protocol", "3"])  # the embedded broker speaks MQTT 3.1.1 only
        commands |= {
            "web": [*MANAGE, "runserver", "127.0.0.1:8000", "--noreload"],
            "worker": [
                sys.executable, "-m", "celery", "-A", "traceability", "worker", "--beat", "--pool", "solo",
                "--loglevel", "WARNING", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
            "ingest": ingest,
        }  # fmt: skip
        processes = {}
        signal.signal(signal.SIGTERM, _interrupt)  # stopped by a supervisor: stop the children as on Ctrl-C
        try:
            for name, command in commands.items():
                processes[name] = subprocess.Popen(command)  # noqa: S603  (our own commands)
                if name == "broker":
                    _wait_for(settings.MQTT_URL)
            time.sleep(2)  # let ingest subscribe before the loggers publish
            processes["simulator"] = subprocess.Popen([*MANAGE, "simulate_devices", *SIMULATION])  # noqa: S603
            self.stdout.write(f"ColdTrace is running on {settings.BASE_URL}/ (Ctrl-C stops it)")
            while all(process.poll() is None for process in processes.values()):
                time.sleep(0.5)
            stopped = [name for name, process in processes.items() if process.poll() is not None]
            self.stderr.write(f"{', '.join(stopped)} stopped; shutting down the rest")
        except KeyboardInterrupt:
            pass
        finally:
            _stop(processes.values())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _bind(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 1883}"


def _wait_for(url: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not listening(url) and time.monotonic() < deadline:
        time.sleep(0.2)


def _stop(processes: Any) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
