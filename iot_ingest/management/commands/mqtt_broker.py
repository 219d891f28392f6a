"""An embedded MQTT 3.1.1 broker (amqtt) so that ``make demo`` needs no server installed. Demo only."""

from __future__ import annotations

import asyncio
import logging
import signal
from importlib.metadata import version
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session
from django.core.management.base import BaseCommand, CommandError, CommandParser

logger = logging.getLogger(__name__)

SESSION_EXPIRY = 24 * 3600
SHUTDOWN_SECONDS = 5


class OpenDoorAuthPlugin(BaseAuthPlugin):
    """Lets every client in, with or without credentials, and keeps its session.

    amqtt's own AnonymousAuthPlugin marks such clients anonymous, and amqtt
    then queues nothing for an anonymous persistent session while it is away,
    so messages published while the ingest restarts would be lost.
    """

    async def authenticate(self, *, session: Session) -> bool:
        return True


class Command(BaseCommand):
    help = (
        "Runs an embedded MQTT 3.1.1 broker (amqtt) for the demo. DEMO ONLY: anyone who can reach the address may "
        "connect, publish and subscribe, with no password and no TLS; and amqtt drops a QoS 1 message that a "
        "subscriber leaves unacknowledged for 5 s instead of delivering it again. Production uses Mosquitto (or "
        "EMQX, HiveMQ) through MQTT_URL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:1883", help="host:port to listen on (default 127.0.0.1:1883)")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("transitions").setLevel(logging.WARNING)  # amqtt's state machine narrates every step
        host, _, port = options["bind"].rpartition(":")
        if not host or not port.isdigit():
            raise CommandError("--bind takes host:port, for example 127.0.0.1:1883")
        config = {
            "listeners": {"default": {"type": "tcp", "bind": options["bind"]}},
            "session_expiry_interval": SESSION_EXPIRY,
            "plugins": {f"{__name__}.OpenDoorAuthPlugin": {}},
        }
        try:
            asyncio.run(self._serve(config, options["bind"]))
        except OSError as error:
            raise CommandError(f"cannot listen on {options['bind']}: {error}") from None

    async def _serve(self, config: dict[str, Any], bind: str) -> None:
        broker = Broker(config)
        await broker.start()
        logger.info("MQTT broker (amqtt %s) listening on %s; demo only: anyone may connect", version("amqtt"), bind)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        logger.info("stopping the MQTT broker")
        try:
            # amqtt can wait on a client that never says goodbye; a demo broker need not.
            await asyncio.wait_for(broker.shutdown(), timeout=SHUTDOWN_SECONDS)
        except TimeoutError:
            logger.warning("the MQTT broker did not stop within %s s; exiting anyway", SHUTDOWN_SECONDS)
