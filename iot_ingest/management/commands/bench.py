"""`make bench`: what ColdTrace's own paths cost, each beside the limit it runs against.

Runs in a throwaway test database (PostgreSQL when DATABASE_URL points there),
seeded with the demo data. Figures are printed, never asserted: timing does
not belong in tests.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection, transaction
from django.test import Client
from django.test.utils import override_settings, setup_databases, teardown_databases
from rest_framework.throttling import SimpleRateThrottle

from ledger import merkle, services, verify
from ledger.models import PendingEvent, TreeNode
from ledger.selectors import live_ledger
from traceability.services import api_token_issue

LEVEL_SHIFT = 40
SECTIONS = ["web", "ledger", "proofs", "coldchain", "pages", "trace"]


@dataclass
class Row:
    name: str
    value: float
    unit: str
    limit_name: str = ""
    limit: float | None = None


def rate(action: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``action`` over about ``seconds`` (after one warm-up call)."""
    action()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        action()
        count += 1
    return count / elapsed


def per_second(count: int, action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return count / (time.perf_counter() - start)


@contextlib.contextmanager
def _request_lines_discarded() -> Iterator[None]:
    """Each in-process request still writes its log line, as deployed (its cost is part of the figure), but to
    nowhere: thousands of them would bury the tables."""
    request_log = logging.getLogger("coldtrace.request")
    with open(os.devnull, "w") as nowhere:
        handlers = []
        for handler in logging.getLogger().handlers:
            quiet = logging.StreamHandler(nowhere)
            quiet.setFormatter(handler.formatter)
            for log_filter in handler.filters:
                quiet.addFilter(log_filter)
            handlers.append(quiet)
        with mock.patch.object(request_log, "handlers", handlers), mock.patch.object(request_log, "propagate", False):
            yield


def _cpu(seconds: dict[str, float]) -> str:
    """CPU seconds by role, the largest first."""
    return ", ".join(f"{role} {used:.1f}" for role, used in sorted(seconds.items(), key=lambda item: -item[1]))


def median_ms(actions: Sequence[Callable[[], object]]) -> float:
    times = []
    for action in actions:
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


class Command(BaseCommand):
    help = "Prints the benchmark table: each figure beside the limit it is measured against."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="the tables to measure (default: all)"
        )
        parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each rate")
        parser.add_argument("--tree-size", type=int, default=1_000_000, help="ledger size for the proof figures")
        parser.add_argument(
            "--readings",
            type=int,
            default=1_000_000,
            help="readings sent end to end, 10 a message, then half as many again to time alerts (cold-chain table)",
        )
        parser.add_argument(
            "--rate", type=float, default=0, help="messages/s published (cold-chain table; 0: as fast as taken in)"
        )
        parser.add_argument("--ingest", type=int, default=1, help="ingest_mqtt processes for the cold-chain table")
        parser.add_argument("--workers", type=int, default=2, help="celery worker processes for the cold-chain table")
        parser.add_argument("--pool", choices=["solo", "prefork"], default="solo", help="their pool (concurrency 1)")

    def handle(self, *args: Any, **options: Any) -> None:
        databases = setup_databases(verbosity=0, interactive=False)
        try:
            with (
                tempfile.TemporaryDirectory(prefix="coldtrace-bench-") as scratch,
                override_settings(
                    ROOT_URLCONF="iot_ingest.bench_urls",  # the project's URLs and /bench/bare
                    SECURE_SSL_REDIRECT=False,
                    ALLOWED_HOSTS=["*"],
                    LEDGER_KEY_FILE=Path(scratch) / "ledger.key",
                    LEDGER_CREATE_KEY=True,
                ),
                # The bench runs the sequencer itself; no wake-up tasks go to the demo's broker.
                mock.patch.object(services, "_wake_sequencer", return_value=None),
                # The throwaway loggers' keys must not replace the demo's in var/ (simulate_devices reads those).
                mock.patch("iot_ingest.management.commands.seed_demo.DEVICE_KEYS", Path(scratch) / "devices.json"),
                _request_lines_discarded(),
            ):
                call_command("seed_demo", password=secrets.token_urlsafe(12), stdout=io.StringIO())
                services.ledger_commit()
                self.stdout.write(f"database: {connection.vendor}; one process, one core")
                only = options["only"]
                if "web" in only:
                    self.table("web (in-process requests, Django test client)", self.web(options["seconds"]))
                if "ledger" in only:
                    self.table("ledger", self.ledger(options["seconds"]))
                if "proofs" in only:
                    self.table(f"proofs at {options['tree_size']:,} entries", self.proofs(options["tree_size"]))
                if "coldchain" in only:
                    self.cold_chain(options)
                if "pages" in only:
                    self.pages(options["seconds"])
                if "trace" in only:
                    self.trace()
        finally:
            teardown_databases(databases, verbosity=0)

    def web(self, seconds: float) -> list[Row]:
        regulator = User.objects.get(username="regulator")
        client = Client(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=regulator).key}")
        anonymous = Client()

        def get(url: str, who: Client = client) -> Callable[[], None]:
            def call() -> None:
                response = who.get(url)
                assert response.status_code == 200, (url, response.status_code)

            return call

        floor = rate(get("/bench/bare", anonymous), seconds)
        urls = [
            ("GET /health/ (one query)", "/health/", anonymous),
            ("GET /api/v1/me", "/api/v1/me", client),
            ("GET /api/v1/shipments/ (12 rows)", "/api/v1/shipments/", client),
            ("GET /api/v1/batches/ (20 rows)", "/api/v1/batches/", client),
            ("GET /api/v1/batches/1/qr.svg", "/api/v1/batches/1/qr.svg", client),
            ("GET /api/v1/ledger/checkpoint", "/api/v1/ledger/checkpoint", anonymous),
            ("GET /api/v1/ledger/proof/inclusion", "/api/v1/ledger/proof/inclusion?seq=3", anonymous),
        ]
        # The API's throttles still count every request (their cache work is part of its cost), at a rate
        # no bench reaches: one client asking thousands of times a second is what they exist to refuse.
        unlimited = dict.fromkeys(SimpleRateThrottle.THROTTLE_RATES, "1000000/s")
        with mock.patch.dict(SimpleRateThrottle.THROTTLE_RATES, unlimited):
            return [
                Row(name, rate(get(url, who), seconds), "req/s", "bare Django view", floor) for name, url, who in urls
            ]

    def ledger(self, seconds: float) -> list[Row]:
        key = Ed25519PrivateKey.generate()
        message = b"x" * 300  # about one entry
        signature = key.sign(message)
        public = key.public_key()
        sign_rate = rate(lambda: key.sign(message), seconds)
        verify_rate = rate(lambda: public.verify(signature, message), seconds)

        def commit_one_row() -> None:
            with transaction.atomic():
                TreeNode.objects.create(level=60, index=secrets.randbits(62), hash=b"\0" * 32)

        commit_rate = rate(commit_one_row, seconds)

        def append_and_commit() -> None:
            with transaction.atomic():
                services.entry_append(type="shipment.dispatched", subject="shipment:bench", data={"n": 1})

        append_rate = rate(append_and_commit, seconds)
        for start in range(0, 20_000, 1000):
            with transaction.atomic():
                for n in range(start, start + 1000):
                    services.entry_append(type="shipment.dispatched", subject=f"shipment:B{n}", data={"n": n})
        sequenced = PendingEvent.objects.count()
        sequence_rate = per_second(sequenced, services.entries_sequence)
        services.checkpoint_sign()
        ledger = live_ledger()
        size = services.tree_size()
        verify_rate_live = per_second(size, lambda: verify.verify(ledger.entries, ledger.keys, ledger.checkpoints))
        return [
            Row("entry_append + commit (domain side)", append_rate, "tx/s", "single-row commit", commit_rate),
            Row(f"sequencer, {sequenced:,} pending events", sequence_rate, "entries/s", "Ed25519 sign", sign_rate),
            Row(f"ledger_verify, {size:,} entries", verify_rate_live, "entries/s", "Ed25519 verify", verify_rate),
        ]

    def proofs(self, size: int) -> list[Row]:
        """Stores the complete subtrees of a ``size``-leaf tree, then times proofs through the database.

        The synthetic tree's nodes sit LEVEL_SHIFT levels up, clear of the demo ledger's own.
        """
        leaves = [secrets.token_bytes(32) for _ in range(size)]
        rows = [(level + LEVEL_SHIFT, index, digest) for level, index, digest in merkle.append_nodes(0, leaves, {})]
        raw_rate = per_second(len(rows), lambda: self.copy_rows("bench_raw", rows, scratch=True))
        store_rate = per_second(len(rows), lambda: self.copy_rows("ledger_treenode", rows))

        def fetch(keys: set[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
            stored = services.nodes({(level + LEVEL_SHIFT, index) for level, index in keys})
            return {(level - LEVEL_SHIFT, index): digest for (level, index), digest in stored.items()}

        probes = [secrets.randbelow(size) for _ in range(200)]

        def inclusion(index: int) -> list[bytes]:
            return merkle.inclusion_proof(index, size, fetch(merkle.inclusion_keys(index, size)))

        def consistency(first: int) -> list[bytes]:
            return merkle.consistency_proof(first, size, fetch(merkle.consistency_keys(first, size)))

        query = ("ms", "one-row query", 1000 / rate(lambda: fetch({(0, 0)}), 1.0))
        return [
            Row(f"store {len(rows):,} subtree hashes", store_rate, "rows/s", "raw bulk load", raw_rate),
            Row("inclusion proof (median of 200)", median_ms([partial(inclusion, i) for i in probes]), *query),
            Row("consistency proof (median of 200)", median_ms([partial(consistency, i + 1) for i in probes]), *query),
        ]

    def copy_rows(self, table: str, rows: list[tuple[int, int, bytes]], *, scratch: bool = False) -> None:
        """PostgreSQL COPY (the fastest way in); batched executemany on SQLite."""
        with connection.cursor() as cursor:
            if scratch:
                blob = "bytea" if connection.vendor == "postgresql" else "blob"
                cursor.execute(f"CREATE TEMPORARY TABLE {table} (level integer, index_ bigint, hash {blob})")
            if connection.vendor == "postgresql":
                text = "".join(f"{level}\t{index}\t\\\\x{digest.hex()}\n" for level, index, digest in rows)
                columns = "(level, index_, hash)" if scratch else "(level, index, hash)"
                cursor.cursor.copy_expert(f"COPY {table} {columns} FROM STDIN", io.StringIO(text))
            else:
                columns = "(level, index_, hash)" if scratch else '(level, "index", hash)'
                for start in range(0, len(rows), 10_000):
                    cursor.executemany(
                        f"INSERT INTO {table} {columns} VALUES (%s, %s, %s)",  # noqa: S608  (our table names)
                        rows[start : start + 10_000],
                    )

    def pages(self, seconds: float) -> None:
        """The consumer page served by gunicorn under concurrent load, beside a bare view served the same way."""
        from iot_ingest import bench, bench_pages

        title = f"pages served by gunicorn ({bench_pages.WORKERS} workers, {bench_pages.CLIENTS} concurrent clients)"
        if connection.vendor != "postgresql":
            self.stdout.write(
                f"\n{title}: skipped: the database is {connection.vendor}; set DATABASE_URL to PostgreSQL"
            )
            return
        held = bench_pages.readings_load()
        urls = bench_pages.consumer_urls()
        environment = bench.process_environment()
        with bench_pages.gunicorn(environment) as port:
            floor = bench_pages.drive(port, "/bench/bare", seconds=max(seconds, 5))
            page = bench_pages.drive(port, urls, seconds=max(seconds, 5))
        with bench_pages.gunicorn({**environment, "CONSUMER_PAGES_KEPT": "0"}) as port:
            rendered = bench_pages.drive(port, urls, seconds=max(seconds, 5))
        floor_p50, floor_p99 = (bench.percentile(floor.latencies_ms, q) for q in (0.5, 0.99))
        rows = []
        for name, load in (("consumer pages", page), ("consumer pages, page cache off", rendered)):
            p50, p99 = (bench.percentile(load.latencies_ms, q) for q in (0.5, 0.99))
            rows += [
                Row(f"{name} ({len(urls)} packs)", load.rate, "req/s", "bare Django view", floor.rate),
                Row("  latency p50", p50, "ms", "bare view p50", floor_p50),
                Row("  latency p99", p99, "ms", "bare view p99", floor_p99),
            ]
        self.table(f"{title}; {held:,} readings in the database", rows)
        self.stdout.write(f"  goal: at least 500 req/s and p99 under 100 ms; {urls.description}")
        failures = page.failures + rendered.failures + floor.failures
        if failures:
            self.stdout.write(f"  note: {failures} requests did not answer 200")

    def trace(self) -> None:
        """A batch's full trace and a recall's scope, among 10,000 shipments and 1,000,000 readings."""
        from iot_ingest import bench_pages, bench_trace
        from iot_ingest.models import Reading
        from traceability import trace
        from traceability.models import Batch
        from traceability.services import RecallItemSpec, recall_issue, recall_preview

        if connection.vendor != "postgresql":
            self.stdout.write("\ntrace and recall: skipped: set DATABASE_URL to PostgreSQL")
            return
        world = bench_trace.world_build()
        held = Reading.objects.count()  # the pages table may have loaded its million already
        if held < bench_pages.READINGS:
            held = bench_pages.readings_load(bench_pages.READINGS - held)
        narrow, wide = world.narrow, world.wide
        legs = {batch.lot: batch.shipment_items.count() for batch in (narrow, wide)}
        one_row = ("ms", "one-row query", median_ms([lambda: Batch.objects.get(pk=narrow.pk)] * 50))

        def preview() -> object:
            return recall_preview(actor=world.regulator, items=[RecallItemSpec(wide)], depth="consumer")

        password = secrets.token_urlsafe(12)
        world.regulator.set_password(password)
        world.regulator.save()
        start = time.perf_counter()
        recall = recall_issue(
            actor=world.regulator,
            password=password,
            items=[RecallItemSpec(wide)],
            classification="I",
            depth="consumer",
            reason="bench",
            instructions="bench",
        )
        issued_ms = (time.perf_counter() - start) * 1000
        checking = median_ms([partial(world.regulator.check_password, password)] * 3)
        self.table(
            f"trace and recall: {world.shipments:,} shipments, {held:,} readings",
            [
                Row(f"batch trace, {legs[narrow.lot]} legs (median of 50)",
                    median_ms([lambda: trace.batch_trace(narrow)] * 50), *one_row),
                Row(f"batch trace, {legs[wide.lot]:,} legs (median of 10)",
                    median_ms([lambda: trace.batch_trace(wide)] * 10), *one_row),
                Row(f"recall scope preview, {legs[wide.lot]:,} legs (median of 10)",
                    median_ms([preview] * 10), *one_row),
                Row(f"recall issued: {recall.notices.count()} notices, {recall.flagged.count()} flags",
                    issued_ms, "ms", "password check", checking),
            ],
        )  # fmt: skip
        self.stdout.write("  goals: a batch's full trace under 50 ms; a 1,000-shipment recall's scope under 500 ms")

    def cold_chain(self, options: dict[str, Any]) -> None:
        """Readings end to end through Mosquitto, ingest processes, Redis and workers, beside the raw limits."""
        from iot_ingest import bench, evaluation

        title = "cold chain end to end (PostgreSQL, Redis, Mosquitto)"
        missing = bench.missing_service()
        if missing is not None:
            self.stdout.write(f"\n{title}: {missing}")
            return
        result = bench.run(
            readings=options["readings"],
            rate=options["rate"],
            ingest=options["ingest"],
            workers=options["workers"],
            pool=options["pool"],
        )
        p50, p99 = (bench.percentile(result.latencies_ms, q) for q in (0.5, 0.99))
        pace = f"at {options['rate']:g} a second" if options["rate"] else "at full speed"
        paced = f"at {result.paced_rate * bench.PER_MESSAGE:,.0f} readings/s"
        self.table(
            f"{title}; {result.messages:,} messages x {bench.PER_MESSAGE} readings {pace}; "
            f"{options['ingest']} ingest, {options['workers']} {options['pool']} worker process(es)",
            [
                Row(
                    "readings stored and evaluated",
                    result.readings_rate,
                    "readings/s",
                    "raw COPY, same rows",
                    result.copy_rate,
                ),
                Row(
                    "messages through ingest into the inbox",
                    result.inbox_rate,
                    "msgs/s",
                    "raw paho pub→sub",
                    result.paho_rate,
                ),
                Row(
                    "readings published by the paced load",
                    result.offered_rate,
                    "readings/s",
                    "its pace",
                    result.paced_rate * bench.PER_MESSAGE,
                ),
                Row("readings stored meanwhile", result.kept_rate, "readings/s", "published", result.offered_rate),
                Row(f"alert latency p50 ({len(result.latencies_ms)} probes, {paced})", p50, "ms", "goal p99 <", 2000),
                Row(f"alert latency p99 ({paced})", p99, "ms", "goal p99 <", 2000),
                Row("readings committed to the ledger (Merkle roots)", result.commit_rate, "readings/s"),
                Row("peak memory, ingest process (largest)", result.peak_mib.get("ingest", 0.0), "MiB"),
                Row("peak memory, worker process (largest)", result.peak_mib.get("worker", 0.0), "MiB"),
            ],
        )
        stages = [
            f"{stage} {bench.percentile(ms, 0.5):,.0f}/{bench.percentile(ms, 0.99):,.0f}"
            for stage in bench.STAGES
            if (ms := result.latency_stages_ms.get(stage))
        ]
        if stages:
            self.stdout.write(f"  alert latency by stage, p50/p99 ms: {'; '.join(stages)}")
        self.stdout.write(
            f"  the load took {result.seconds:.1f} s on {os.cpu_count()} cores, every reading stored after "
            f"{result.stored_seconds:.1f} s (calm readings are evaluated within {evaluation.CALM_SECONDS} s); "
            f"CPU seconds: {_cpu(result.cpu_seconds)}"
        )
        self.stdout.write(
            f"  the paced load took {result.paced_seconds:.1f} s until every reading was stored and evaluated; "
            f"CPU seconds: {_cpu(result.paced_cpu_seconds)}"
        )
        for note in result.notes:
            self.stdout.write(f"  note: {note}")

    def table(self, title: str, rows: list[Row]) -> None:
        self.stdout.write(f"\n{title}")
        self.stdout.write(f"  {'measured':<44} {'value':>12} {'unit':<10} {'limit':<20} {'value':>12}")
        for row in rows:
            measured = f"  {row.name:<44} {row.value:>12,.1f} {row.unit:<10}"
            limit = "" if row.limit is None else f"{row.limit:>12,.1f}"
            self.stdout.write(f"{measured} {row.limit_name:<20} {limit}".rstrip())
