"""`make bench`: what ColdTrace's own paths cost, each beside the limit it runs against.

Runs in a throwaway test database (PostgreSQL when DATABASE_URL points there),
seeded with the demo data. Figures are printed, never asserted: timing does
not belong in tests.
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.test.utils import override_settings, setup_databases, teardown_databases
from django.urls import include, path
from rest_framework.authtoken.models import Token


def bare(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok", content_type="text/plain")


# The project's URLs plus one view that does nothing: the floor for any page.
urlpatterns = [path("bench/bare", bare), path("", include("traceability.urls"))]


@dataclass
class Row:
    name: str
    per_second: float
    limit_name: str
    limit_per_second: float


def rate(action: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``action`` over about ``seconds`` (after one warm-up call)."""
    action()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        action()
        count += 1
    return count / elapsed


class Command(BaseCommand):
    help = "Prints the benchmark table: each figure beside the limit it is measured against."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each figure")

    def handle(self, *args: Any, **options: Any) -> None:
        seconds = options["seconds"]
        databases = setup_databases(verbosity=0, interactive=False)
        try:
            with override_settings(ROOT_URLCONF=__name__, SECURE_SSL_REDIRECT=False, ALLOWED_HOSTS=["*"]):
                call_command("seed_demo", password=secrets.token_urlsafe(12), stdout=io.StringIO())
                rows = self.measure(seconds)
        finally:
            teardown_databases(databases, verbosity=0)
        self.print_table(rows)

    def measure(self, seconds: float) -> list[Row]:
        from django.contrib.auth.models import User

        regulator = User.objects.get(username="regulator")
        client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=regulator)[0].key}")
        anonymous = Client()

        def get(url: str, who: Client = client) -> Callable[[], Any]:
            def call() -> None:
                response = who.get(url)
                assert response.status_code == 200, (url, response.status_code)

            return call

        def select_one() -> None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()

        floor = rate(get("/bench/bare", anonymous), seconds)
        round_trip = rate(select_one, seconds)
        self.stdout.write(
            f"limits: bare Django view {floor:,.0f}/s; database round trip (SELECT 1) {round_trip:,.0f}/s"
        )
        return [
            Row("GET /health/ (one query)", rate(get("/health/", anonymous), seconds), "bare Django view", floor),
            Row("GET /api/v1/me", rate(get("/api/v1/me"), seconds), "bare Django view", floor),
            Row(
                "GET /api/v1/shipments/ (12 rows)", rate(get("/api/v1/shipments/"), seconds), "bare Django view", floor
            ),
            Row("GET /api/v1/batches/ (20 rows)", rate(get("/api/v1/batches/"), seconds), "bare Django view", floor),
            Row(
                "GET /api/v1/batches/1/qr.svg",
                rate(get("/api/v1/batches/1/qr.svg"), seconds),
                "bare Django view",
                floor,
            ),
        ]

    def print_table(self, rows: list[Row]) -> None:
        self.stdout.write(f"database: {connection.vendor}; in-process requests (Django test client), one core")
        self.stdout.write(f"{'measured':<36} {'per second':>12}   {'limit':<20} {'per second':>12} {'share':>7}")
        for row in rows:
            share = row.per_second / row.limit_per_second
            measured = f"{row.name:<36} {row.per_second:>12,.0f}"
            self.stdout.write(f"{measured}   {row.limit_name:<20} {row.limit_per_second:>12,.0f} {share:>7.0%}")
