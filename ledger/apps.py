from __future__ import annotations

from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import Error, register


class LedgerConfig(AppConfig):
    name = "ledger"
    verbose_name = "Ledger"

    def ready(self) -> None:
        register(check_key_file)


def check_key_file(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Refuses to start when the ledger key file is readable by anyone but its owner."""
    from ledger.keys import KeyFileError, check_permissions

    path = Path(settings.LEDGER_KEY_FILE)
    if not path.exists():
        return []
    try:
        check_permissions(path)
    except KeyFileError as error:
        return [Error(str(error), id="ledger.E001")]
    return []
