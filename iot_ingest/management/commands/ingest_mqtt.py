"""The MQTT subscriber (spec/device-protocol.md): loggers' messages into the inbox; run several for more throughput."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from iot_ingest import mqtt


class Command(BaseCommand):
    help = (
        "Subscribes to the loggers' readings topic and commits every message to the inbox before acknowledging "
        "it (QoS 1, persistent session, manual PUBACK). MQTT 5 with the shared subscription "
        "$share/ingest/coldtrace/v1/devices/+/readings, so several processes split the load; MQTT 3.1.1 and the "
        "plain topic where the broker has no MQTT 5. SIGTERM or Ctrl-C: stops taking messages, commits and "
        "acknowledges what it holds, disconnects (the session stays, so the broker keeps what arrives meanwhile)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default=settings.MQTT_URL, help="mqtt[s]://[user:password@]host[:port]; MQTT_URL")
        parser.add_argument(
            "--protocol", choices=["auto", "5", "3"], default="auto", help="MQTT 5, 3.1.1, or auto: 5, else 3.1.1"
        )
        parser.add_argument(
            "--client-id",
            help="a stable id keeps the persistent session across restarts; default coldtrace-ingest-<hostname>-<n>, "
            "n being the lowest number no other ingest process on this machine holds",
        )
        parser.add_argument("--group", default=mqtt.SHARE_GROUP, help="the MQTT 5 shared subscription's group")
        parser.add_argument(
            "--topic",
            action="append",
            dest="topics",
            metavar="FILTER",
            help=f"topic filter to subscribe to (repeatable); default {mqtt.READINGS_TOPIC}",
        )
        parser.add_argument("--batch-size", type=int, default=mqtt.BATCH_SIZE, help="messages per inbox commit")
        parser.add_argument(
            "--max-delay-ms",
            type=float,
            default=mqtt.MAX_DELAY * 1000,
            help="how long a batch waits for more messages after its first",
        )
        parser.add_argument(
            "--session-expiry",
            type=int,
            default=mqtt.SESSION_EXPIRY,
            help="MQTT 5: seconds the broker keeps the session (and queues messages) while this process is away",
        )
        parser.add_argument(
            "--no-enqueue",
            action="store_false",
            dest="enqueue",
            help="do not queue processing tasks (the inbox sweeper picks rows up later); for tests without a worker",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            address = mqtt.broker_address(options["url"])
        except ValueError as error:
            raise CommandError(str(error)) from None
        if options["batch_size"] < 1 or options["max_delay_ms"] < 0:
            raise CommandError("--batch-size must be at least 1 and --max-delay-ms not negative")
        client_id, _claim = options["client_id"], None
        if not client_id:
            client_id, _claim = mqtt.client_id_claim(settings.VAR_DIR / "run")
        ingestor = mqtt.Ingestor(
            store=mqtt.inbox_store(enqueue=options["enqueue"]),
            batch_size=options["batch_size"],
            max_delay=options["max_delay_ms"] / 1000,
        )
        connection = mqtt.Connection(
            address=address,
            client_id=client_id,
            ingestor=ingestor,
            protocol=options["protocol"],
            topics=options["topics"] or [mqtt.READINGS_TOPIC],
            group=options["group"],
            session_expiry=options["session_expiry"],
        )
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        drained = mqtt.serve(connection, ingestor, stop)
        if _claim is not None:
            _claim.close()
        if not drained:
            raise CommandError("stopped with messages not committed; the broker will deliver them again")
