"""``/metrics``: the Prometheus exposition, computed from the database at scrape time.

Ingest, workers and web run as separate processes (and containers), so no
process holds the platform's counts in memory: the collector reads them from
the tables every process writes (``traceability.operations``). Counters are
counts of rows that are never deleted, so ``rate()`` over them gives ingest
rates; gauges are states (backlog, dead letters, open alerts, ages).
"""

from __future__ import annotations

from collections.abc import Iterator

from django.utils import timezone
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from traceability import operations

# Inbox outcomes a message keeps once reached; "pending" and "dead" are states, reported as gauges.
STATES = (operations.PENDING, operations.DEAD)


class PlatformCollector:
    """Every ColdTrace metric, read fresh on each ``collect``."""

    def describe(self) -> list[Metric]:
        # Registering calls describe(); an empty list keeps the database out of import time.
        return []

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        inbox = operations.inbox_state()
        yield CounterMetricFamily(
            "coldtrace_ingest_messages_received",
            "Device messages stored in the inbox (MQTT and HTTPS), whatever became of them.",
            value=sum(inbox.messages.values()),
        )
        processed = CounterMetricFamily(
            "coldtrace_ingest_messages", "Device messages processed, by outcome.", labels=["outcome"]
        )
        for outcome, n in inbox.messages.items():
            if outcome not in STATES:
                processed.add_metric([outcome], n)
        yield processed
        rejections = CounterMetricFamily(
            "coldtrace_ingest_rejections", "Device messages rejected, by the protocol's reason.", labels=["reason"]
        )
        for reason, n in inbox.rejections.items():
            rejections.add_metric([reason], n)
        yield rejections
        yield CounterMetricFamily("coldtrace_ingest_readings", "Readings stored.", value=inbox.readings)
        yield GaugeMetricFamily(
            "coldtrace_readings_uncommitted",
            "Readings on shipments that no readings.committed ledger entry covers yet: it falls at each of "
            "beat's commits; growing across them, commits are held up.",
            value=inbox.uncommitted,
        )
        yield GaugeMetricFamily(
            "coldtrace_inbox_backlog_messages", "Inbox messages waiting to be processed.", value=inbox.pending
        )
        yield GaugeMetricFamily(
            "coldtrace_inbox_urgent_messages",
            "Inbox messages waiting that appear to break their shipment's contract: processed first.",
            value=inbox.urgent_pending,
        )
        yield GaugeMetricFamily(
            "coldtrace_inbox_oldest_pending_age_seconds",
            "Age of the oldest inbox message waiting to be processed (0 when none waits): the ingest lag.",
            value=inbox.oldest_pending_age(now) or 0.0,
        )
        yield GaugeMetricFamily(
            "coldtrace_inbox_dead_letter_messages",
            "Inbox messages whose processing failed repeatedly (task failures), waiting for staff.",
            value=inbox.dead,
        )
        alerts = GaugeMetricFamily(
            "coldtrace_alerts_unresolved",
            "Alerts open or acknowledged, not yet resolved, by status and severity.",
            labels=["status", "severity"],
        )
        for (status, severity), n in operations.unresolved_alerts().items():
            alerts.add_metric([status, severity], n)
        yield alerts
        ledger = operations.ledger_state()
        yield CounterMetricFamily("coldtrace_ledger_entries", "Signed entries in the ledger.", value=ledger.entries)
        yield GaugeMetricFamily(
            "coldtrace_ledger_pending_events",
            "Ledger events committed but not yet sequenced into entries.",
            value=ledger.pending_events,
        )
        if ledger.checkpoint_size is not None:
            yield GaugeMetricFamily(
                "coldtrace_ledger_checkpoint_size",
                "Entries covered by the newest signed checkpoint.",
                value=ledger.checkpoint_size,
            )
            yield GaugeMetricFamily(
                "coldtrace_ledger_checkpoint_age_seconds",
                "Age of the newest signed checkpoint (absent until the first one).",
                value=ledger.checkpoint_age(now) or 0.0,
            )


registry = CollectorRegistry(auto_describe=False)
registry.register(PlatformCollector())


def exposition(accept: str) -> tuple[bytes, str]:
    """The metrics as the client asked (``Accept``): Prometheus text 0.0.4 unless it prefers OpenMetrics."""
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
