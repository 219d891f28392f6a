"""``manage.py ledger_verify``: verifies the live ledger as ``python -m ledger.verify`` does a bundle.

Same checks, same verdict (``OK <n> entries``, or the first failure) and the
same exit status: 0, or 1 at the first failure.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand

from ledger import verify
from ledger.selectors import live_ledger


class Command(BaseCommand):
    help = (
        "Verifies every entry, prev link, signature and checkpoint of the live ledger (spec/ledger.md); "
        "prints OK <n> entries, or the first failure and exits 1."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        def check() -> int:
            ledger = live_ledger()
            return verify.verify(ledger.entries, ledger.keys, ledger.checkpoints)

        status = verify.report(check, self.stdout.write)
        if status:
            sys.exit(status)
