from __future__ import annotations

from django.apps import AppConfig


class TraceabilityConfig(AppConfig):
    name = "traceability"
    verbose_name = "Cold-chain traceability"

    def ready(self) -> None:
        from traceability import audit  # noqa: F401 (connects the sign-in receivers of the audit log)
