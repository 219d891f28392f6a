from __future__ import annotations

from django.apps import AppConfig


class TraceabilityConfig(AppConfig):
    name = "traceability"
    verbose_name = "Cold-chain traceability"
