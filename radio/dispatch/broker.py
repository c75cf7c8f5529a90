"""The embedded MQTT broker (amqtt), run in its own thread with its own event loop.

For a single ward and for trying the system out; production points RADIO_MQTT_URL at Mosquitto or
another real broker (amqtt holds ~85 MiB at 1,000 connections, see docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any

from radio.errors import ServiceUnavailable

log = logging.getLogger(__name__)


class EmbeddedBroker:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        if _port_in_use(self.host, self.port):
            raise ServiceUnavailable(
                f"cannot start the embedded MQTT broker: {self.host}:{self.port} is already in use "
                "(set RADIO_EMBEDDED_MQTT_PORT, or RADIO_MQTT_URL to use that broker)"
            )
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise ServiceUnavailable(f"the embedded MQTT broker did not start: {self._error}")
        log.info("embedded MQTT broker listening on %s", self.url)

    def stop(self) -> None:
        if self._loop is None or self._broker is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        try:
            fut.result(timeout=10)
        except Exception:  # shutting down anyway
            log.debug("embedded broker shutdown raised", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        from amqtt.broker import Broker  # imported here: heavy, and only the embedded mode needs it

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        try:
            self._broker = Broker(config, loop=loop)
            loop.run_until_complete(self._broker.start())
        except BaseException as exc:  # reported to start() instead of dying silently
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        # amqtt 0.12 leaves client connections open after shutdown: cancel their tasks and close their
        # transports (the selector loop's own registry) so no socket outlives the broker.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        for transport in list(getattr(loop, "_transports", {}).values()):
            if transport is not None and not transport.is_closing():
                transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
