"""`make bench`, pages served as deployed: gunicorn workers under concurrent load, beside a bare Django view.

The bench starts gunicorn on its throwaway database (with the project's URLs
plus ``/bench/bare``, a view that does nothing) and drives it from client
threads in this process: requests/s and latency percentiles for the bare view
and for consumer pages, with a million readings in the database as the issue
asks. Measured, never asserted.

The pages are those of every unit of every demo batch (500 packs), each batch
first given several more legs, one in five with an excursion, so that a batch
has two to seven: scans spread over many packs, as after a recall, not one
URL over and over (which would measure a cache). One request in four asks
for Chinese. Each client walks the packs in its own order; the processes'
page caches start cold, and their filling is part of what is measured.
"""

from __future__ import annotations

import datetime
import http.client
import io
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKERS = 2  # gunicorn sync workers: one per core of the bench machine
CLIENTS = 8  # concurrent connections
READINGS = 1_000_000
EXTRA_LEGS = (1, 2, 3, 4, 5, 6)  # legs added to the demo batches in turn
CHINESE = 4  # one pack in CHINESE is asked for in Chinese


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
        "NUM_PROXIES": "1",  # the clients name their address, as a proxy would: each scan is another phone's
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


def _get(port: int, url: str, language: str = "en", address: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET from ``address`` (as the proxy tells gunicorn: ``NUM_PROXIES``); the status and the body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", url, headers={"Accept-Language": language, "X-Forwarded-For": address})
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        connection.close()


class Packs(tuple[str, ...]):
    """The Digital Link paths the bench scans; printed, a summary rather than hundreds of paths."""

    description = ""

    def __str__(self) -> str:
        return self.description or super().__str__()


def drive(port: int, url: str | Sequence[str], *, seconds: float, clients: int = CLIENTS) -> Load:
    """``clients`` threads requesting ``url`` (or the paths in turn, each client in its own order) back to back
    for ``seconds``, after checking that a few of them answer."""
    urls = [url] if isinstance(url, str) else list(url)
    for number, checked in enumerate(urls[:20] * (20 // len(urls[:20]))):
        status, _body = _get(port, checked, _language(number))
        if status != 200:
            raise RuntimeError(f"GET {checked} answered {status}")
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(offset: int) -> None:
        nonlocal failures
        mine, failed = [], 0
        order = list(range(len(urls)))
        random.Random(offset).shuffle(order)
        turn = 0
        while (start := time.perf_counter()) < stop:
            number = order[turn % len(order)]
            # A scan storm comes from many phones: each request from an address of its own, so that the
            # Digital Link's throttle counts (and costs) as deployed, and refuses none.
            status, _body = _get(port, urls[number], _language(number), f"10.{offset}.{turn >> 8 & 255}.{turn & 255}")
            mine.append((time.perf_counter() - start) * 1000)
            failed += status != 200
            turn += 1
        with lock:
            latencies.extend(mine)
            failures += failed

    threads = [threading.Thread(target=client, args=(offset,)) for offset in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Load(len(latencies), time.perf_counter() - began, latencies, failures)


def _language(number: int) -> str:
    return "zh-Hans" if number % CHINESE == CHINESE - 1 else "en"


def consumer_urls() -> Packs:
    """The Digital Links of every unit of every demo batch, once each batch has travelled several legs."""
    from traceability.models import Batch

    legs = legs_add()
    batches = list(Batch.objects.select_related("product").prefetch_related("serials").order_by("id"))
    if not batches:
        raise RuntimeError("the bench needs the demo data (seed_demo): no batch")
    packs = Packs(
        "/" + batch.digital_link(serial=serial.serial).split("/", 3)[3]
        for batch in batches
        for serial in batch.serials.all()
    )
    packs.description = (
        f"{len(packs)} packs of {len(batches)} batches on {legs} legs, one in {CHINESE} asked for in Chinese, "
        f"e.g. {packs[0]}"
    )
    return packs


def legs_add() -> int:
    """Ships each demo batch on more legs from its manufacturer to the pharmacy, through the services (one in five
    with an excursion, a fixture row); returns how many legs the batches then have in all."""
    from django.contrib.auth import get_user_model

    from traceability import services
    from traceability.models import Batch, Excursion, Organisation, Shipment, Site

    users = get_user_model().objects.in_bulk(["manufacturer", "manufacturer2", "pharmacy"], field_name="username")
    carrier = Organisation.objects.get(name="ColdRoute Logistics GmbH")
    pharmacy = Site.objects.filter(organisation__name="CityCare Pharmacies").order_by("gln").first()
    active = Batch.objects.filter(status=Batch.Status.ACTIVE).select_related("product__manufacturer").order_by("id")
    now = datetime.datetime.now(tz=datetime.UTC)
    made = 0
    for number, batch in enumerate(active):
        maker = users["manufacturer" if batch.product.manufacturer.name.startswith("Helvetia") else "manufacturer2"]
        origin = Site.objects.filter(organisation=batch.product.manufacturer).first()
        if origin is None or pharmacy is None:
            raise RuntimeError("the bench needs the demo data (seed_demo): no site")
        for leg in range(EXTRA_LEGS[number % len(EXTRA_LEGS)]):
            shipment = services.shipment_create(
                actor=maker, carrier=carrier, consignee=pharmacy.organisation, origin=origin, destination=pharmacy,
                items=[services.ItemSpec(batch=batch, quantity=5)],
            )  # fmt: skip
            left = now - datetime.timedelta(days=6, minutes=number) + datetime.timedelta(hours=21 * leg)
            services.shipment_dispatch(actor=maker, shipment=shipment, occurred_at=left)
            arrived = left + datetime.timedelta(hours=20)
            services.shipment_receive(actor=users["pharmacy"], shipment=shipment, accept=True, occurred_at=arrived)
            if made % 5 == 0:
                start = left + datetime.timedelta(hours=4)
                Excursion.objects.create(
                    shipment=shipment, direction=Excursion.Direction.ABOVE, peak_celsius=11.5, duration_seconds=5400,
                    started_at=start, ended_at=start + datetime.timedelta(minutes=90),
                )  # fmt: skip
            made += 1
    return Shipment.objects.exclude(status=Shipment.Status.PLANNED).count()
