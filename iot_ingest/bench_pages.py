"""`make bench`, pages served as deployed: gunicorn workers under concurrent load, beside a bare Django view.

The bench starts gunicorn on its throwaway database (with the project's URLs
plus ``/bench/bare``, a view that does nothing) and drives it from client
threads in this process: requests/s and latency percentiles for the bare view
and for the consumer page of the demo batch that travelled most, with a
million readings in the database as the issue asks. Measured, never asserted.
"""

from __future__ import annotations

import http.client
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKERS = 2  # gunicorn sync workers: one per core of the bench machine
CLIENTS = 8  # concurrent connections
READINGS = 1_000_000


def application() -> Any:
    """gunicorn's entry (``iot_ingest.bench_pages:application()``): the project with ``/bench/bare``."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "traceability.settings")
    from django.core.wsgi import get_wsgi_application

    wsgi = get_wsgi_application()
    from django.conf import settings

    settings.ROOT_URLCONF = "iot_ingest.bench_urls"
    return wsgi


@dataclass
class Load:
    requests: int
    seconds: float
    latencies_ms: list[float]
    failures: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def readings_load(count: int = READINGS) -> int:
    """Copies ``count`` temperature readings onto the demo's shipments (fixtures: COPY, not the ingest path,
    which the cold-chain table measures); returns how many readings the database then holds."""
    from django.db import connection

    from iot_ingest.models import Device, InboxMessage, Reading
    from traceability.models import Shipment

    dispatched = Shipment.objects.exclude(dispatched_at=None).values_list("id", "dispatched_at")
    shipments = [(pk, at.timestamp()) for pk, at in dispatched if at is not None]
    device = Device.objects.order_by("id").first()
    if device is None or not shipments:
        raise RuntimeError("the bench needs the demo data (seed_demo): no logger or no dispatched shipment")
    per_message = 1000
    first_seq = (InboxMessage.objects.filter(device=device).order_by("-seq").values_list("seq", flat=True).first()) or 0
    messages = InboxMessage.objects.bulk_create(
        InboxMessage(transport="http", raw=b"bench fixture", outcome="accepted", device=device, seq=first_seq + 1 + n)
        for n in range(-(-count // per_message))
    )
    text = io.StringIO()
    for number in range(count):
        shipment, since = shipments[number % len(shipments)]
        at = since + 60 * (number // len(shipments))  # one a minute per shipment from dispatch on
        message = messages[number // per_message]
        text.write(f"{device.pk},{shipment},{message.pk},{number % per_message},temperature,5.0,")
        text.write(f"{_iso(at)},{_iso(at)}\n")
    text.seek(0)
    columns = "device_id, shipment_id, message_id, index, kind, value, measured_at, received_at"
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Reading._meta.db_table)
        cursor.cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", text)
        cursor.execute(f"ANALYZE {table}")
    return Reading.objects.count()


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(timestamp))


@contextmanager
def gunicorn(environment: dict[str, str]) -> Iterator[int]:
    """gunicorn serving the project on a free port of 127.0.0.1, as deployed (DEBUG off); yields the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = Path(tempfile.mkstemp(prefix="coldtrace-bench-gunicorn-", suffix=".log")[1])
    env = {
        **environment,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS)]
    command += ["--backlog", "256", "--log-level", "warning", f"{__name__}:application()"]
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 (our interpreter, our arguments)
            command, env=env, stdout=output, stderr=output, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while _get(port, "/health/")[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        log.unlink(missing_ok=True)


def _get(port: int, url: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", url, headers={"Accept-Language": "en"})
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        connection.close()


def drive(port: int, url: str, *, seconds: float, clients: int = CLIENTS) -> Load:
    """``clients`` threads requesting ``url`` back to back for ``seconds`` (after a warm-up)."""
    for _ in range(20):
        status, _body = _get(port, url)
        if status != 200:
            raise RuntimeError(f"GET {url} answered {status}")
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        nonlocal failures
        mine, failed = [], 0
        while (start := time.perf_counter()) < stop:
            status, _body = _get(port, url)
            mine.append((time.perf_counter() - start) * 1000)
            failed += status != 200
        with lock:
            latencies.extend(mine)
            failures += failed

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Load(len(latencies), time.perf_counter() - began, latencies, failures)


def consumer_url() -> str:
    """The Digital Link path of a unit of the demo batch that travelled the most legs."""
    from iot_ingest.management.commands.seed_demo import travelled_pack_link

    link = travelled_pack_link()
    if link is None:
        raise RuntimeError("the bench needs the demo data (seed_demo): no batch")
    return "/" + link.split("/", 3)[3]
