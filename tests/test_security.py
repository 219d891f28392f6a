"""What a browser and an API client see of the security settings, on real responses.

Headers and cookies are checked with the values ``traceability/settings.py`` computes in production
(read from a subprocess started with production environment variables), not with values written here.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from ledger import keys
from tests import factories
from tests.conftest import Persona
from tests.scenarios import register_batch
from tests.traceability.test_settings import ROOT, production_env, settings_of
from traceability.security import AnonThrottle

# Everything that decides a response's security headers and cookies.
SECURITY_SETTINGS = (
    "MIDDLEWARE",
    "SECURE_SSL_REDIRECT",
    "SECURE_REDIRECT_EXEMPT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_CONTENT_TYPE_NOSNIFF",
    "SECURE_REFERRER_POLICY",
    "SECURE_CROSS_ORIGIN_OPENER_POLICY",
    "SECURE_CSP",
    "SECURE_CSP_REPORT_ONLY",
    "PERMISSIONS_POLICY",
    "X_FRAME_OPTIONS",
    "SESSION_COOKIE_NAME",
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "SESSION_COOKIE_PATH",
    "SESSION_COOKIE_DOMAIN",
    "CSRF_COOKIE_NAME",
    "CSRF_COOKIE_SECURE",
    "CSRF_COOKIE_PATH",
    "CSRF_COOKIE_DOMAIN",
)


@pytest.fixture(scope="module")
def production_values() -> dict[str, Any]:
    return settings_of(production_env(), *SECURITY_SETTINGS)


@pytest.fixture
def production(settings: Any, production_values: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """This process answers as production would (a Client built afterwards loads the middleware anew)."""
    for name, value in production_values.items():
        setattr(settings, name, value)
    settings.STATIC_ROOT = tmp_path / "static"  # collectstatic's output, as in the image
    settings.STATIC_ROOT.mkdir()
    return production_values


def https(client: Client, path: str, **extra: Any) -> Any:
    return client.get(path, secure=True, **extra)


def assert_security_headers(response: Any, *, framed_by_middleware: bool = True) -> None:
    headers = response.headers
    where = f"{response.request['PATH_INFO']} ({response.status_code})"
    assert headers.get("Strict-Transport-Security") == "max-age=31536000; includeSubDomains", where
    policy = headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in policy, where
    assert "frame-ancestors 'none'" in policy, where
    assert "object-src 'none'" in policy, where
    assert "Content-Security-Policy-Report-Only" not in headers, where
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    assert headers.get("Referrer-Policy") == "same-origin", where
    assert headers.get("Cross-Origin-Opener-Policy") == "same-origin", where
    permissions = headers.get("Permissions-Policy", "")
    assert {"camera=()", "geolocation=()", "microphone=()", "payment=()"} <= set(permissions.split(", ")), where
    if framed_by_middleware:
        assert headers.get("X-Frame-Options") == "DENY", where


# Headers -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_kind_of_response_carries_the_security_headers(
    production: dict[str, Any], manufacturer: Persona, regulator: Persona
) -> None:
    batch = register_batch(manufacturer, factories.ProductFactory(manufacturer=manufacturer.organisation))
    anonymous, signed_in = Client(), Client()
    signed_in.force_login(regulator.user)
    responses = [
        https(anonymous, "/accounts/login/"),
        https(anonymous, "/"),
        https(anonymous, f"/01/{batch.product.gtin}/10/{batch.lot}"),  # the consumer page
        https(anonymous, "/01/not-a-gtin"),  # its 400
        https(anonymous, "/health/"),
        https(anonymous, "/no-such-page/"),
        https(anonymous, "/api/v1/ledger/keys"),
        https(anonymous, "/api/v1/me"),  # 401
        https(signed_in, "/api/v1/batches/"),
        https(signed_in, "/regulator/", follow=True),
        https(signed_in, "/api/v1/docs/"),
    ]
    assert [r.status_code for r in responses] == [200, 302, 200, 400, 200, 404, 200, 401, 200, 200, 200]
    for response in responses:
        assert_security_headers(response)


@pytest.mark.django_db
def test_static_files_carry_the_policy_too(production: dict[str, Any], settings: Any) -> None:
    """WhiteNoise answers them before most middleware: it sits after the header middleware."""
    assert "whitenoise.middleware.WhiteNoiseMiddleware" in production["MIDDLEWARE"]
    collected = settings.STATIC_ROOT / "traceability" / "board.js"
    collected.parent.mkdir()
    shutil.copy(ROOT / "traceability/static/traceability/board.js", collected)
    response = https(Client(), "/static/traceability/board.js")
    assert response.status_code == 200
    assert_security_headers(response, framed_by_middleware=False)


@pytest.mark.django_db
def test_plain_http_is_redirected_to_https_except_the_health_probe(production: dict[str, Any]) -> None:
    client = Client()
    response = client.get("/accounts/login/")
    assert (response.status_code, response["Location"]) == (301, "https://testserver/accounts/login/")
    assert client.get("/health/").status_code == 200


def _parameterless_paths() -> Iterator[str]:
    """Every route that needs no value filled in: pages, API, admin."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[str]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern).removeprefix("^").removesuffix("$")
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and not set(route) & set("<([?*+\\"):
                yield "/" + route

    yield from walk(get_resolver().url_patterns, "")


@pytest.mark.django_db
def test_no_route_answers_without_the_content_security_policy(production: dict[str, Any], regulator: Persona) -> None:
    staff = factories.UserFactory(is_staff=True, is_superuser=True)
    clients = {"anonymous": Client(), "regulator": Client(), "staff": Client()}
    clients["regulator"].force_login(regulator.user)
    clients["staff"].force_login(staff)
    paths = sorted(set(_parameterless_paths()))
    assert {"/health/", "/api/v1/docs/", "/admin/traceability/auditevent/", "/accounts/login/"} <= set(paths)
    missing = [
        f"{who} {path} {response.status_code}"
        for path in paths
        for who, client in clients.items()
        if "default-src 'self'" not in (response := https(client, path)).headers.get("Content-Security-Policy", "")
    ]
    assert missing == []


@pytest.mark.django_db
def test_the_api_docs_allow_inline_styles_but_scripts_only_from_the_site(
    production: dict[str, Any], regulator: Persona
) -> None:
    client = Client()
    client.force_login(regulator.user)
    policy = https(client, "/api/v1/docs/").headers["Content-Security-Policy"]
    directives = {part.split()[0]: part.split()[1:] for part in policy.split("; ")}
    assert directives["script-src"][0] == "'self'"
    assert all(source == "'self'" or source.startswith("'nonce-") for source in directives["script-src"])
    assert directives["style-src"] == ["'self'", "'unsafe-inline'"]
    assert directives["frame-ancestors"] == ["'none'"]


# Cookies -----------------------------------------------------------------------------------


def assert_host_cookie(cookie: Any) -> None:
    """What a browser demands of a __Host- cookie, or it drops it."""
    assert cookie.key.startswith("__Host-")
    assert cookie["secure"] is True
    assert cookie["path"] == "/"
    assert cookie["domain"] == ""


@pytest.mark.django_db
def test_session_and_csrf_cookies_are_host_only_and_secure_in_production(
    production: dict[str, Any], pharmacy: Persona
) -> None:
    client = Client()
    form = https(client, "/accounts/login/")
    assert_host_cookie(form.cookies["__Host-csrftoken"])

    signed_in = client.post(
        "/accounts/login/", {"username": "pharmacy", "password": "correct horse battery staple"}, secure=True
    )
    assert signed_in.status_code == 302
    session = signed_in.cookies["__Host-sessionid"]
    assert_host_cookie(session)
    assert session["httponly"] is True
    assert "sessionid" not in signed_in.cookies
    assert https(client, "/api/v1/me").json()["username"] == "pharmacy"


# API throttling ------------------------------------------------------------------------------


@pytest.fixture
def low_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    """DRF reads the rates once, into the throttle classes; the tests lower them there."""
    for scope, rate in {"anon": "3/min", "user": "3/min", "ingest": "5/min"}.items():
        monkeypatch.setitem(AnonThrottle.THROTTLE_RATES, scope, rate)


def assert_throttled(response: Any) -> None:
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "throttled" in response.json()["detail"].lower()


@pytest.mark.django_db
@pytest.mark.usefixtures("low_rates")
def test_an_anonymous_caller_is_throttled_per_address_with_retry_after() -> None:
    here, elsewhere = Client(REMOTE_ADDR="198.51.100.7"), Client(REMOTE_ADDR="203.0.113.9")
    assert [here.get("/api/v1/ledger/keys").status_code for _ in range(3)] == [200, 200, 200]
    assert_throttled(here.get("/api/v1/ledger/keys"))
    # A forged X-Forwarded-For does not buy a fresh allowance: without a proxy the header is ignored.
    assert_throttled(here.get("/api/v1/ledger/keys", HTTP_X_FORWARDED_FOR="192.0.2.44"))
    assert elsewhere.get("/api/v1/ledger/keys").status_code == 200


@pytest.mark.django_db
@pytest.mark.usefixtures("low_rates")
def test_a_signed_in_caller_is_throttled_per_user(pharmacy: Persona, carrier: Persona) -> None:
    client = pharmacy.client()
    assert [client.get("/api/v1/me").status_code for _ in range(3)] == [200, 200, 200]
    assert_throttled(client.get("/api/v1/me"))
    assert carrier.client().get("/api/v1/me").status_code == 200


@pytest.mark.django_db
@pytest.mark.usefixtures("low_rates")
def test_device_ingest_has_an_allowance_of_its_own() -> None:
    """Loggers post often: the ingest endpoint neither spends nor is held to the anonymous allowance."""
    client = Client(REMOTE_ADDR="198.51.100.7")
    upload = {"path": "/api/v1/ingest/readings", "data": {"messages": []}, "content_type": "application/json"}
    assert [client.post(**upload).status_code for _ in range(5)] == [400] * 5
    assert client.get("/api/v1/ledger/keys").status_code == 200
    assert_throttled(client.post(**upload))


# The ledger key's file mode ----------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o660, 0o644, 0o610])
def test_a_ledger_key_its_group_or_others_may_use_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ledger.key"
    keys.load(path, create=True)
    os.chmod(path, mode)
    with pytest.raises(keys.KeyFileError) as refused:
        keys.load(path, create=False)
    message = str(refused.value)
    assert str(path) in message
    assert f"mode {mode:04o}" in message
    assert f"chmod 600 {path}" in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_ledger_key_only_its_owner_may_read_is_used(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ledger.key"
    created = keys.load(path, create=True)
    os.chmod(path, mode)
    assert keys.public_bytes(keys.load(path, create=False)) == keys.public_bytes(created)
    assert stat.S_IMODE(path.stat().st_mode) == mode
