"""``manage.py ledger_verify``: verifies the live ledger as ``python -m ledger.verify`` does a bundle.

Same checks, same verdict (``OK <n> entries``, or the first failure) and the
same exit status: 0, or 1 at the first failure. Then one more, which a bundle
cannot have: the stored subtree hashes that proofs are served from are exactly
those the entries make.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand

from ledger import verify
from ledger.selectors import live_ledger, stored_nodes_verify


class Command(BaseCommand):
    help = (
        "Verifies every entry, prev link, signature and checkpoint of the live ledger (spec/ledger.md), and the "
        "stored subtree hashes its proofs are served from; "
        "prints OK <n> entries, or the first failure and exits 1."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        def check() -> int:
            ledger = live_ledger()
            size = verify.verify(ledger.entries, ledger.keys, ledger.checkpoints)
            stored_nodes_verify(size)  # what proofs are served from: a bundle has none
            return size

        status = verify.report(check, self.stdout.write)
        if status:
            sys.exit(status)
