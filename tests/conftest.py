"""Named personas, so access tests read like sentences.

``manufacturer`` makes vaccines; ``competitor`` is another manufacturer;
``carrier`` and ``carrier2`` are logistics providers; ``pharmacy`` dispenses;
``regulator`` reads everything; ``anonymous`` is a consumer with no login.
Each persona is a user (role: operator) of its own organisation with one site.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.utils import translation
from rest_framework.test import APIClient

from iot_ingest import evaluation, triage
from tests.factories import MembershipFactory, OrganisationFactory, SiteFactory
from traceability.celery import app as celery_app
from traceability.models import Membership, Organisation, Site

if TYPE_CHECKING:
    from tests.iot_ingest.processes import Processes

# Tasks enqueued on commit run in the test's process; the worker path has its own tests.
celery_app.conf.task_always_eager = True

Kind = Organisation.Kind
PERSONAS = {
    "manufacturer": Kind.MANUFACTURER,
    "competitor": Kind.MANUFACTURER,
    "carrier": Kind.LOGISTICS,
    "carrier2": Kind.LOGISTICS,
    "pharmacy": Kind.DISPENSER,
    "regulator": Kind.REGULATOR,
}


@dataclass
class Persona:
    name: str
    user: AbstractBaseUser
    organisation: Organisation
    site: Site

    def client(self) -> APIClient:
        client = APIClient()
        client.force_authenticate(self.user)
        return client


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Throttle counters live in the cache, monitors and loggers' rides in the process; each test starts with none."""
    cache.clear()
    evaluation.watches_forget()
    triage.forget()


@pytest.fixture(autouse=True)
def _default_language() -> Iterator[None]:
    """Each test starts and ends in the default language: LocaleMiddleware leaves a request's language active in
    the thread, and a test after a Chinese page would otherwise speak Chinese."""
    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _test_settings(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A fast password hasher (Argon2 costs a second per user) and a ledger key of the tests' own."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LEDGER_KEY_FILE = tmp_path_factory.getbasetemp() / "ledger.key"
    settings.LEDGER_CREATE_KEY = True


@pytest.fixture(autouse=True)
def _ledger_flushable(request: pytest.FixtureRequest) -> Iterator[None]:
    """Transactional tests end with a flush, which the append-only ledger and audit tables refuse.

    Only for the flush at the end of such a test: on PostgreSQL triggers are
    disabled for the session (superuser only), on SQLite they are dropped and
    come back at the start of the next test.
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = marker is not None and (marker.kwargs.get("transaction") or (marker.args and marker.args[0]))
    if not (transactional or {"transactional_db", "live_server"} & set(request.fixturenames)):
        yield
        return
    # Set up the database first, so that this teardown runs before its flush.
    request.getfixturevalue("transactional_db")
    from django.db import connection

    from ledger import triggers
    from traceability import audit

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = origin")
        for sql in triggers.create_statements(connection.vendor) + audit.create_statements(connection.vendor):
            cursor.execute(sql)
    yield
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
        else:
            for sql in triggers.drop_statements(connection.vendor) + audit.drop_statements(connection.vendor):
                cursor.execute(sql)


def make_persona(name: str, kind: str, role: str = Membership.Role.OPERATOR) -> Persona:
    organisation = OrganisationFactory(name=name.title(), kind=kind)
    membership = MembershipFactory(organisation=organisation, role=role, user__username=name)
    site = SiteFactory(organisation=organisation, name=f"{name.title()} site")
    return Persona(name, membership.user, organisation, site)


@pytest.fixture
def personas(db: None) -> dict[str, Persona]:
    return {name: make_persona(name, kind) for name, kind in PERSONAS.items()}


@pytest.fixture
def manufacturer(personas: dict[str, Persona]) -> Persona:
    return personas["manufacturer"]


@pytest.fixture
def competitor(personas: dict[str, Persona]) -> Persona:
    return personas["competitor"]


@pytest.fixture
def carrier(personas: dict[str, Persona]) -> Persona:
    return personas["carrier"]


@pytest.fixture
def carrier2(personas: dict[str, Persona]) -> Persona:
    return personas["carrier2"]


@pytest.fixture
def pharmacy(personas: dict[str, Persona]) -> Persona:
    return personas["pharmacy"]


@pytest.fixture
def regulator(personas: dict[str, Persona]) -> Persona:
    return personas["regulator"]


@pytest.fixture
def anonymous() -> APIClient:
    return APIClient()


def require_services() -> bool:
    """In CI (COLDTRACE_REQUIRE_SERVICES=1) a missing service fails a test instead of skipping it."""
    return os.environ.get("COLDTRACE_REQUIRE_SERVICES") == "1"


def unavailable(message: str) -> NoReturn:
    """A service the test needs is missing: a failure in CI (``require_services``), a skip elsewhere."""
    if require_services():
        pytest.fail(message)
    pytest.skip(message)


# Browser: Playwright driving Debian's Chromium (never a downloaded browser).
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Flags for a closed network: no background connections, no sandbox as root in CI.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not shutil.which(CHROMIUM):
        unavailable(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls the
    # test makes between page actions are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.console_errors = errors
    yield page
    context.close()


@pytest.fixture
def processes(tmp_path: Path, transactional_db: None) -> Iterator[Processes]:
    """Real processes on the test's database (``tests/iot_ingest/processes.py``), set up after the database,
    so every process is gone before the test's tables are flushed."""
    from tests.iot_ingest.processes import Processes, database_url  # it imports this module's personas

    database_url()  # nothing starts unless the processes can share the test's database
    with Processes(tmp_path) as running:
        yield running
