from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from ledger import services


class Command(BaseCommand):
    help = "Turns pending ledger events into entries, then signs and stores a checkpoint now."

    def handle(self, *args: Any, **options: Any) -> None:
        sequenced = services.entries_sequence()
        checkpoint = services.checkpoint_sign()
        self.stdout.write(f"sequenced {sequenced} pending events")
        if checkpoint is None:
            self.stdout.write("the ledger is empty: no checkpoint")
        else:
            self.stdout.write(checkpoint.note, ending="")
