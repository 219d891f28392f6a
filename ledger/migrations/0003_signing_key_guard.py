"""Signing keys are kept as they were: only retiring an active key changes a row (ledger/triggers.py)."""

from django.db import migrations

from ledger import triggers


class Migration(migrations.Migration):
    dependencies = [("ledger", "0002_append_only")]

    operations = [migrations.RunPython(triggers.install_key_guard, triggers.uninstall_key_guard)]
