from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from iot_ingest import services
from traceability.models import Organisation


class Command(BaseCommand):
    help = (
        "Registers a temperature logger owned by the organisation with that GLN. With --public-key (32-byte "
        "Ed25519, hex) it stores the key; without, it generates a key pair and prints the private key once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id")
        parser.add_argument("--org", required=True, help="GLN of the owning organisation")
        parser.add_argument("--public-key", help="Ed25519 public key, 64 hex digits")

    def handle(self, *args: Any, **options: Any) -> None:
        organisation = Organisation.objects.filter(gln=options["org"]).first()
        if organisation is None:
            raise CommandError(f"no organisation has GLN {options['org']}")
        try:
            public_key = bytes.fromhex(options["public_key"]) if options["public_key"] else None
        except ValueError:
            raise CommandError("--public-key must be 64 hex digits") from None
        try:
            device, private = services.device_register(
                device_id=options["device_id"], organisation=organisation, public_key=public_key
            )
        except ValidationError as error:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())) from None
        self.stdout.write(f"registered {device.device_id} for {organisation.name}")
        self.stdout.write(f"public key  {bytes(device.public_key).hex()}")
        if private is not None:
            raw = private.private_bytes_raw().hex()
            self.stdout.write(f"private key {raw}")
            self.stdout.write("Store the private key in the logger now: it is not kept anywhere.")
