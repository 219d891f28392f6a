"""Triggers that make the ledger tables append-only (UPDATE and DELETE refused)."""

from __future__ import annotations

from django.db import migrations

from ledger import triggers


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]

    operations = [migrations.RunPython(triggers.install, triggers.uninstall)]
