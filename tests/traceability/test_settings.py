"""The configuration contract: production is safe by default, every variable documented."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from tests.conftest import require_services

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The browser tests' DJANGO_ALLOW_ASYNC_UNSAFE must not leak into a production check.
    ours = ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE")
    clean = {k: v for k, v in os.environ.items() if k not in ours}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env(**extra: str) -> dict[str, str]:
    return {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(60), "ALLOWED_HOSTS": "id.example.com", **extra}


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def example_env() -> dict[str, str]:
    """docker/.env.example as a deployment would fill it in: its values, with the secrets set."""
    values = {}
    for line in (ROOT / "docker/.env.example").read_text().splitlines():
        name, equals, value = line.partition("=")
        if equals and name.isupper() and not line.startswith("#"):
            values[name] = value
    return values | {"SECRET_KEY": secrets.token_urlsafe(60), "METRICS_KEY": secrets.token_urlsafe(32)}


def test_check_deploy_is_clean_with_the_example_configuration() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **example_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def settings_of(env: dict[str, str], *names: str) -> dict[str, Any]:
    """The values ``names`` take in settings.py when the environment is ``env``."""
    code = (
        f"import json; from django.conf import settings as s; print(json.dumps({{n: getattr(s, n) for n in {names}}}))"
    )
    result = manage("shell", "-c", code, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    values: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return values


def test_production_cookies_hsts_and_throttles_are_safe_by_default() -> None:
    values = settings_of(
        production_env(),
        "SESSION_COOKIE_NAME",
        "CSRF_COOKIE_NAME",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SILENCED_SYSTEM_CHECKS",
        "REST_FRAMEWORK",
    )
    assert (values["SESSION_COOKIE_NAME"], values["CSRF_COOKIE_NAME"]) == ("__Host-sessionid", "__Host-csrftoken")
    assert (values["SESSION_COOKIE_SECURE"], values["CSRF_COOKIE_SECURE"]) == (True, True)
    assert (values["SECURE_HSTS_SECONDS"], values["SECURE_HSTS_INCLUDE_SUBDOMAINS"]) == (31536000, True)
    # Preloading is the domain owner's decision (settings.py says why); Django's reminder is silenced only while off.
    assert (values["SECURE_HSTS_PRELOAD"], values["SILENCED_SYSTEM_CHECKS"]) == (False, ["security.W021"])
    api = values["REST_FRAMEWORK"]
    assert api["DEFAULT_THROTTLE_CLASSES"] == [
        "traceability.security.AnonThrottle",
        "traceability.security.UserThrottle",
    ]
    assert set(api["DEFAULT_THROTTLE_RATES"]) == {"anon", "user", "ingest", "auth", "password"}
    assert api["NUM_PROXIES"] == 0


def test_preload_and_the_rates_can_be_set_and_behind_a_proxy_its_address_is_trusted() -> None:
    env = production_env(SECURE_HSTS_PRELOAD="1", BEHIND_TLS_PROXY="1", API_ANON_THROTTLE_RATE="100/hour")
    values = settings_of(env, "SECURE_HSTS_PRELOAD", "SILENCED_SYSTEM_CHECKS", "REST_FRAMEWORK")
    assert (values["SECURE_HSTS_PRELOAD"], values["SILENCED_SYSTEM_CHECKS"]) == (True, [])
    assert values["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"]["anon"] == "100/hour"
    assert values["REST_FRAMEWORK"]["NUM_PROXIES"] == 1
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_development_keeps_the_plain_cookie_names_that_work_over_http() -> None:
    values = settings_of({"DEBUG": "1"}, "SESSION_COOKIE_NAME", "CSRF_COOKIE_NAME", "SESSION_COOKIE_SECURE")
    assert values == {
        "SESSION_COOKIE_NAME": "sessionid",
        "CSRF_COOKIE_NAME": "csrftoken",
        "SESSION_COOKIE_SECURE": False,
    }


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = manage("check", DEBUG="0")
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


@pytest.mark.parametrize("variable", ["API_ANON_THROTTLE_RATE", "DIGITAL_LINK_MISS_THROTTLE_RATE"])
def test_a_rate_that_is_not_one_stops_the_start(variable: str) -> None:
    result = manage("check", **production_env(**{variable: "30 an hour"}))
    assert result.returncode != 0
    assert "'30 an hour' is not a rate: write a count per s, min, hour or day" in result.stderr


def test_the_secret_key_can_come_from_a_mounted_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secret"
    key_file.write_text(secrets.token_urlsafe(60) + "\n")
    env = production_env(SECRET_KEY_FILE=str(key_file))
    env["SECRET_KEY"] = ""
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_health_answers_when_the_database_does() -> None:
    response = Client().get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_the_embedded_sqlite_database_runs_in_wal_mode(tmp_path: Path) -> None:
    """WAL lets the web process, workers and ingest read while one of them writes."""
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    code = (
        "from django.db import connection; c = connection.cursor(); "
        "c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])"
    )
    result = manage("shell", "-c", code, DEBUG="1", DATABASE_URL=database)
    assert result.stdout.strip().splitlines()[-1] == "wal", result.stdout + result.stderr


@pytest.mark.django_db
def test_ci_runs_the_suite_on_postgresql() -> None:
    if require_services():
        assert connection.vendor == "postgresql", "CI must run the suite on PostgreSQL (DATABASE_URL)"
    else:
        assert connection.vendor in ("sqlite", "postgresql")
