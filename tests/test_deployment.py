"""The production deployment (docker/): compose runs real entry points, every setting is documented, and
the broker's configuration does what it says when the real ``mosquitto`` runs it.

No Docker engine is needed: compose.yaml is read with PyYAML, each command is
parsed by the program that would run it, and Mosquitto runs from
``docker/mosquitto/`` on a free port.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import get_commands, load_command_class
from gunicorn.config import Config as GunicornConfig  # type: ignore[import-untyped]

from tests.brokers import Broker, connect, docker_mosquitto, readings, signed_in
from tests.iot_ingest.processes import DEADLINE, Processes, executable, free_port, unique, wait_until

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
IMAGE_SERVICES = ("migrate", "web", "worker", "beat", "ingest")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


# compose.yaml ---------------------------------------------------------------------------------


def _command_error(argv: list[str]) -> str | None:
    """Why ``argv`` would not start one of the project's processes, or None: parsed by the program itself."""
    if argv[:2] == ["python", "manage.py"]:
        name, *args = argv[2:]
        commands = get_commands()
        if name not in commands:
            return f"manage.py has no command {name!r}"
        parser = load_command_class(commands[name], name).create_parser("manage.py", name)
        try:
            parser.parse_args(args)
        except SystemExit:
            return f"manage.py {name} refuses {args}"
        return None
    if argv[0] == "celery":
        # Click loads --app (the Django settings with it) and refuses unknown options before --help.
        done = subprocess.run(
            [sys.executable, "-m", "celery", *argv[1:], "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        return None if done.returncode == 0 else done.stderr.strip()
    if argv[0] == "gunicorn":
        try:
            parsed = GunicornConfig().parser().parse_args(argv[1:])
        except SystemExit:
            return f"gunicorn refuses {argv[1:]}"
        module, _, attribute = parsed.args[0].partition(":")
        wsgi = __import__(module, fromlist=[attribute])
        return None if callable(getattr(wsgi, attribute, None)) else f"{parsed.args[0]} is not a WSGI application"
    if argv[:2] == ["python", "docker/healthcheck.py"]:
        return None if (ROOT / argv[1]).is_file() else f"{argv[1]} does not exist"
    return f"{argv[0]} is not one of the project's entry points"


def _health_command(service: dict[str, Any]) -> list[str] | None:
    test = service.get("healthcheck", {}).get("test")
    if not test:
        return None
    if test[0] == "CMD":
        return list(test[1:])
    assert test[0] == "CMD-SHELL", test
    return shlex.split(test[1].replace("$$", "$"))


@pytest.mark.parametrize("name", IMAGE_SERVICES)
def test_every_service_of_the_image_runs_a_real_entry_point(name: str) -> None:
    service = services()[name]
    assert service["image"].startswith("coldtrace:"), "one image for every process"
    assert _command_error(service["command"]) is None, _command_error(service["command"])
    health = _health_command(service)
    if health is not None:
        assert _command_error(health) is None, _command_error(health)


def test_the_image_starts_and_checks_real_entry_points() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    for instruction in (r"CMD", r"HEALTHCHECK .*?CMD"):
        found = re.search(rf"^{instruction} (\[.*\])\s*$", dockerfile, re.MULTILINE)
        assert found, f"no {instruction} in docker/Dockerfile"
        argv = yaml.safe_load(found[1])  # a JSON array, which YAML reads
        assert _command_error(argv) is None, _command_error(argv)


def test_the_image_installs_the_lock_with_hashes_and_runs_as_a_user() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1:]
    assert len(stages) >= 2, "a multi-stage build"
    assert re.search(r"pip install --require-hashes .*-r \S*requirements-production\.lock", dockerfile)
    assert "collectstatic" in stages[0]
    users = re.findall(r"^USER (\S+)", stages[-1], re.MULTILINE)
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


def _pins(lock: str) -> dict[str, str]:
    """A lock file's packages, each with its version and hashes as one string."""
    text = (ROOT / lock).read_text()
    return {
        name.lower(): re.sub(r"\s+", " ", rest)
        for name, rest in re.findall(r"^([A-Za-z0-9_.-]+)(==\S+(?:\s*\\\s*--hash=\S+)+)", text, re.MULTILINE)
    }


def test_the_production_lock_is_the_development_lock_without_the_development_tools() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    production, development = _pins("requirements-production.lock"), _pins("requirements.lock")
    name = re.compile(r"^[A-Za-z0-9_.-]+")

    assert production
    assert {package: development.get(package) for package in production} == production  # same versions, hashes
    for requirement in project["dependencies"]:
        assert name.findall(requirement)[0].lower() in production, requirement
    for tool in project["optional-dependencies"]["dev"]:
        assert name.findall(tool)[0].lower() not in production, tool


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    # .env and docker/.env hold secrets; var/ the development keys and database; .venv and .git are not the app.
    assert {".env", "docker/.env", "var", ".venv", ".git"} <= ignored
    assert re.search(r"^COPY \. /app$", (DOCKER / "Dockerfile").read_text(), re.MULTILINE)


def test_only_web_publishes_a_port_and_the_platform_waits_for_its_migrations() -> None:
    found = services()
    assert {name for name, service in found.items() if service.get("ports")} == {"web"}
    assert {"db", "redis", "mosquitto", *IMAGE_SERVICES} <= set(found)
    for name in IMAGE_SERVICES:
        if name != "migrate":
            assert found[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    assert found["ingest"]["depends_on"]["mosquitto"] == {"condition": "service_healthy"}


def test_every_service_has_a_health_check_or_says_why_not() -> None:
    source = (DOCKER / "compose.yaml").read_text()
    for name, service in services().items():
        if name == "web":
            assert "healthcheck" not in service, "web uses the image's HEALTHCHECK"
        elif service["healthcheck"].get("disable"):
            block = re.search(rf"^  {name}:\n((?:    .*\n|\n)*)", source, re.MULTILINE)
            assert block, name
            assert "#" in block[1], f"{name} has no health check and no comment saying why"
        else:
            assert _health_command(service), name


def test_data_lives_in_named_volumes() -> None:
    document = compose()
    declared = set(document["volumes"])
    for name in ("db", "redis", "mosquitto"):
        mounts = [volume.split(":")[0] for volume in document["services"][name]["volumes"]]
        assert declared & set(mounts), f"{name} keeps its data in no named volume"


def test_redis_keeps_its_queue_and_never_evicts_a_task() -> None:
    command = services()["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=False))
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"


# .env.example -------------------------------------------------------------------------------


def _settings_variables() -> tuple[set[str], set[str]]:
    """(every variable settings.py reads, those read as secrets, which may also come from NAME_FILE)."""
    source = (ROOT / "traceability/settings.py").read_text()
    read = set(re.findall(r'(?:env\.\w+|_secret)\("([A-Z_]+)"', source))
    secret = set(re.findall(r'_secret\("([A-Z_]+)"', source))
    assert read, "the pattern no longer finds the settings' variables"
    assert secret, "the pattern no longer finds the settings' secrets"
    return read, secret


def _documented() -> dict[str, int]:
    lines = (DOCKER / ".env.example").read_text().splitlines()
    return {match[1]: n for n, line in enumerate(lines) if (match := re.match(r"([A-Z][A-Z0-9_]*)=", line))}


def test_every_setting_is_in_env_example_and_every_variable_there_is_read() -> None:
    read, secret = _settings_variables()
    compose_only = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (DOCKER / "compose.yaml").read_text()))
    documented = set(_documented())
    assert read - documented == set(), "settings read these, docker/.env.example does not list them"
    assert compose_only - documented == set(), "compose.yaml reads these, docker/.env.example does not list them"
    unknown = documented - read - compose_only - {f"{name}_FILE" for name in secret}
    assert unknown == set(), "docker/.env.example lists these, nothing reads them"


def test_every_variable_in_env_example_comes_with_a_comment() -> None:
    lines = (DOCKER / ".env.example").read_text().splitlines()
    for name, n in _documented().items():
        block_start = n
        while block_start > 0 and lines[block_start - 1].strip():
            block_start -= 1
        assert lines[block_start].startswith("#"), f"{name} has no comment"


# The web container's health check -----------------------------------------------------------


def test_the_health_check_probe_sends_a_host_django_accepts() -> None:
    sys.path.insert(0, str(DOCKER))
    try:
        from healthcheck import probe_host  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(DOCKER))
    assert probe_host("id.example.com, web") == "id.example.com"
    assert probe_host(".example.com") == "example.com"
    assert probe_host("*") == "localhost"
    assert probe_host("") == "localhost"


@pytest.mark.django_db(transaction=True)
def test_the_health_check_passes_on_a_live_server_and_fails_without_one(live_server: Any) -> None:
    port = live_server.url.rsplit(":", 1)[1]
    env = {"PATH": "/usr/bin:/bin", "PORT": port, "ALLOWED_HOSTS": "localhost"}
    healthy = subprocess.run(
        [sys.executable, "docker/healthcheck.py"], cwd=ROOT, env=env, capture_output=True, timeout=30, check=False
    )
    assert healthy.returncode == 0, healthy.stderr
    env["PORT"] = str(free_port())
    down = subprocess.run(
        [sys.executable, "docker/healthcheck.py"], cwd=ROOT, env=env, capture_output=True, timeout=30, check=False
    )
    assert down.returncode == 1


# Mosquitto, as the real broker reads docker/mosquitto/ (tests/brokers.py) ----------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """The real mosquitto with docker/mosquitto/'s files, a password file of the test's own, on a free port."""
    with Processes(tmp_path) as processes:
        yield docker_mosquitto(processes, tmp_path, ("coldtrace-ingest", "healthcheck", "LOG-A", "LOG-B"))


def test_anonymous_and_wrong_passwords_are_refused(broker: Broker) -> None:
    anonymous = connect(broker, None)
    wrong = connect(broker, "LOG-A", "not-the-password")
    for client in (anonymous, wrong):
        assert client.connack is not None
        assert client.connack.is_failure, client.connack
        assert not client.client.is_connected()
        client.close()


def test_a_logger_publishes_its_own_topics_and_no_other_loggers(broker: Broker) -> None:
    ingest = signed_in(broker, "coldtrace-ingest")
    # The ingest service's own filter: the MQTT 5 shared subscription of spec/device-protocol.md.
    granted = ingest.subscribe(f"$share/ingest/{readings('+')}")
    assert [code.is_failure for code in granted] == [False], granted
    logger = signed_in(broker, "LOG-A")

    assert not logger.publish(readings("LOG-A"), b"first").is_failure
    forged = logger.publish(readings("LOG-B"), b"forged")
    assert forged.getName() == "Not authorized", forged
    assert not logger.publish("coldtrace/v1/devices/LOG-A/status", b"online", retain=True).is_failure
    assert logger.publish("coldtrace/v1/devices/LOG-B/status", b"offline", retain=True).is_failure
    assert not logger.publish(readings("LOG-A"), b"second").is_failure

    # One publisher's messages reach a subscriber in order: once "second" is in, "forged" would be too.
    wait_until(
        "the ingest subscriber to get LOG-A's second message",
        lambda: (readings("LOG-A"), b"second") in ingest.received(),
        processes=broker.processes,
        watch=[broker.process],
    )
    assert ingest.received() == [(readings("LOG-A"), b"first"), (readings("LOG-A"), b"second")]
    for client in (ingest, logger):
        client.close()


def test_a_logger_cannot_read_other_loggers_readings(broker: Broker) -> None:
    spy = signed_in(broker, "LOG-B")
    spy.subscribe(readings("+"))
    ingest = signed_in(broker, "coldtrace-ingest")
    ingest.subscribe(readings("+"))
    logger = signed_in(broker, "LOG-A")
    logger.publish(readings("LOG-A"), b"reading")
    wait_until(
        "ingest to get the reading",
        lambda: bool(ingest.received()),
        processes=broker.processes,
        watch=[broker.process],
    )
    # The broker has routed the reading; a SUBACK it sends the spy now comes after anything routed to it.
    spy.subscribe("coldtrace/v1/devices/LOG-B/status")
    assert spy.received() == []
    for client in (spy, ingest, logger):
        client.close()


def test_the_broker_queues_far_more_than_1000_messages_for_an_absent_ingest(broker: Broker) -> None:
    """Mosquitto's default max_queued_messages (1000) would drop the rest of this burst."""
    burst = 1500
    client_id = unique("ingest")
    ingest = signed_in(broker, "coldtrace-ingest", client_id=client_id, clean=True, expiry=300)
    ingest.subscribe(readings("+"))
    ingest.close()  # gone, its session kept: the broker queues for it
    logger = signed_in(broker, "LOG-A")
    for seq in range(burst):
        logger.client.publish(readings("LOG-A"), str(seq).encode(), qos=1)
    assert not logger.publish(readings("LOG-A"), b"end").is_failure  # the broker has taken every one before it
    back = signed_in(broker, "coldtrace-ingest", client_id=client_id, clean=False, expiry=300)
    wait_until(
        "the queued burst",
        lambda: (readings("LOG-A"), b"end") in back.received(),
        processes=broker.processes,
        watch=[broker.process],
    )
    payloads = [payload for _topic, payload in back.received()]
    assert payloads == [str(seq).encode() for seq in range(burst)] + [b"end"]
    for client in (logger, back):
        client.close()


def test_the_compose_health_check_signs_in_and_reads_the_uptime(broker: Broker) -> None:
    command = _health_command(services()["mosquitto"])
    assert command is not None
    assert command[0] == "mosquitto_sub"
    command = [executable("mosquitto_sub"), *command[1:]]
    command[command.index("-p") + 1] = str(broker.port)
    password = broker.passwords["healthcheck"]
    healthy = [password if arg == "$MQTT_HEALTHCHECK_PASSWORD" else arg for arg in command]
    done = subprocess.run(healthy, capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "no $SYS/broker/uptime message"
    wrong = [("x" + password) if arg == "$MQTT_HEALTHCHECK_PASSWORD" else arg for arg in command]
    refused = subprocess.run(wrong, capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert refused.returncode != 0
