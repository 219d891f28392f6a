from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from iot_ingest import services


class Command(BaseCommand):
    help = (
        "Re-queues inbox messages still pending after --older-than seconds (beat does this every 15 s); "
        "run it after a broker lost its queue to process them at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=float, default=30, help="seconds since receipt (default 30)")

    def handle(self, *args: Any, **options: Any) -> None:
        count = services.inbox_sweep(older_than=datetime.timedelta(seconds=options["older_than"]))
        self.stdout.write(f"re-queued {count} pending inbox messages")
