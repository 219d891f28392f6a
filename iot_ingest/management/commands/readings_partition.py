from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from iot_ingest import partitions


class Command(BaseCommand):
    help = (
        "PostgreSQL: partitions the readings table by month of receipt. The first run converts the table, keeping "
        "every reading, in one transaction that makes ingest wait; later runs only add the months ahead and the "
        "DEFAULT partition (beat does that daily). Nothing is changed twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--months-ahead",
            type=int,
            default=partitions.MONTHS_AHEAD,
            help=f"partitions to create after the current month (default {partitions.MONTHS_AHEAD})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = partitions.readings_partition(months_ahead=options["months_ahead"])
        except partitions.PartitionError as error:
            raise CommandError(str(error)) from None
        for line in report.lines():
            self.stdout.write(line)
