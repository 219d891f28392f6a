from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string

from ledger import note, services


class Command(BaseCommand):
    help = (
        "Rotates the ledger's signing key: a new key signs from now on, the old one is retired "
        "but still verifies old entries; the rotation is itself a ledger entry."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        key = services.key_rotate()
        import_string(settings.LEDGER_AUDIT)("ledger.key_rotated", key_id=key.key_id, name=key.name)
        self.stdout.write(f"new key {key.key_id} is active; the private key is in {settings.LEDGER_KEY_FILE}")
        self.stdout.write(f"verifier key: {note.vkey(key.name, bytes(key.public_key))}")
