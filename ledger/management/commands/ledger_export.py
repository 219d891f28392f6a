"""``manage.py ledger_export DIR``: writes the ledger as an offline bundle (format: ledger/verify.py).

An auditor checks the bundle with ``python -m ledger.verify DIR``, without
Django or a database (spec/ledger.md, "Offline verification").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from ledger.selectors import live_ledger
from ledger.verify import write_bundle


class Command(BaseCommand):
    help = (
        "Writes the ledger (entries, keys, checkpoints) to DIR as an offline bundle; "
        "verify it anywhere with: python -m ledger.verify DIR"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path, metavar="DIR", help="where to write the bundle (empty or new)")
        parser.add_argument(
            "--force", action="store_true", help="write into a non-empty DIR, replacing a bundle already there"
        )

    def handle(self, *args: Any, directory: Path, force: bool, **options: Any) -> None:
        if directory.exists() and not directory.is_dir():
            raise CommandError(f"{directory} is not a directory; choose a new or empty directory")
        if directory.is_dir() and any(directory.iterdir()) and not force:
            raise CommandError(f"{directory} is not empty; choose an empty directory or pass --force to overwrite it")
        ledger = live_ledger()
        written = write_bundle(directory, entries=ledger.entries, keys=ledger.keys, checkpoints=ledger.checkpoints)
        import_string(settings.LEDGER_AUDIT)("ledger.exported", directory=str(directory), entries=written.entries)
        self.stdout.write(f"Wrote {written.entries} entries to {directory / 'entries.jsonl'}")
        self.stdout.write(f"Wrote {written.keys} keys to {directory / 'keys.json'}")
        self.stdout.write(f"Wrote {written.checkpoints} checkpoints to {directory / 'checkpoints'}")
        self.stdout.write(f"Verify with: python -m ledger.verify {directory}")
