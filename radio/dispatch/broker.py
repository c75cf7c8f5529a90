"""The embedded MQTT broker (amqtt), run in its own thread with its own event loop.

For a single ward and for trying the system out; production points RADIO_MQTT_URL at Mosquitto or
another real broker (amqtt holds ~85 MiB at 1,000 connections, see docs/deploy.md).

Two modes:

- **open** (``secure=False``, the default, used by the demo and most tests): anyone may connect and do anything.
- **secure** (``secure=True`` with :class:`~radio.dispatch.acl.Accounts`): only the service account and nodes
  with credentials may connect, and every SUBSCRIBE, PUBLISH, delivery and Last Will is checked against the
  rules of radio/dispatch/acl.py — the same rules ``radio mqtt export`` writes for Mosquitto. A refused publish
  is dropped silently (it is still acknowledged), as Mosquitto does for MQTT 3.1.1; a refused subscription gets
  the failure code 0x80.

amqtt 0.12 merges a CONNECT into an existing session of the same client id, and takes that session over,
*before* it authenticates: an unauthenticated client could disconnect a node and have the broker publish the
Last Will it brought along on the node's behalf. :class:`_SecureBroker` therefore authenticates the CONNECT
first and refuses it before it touches any session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

from amqtt.broker import Broker  # type: ignore[import-untyped]
from amqtt.contexts import Action  # type: ignore[import-untyped]
from amqtt.errors import AMQTTError, MQTTError, NoDataError  # type: ignore[import-untyped]
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket  # type: ignore[import-untyped]
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler  # type: ignore[import-untyped]
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin  # type: ignore[import-untyped]
from amqtt.session import Session  # type: ignore[import-untyped]
from amqtt.utils import gen_client_id  # type: ignore[import-untyped]

from radio.dispatch import acl
from radio.dispatch.mqtt import BrokerAddress
from radio.errors import ServiceUnavailable

log = logging.getLogger(__name__)


class EmbeddedBroker:
    def __init__(self, host: str, port: int, *, secure: bool = False, accounts: acl.Accounts | None = None,
                 service_password: str | None = None) -> None:
        """``secure`` needs ``accounts`` (usually :class:`acl.RegistryAccounts`) and the service's password."""
        if secure and (accounts is None or not service_password):
            raise ValueError("a secure embedded broker needs its accounts and the service account's password")
        self.host, self.port = host, port
        self.secure = secure
        self.policy = BrokerPolicy(accounts) if secure and accounts is not None else None
        self._service_password = service_password
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def service_address(self) -> BrokerAddress:
        """Where the service connects: logged in as the service account when the broker is secure."""
        if not self.secure:
            return BrokerAddress(host=self.host, port=self.port)
        return BrokerAddress(host=self.host, port=self.port, username=acl.SERVICE_USER,
                             password=self._service_password)

    def start(self, timeout_s: float = 10.0) -> None:
        if _port_in_use(self.host, self.port):
            raise ServiceUnavailable(
                f"không khởi động được broker MQTT tích hợp: cổng {self.host}:{self.port} đang bị dùng "
                "(đặt RADIO_EMBEDDED_MQTT_PORT, hoặc RADIO_MQTT_URL để dùng broker đó)"
            )
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise ServiceUnavailable(f"broker MQTT tích hợp không khởi động được: {self._error}")
        log.info("embedded MQTT broker listening on %s%s", self.url, " (secure: accounts and ACL enforced)"
                 if self.secure else "")

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

    def _config(self) -> dict[str, Any]:
        listeners = {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0}}
        if self.policy is None:
            return {"listeners": listeners,
                    "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        return {"listeners": listeners, "plugins": {
            f"{__name__}.{AccountsAuthPlugin.__name__}": {"policy": self.policy},
            f"{__name__}.{AclTopicPlugin.__name__}": {"policy": self.policy},
        }}

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._broker = (_SecureBroker if self.secure else Broker)(self._config(), loop=loop)
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
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# secure mode --------------------------------------------------------------------------------------------
class BrokerPolicy:
    """The secure broker's decisions, shared by its auth and topic plugins (all on the broker's event loop)."""

    def __init__(self, accounts: acl.Accounts) -> None:
        self.accounts = accounts
        self._rules: dict[str, tuple[acl.Rule, ...]] = {}  # by user name, from its last successful login
        self.refused_logins = 0
        self.refused_topics = 0

    async def authenticate(self, session: Session) -> bool:
        """A known account with the right password, its own client id, and a Last Will it may publish."""
        who = f"{session.client_id!r} from {session.remote_address}"
        username, password = session.username, session.password
        if not username or password is None:
            return self._refuse(f"refused an anonymous MQTT connection {who}")
        try:
            account = await asyncio.to_thread(self.accounts.lookup, username)
        except Exception:  # the registry is unreachable: refuse rather than let anyone in
            log.exception("could not look up MQTT account %r", username)
            return self._refuse(f"refused MQTT login {username!r} {who}: account lookup failed")
        if account is None or not acl.verify_password(password, account.password_hash):
            return self._refuse(f"refused MQTT login {username!r} {who}: unknown user or wrong password")
        if account.client_id is not None and session.client_id != account.client_id:
            return self._refuse(f"refused MQTT login {username!r} {who}: a node must use its own id as client id")
        if session.will_flag and not acl.may_publish(account.rules, session.will_topic or ""):
            return self._refuse(f"refused MQTT login {username!r} {who}: Last Will on {session.will_topic!r} "
                                "is not a topic it may publish")
        self._rules[username] = account.rules
        return True

    def allowed(self, session: Session | None, topic: str | None, action: Action | None) -> bool:
        username = session.username if session is not None else None
        rules = self._rules.get(username) if username else None
        if rules is None or not topic:
            ok = False
        elif action == Action.PUBLISH:
            ok = acl.may_publish(rules, topic)
        elif action == Action.SUBSCRIBE:
            ok = acl.may_subscribe(rules, topic)
        elif action == Action.RECEIVE:
            ok = acl.may_receive(rules, topic)
        else:
            ok = False
        if not ok:
            self.refused_topics += 1
            if action != Action.RECEIVE:  # deliveries are checked per subscriber and message: refused quietly
                log.warning("MQTT: %r may not %s %r", username, action.value if action else "use", topic)
        return ok

    def _refuse(self, message: str) -> bool:
        self.refused_logins += 1
        log.warning(message)
        return False


@dataclass
class _PolicyConfig:
    policy: Any = None  # a BrokerPolicy; Any because amqtt type-checks plugin configs with dacite


class AccountsAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt auth plugin: logins checked by :class:`BrokerPolicy`."""

    Config = _PolicyConfig

    async def authenticate(self, *, session: Session) -> bool | None:
        policy: BrokerPolicy = self.config.policy
        return await policy.authenticate(session)


class AclTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """amqtt topic plugin: every subscribe, publish and delivery checked by :class:`BrokerPolicy`."""

    Config = _PolicyConfig

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        policy: BrokerPolicy = self.config.policy
        return policy.allowed(session, topic, action)


class _SecureBroker(Broker):  # type: ignore[misc]
    """amqtt's broker, authenticating each CONNECT before amqtt merges it into (or takes over) a session."""

    async def _initialize_client_session(self, reader: Any, writer: Any, remote_address: str,
                                         remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except (AMQTTError, MQTTError, NoDataError) as exc:
            with contextlib.suppress(OSError):
                await writer.close()
            raise MQTTError(f"bad CONNECT from {remote_address}:{remote_port}: {exc}") from exc
        if not await self._authenticate(incoming, self.listeners_config["default"]):
            with contextlib.suppress(OSError):
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
                await writer.close()
            raise MQTTError(f"CONNECT from {remote_address}:{remote_port} not authorised")
        return handler, await _merge_session(self, incoming)


async def _merge_session(broker: Broker, incoming: Session) -> Session:
    """What amqtt 0.12's ``Broker._initialize_client_session`` does after parsing the CONNECT."""
    sessions = broker._sessions  # noqa: SLF001 - amqtt internals, pinned by tests/security/test_broker_acl.py
    session = incoming
    if incoming.clean_session:
        if incoming.client_id:
            await broker._delete_session(incoming.client_id)  # noqa: SLF001
        else:
            incoming.client_id = gen_client_id()
        session.parent = 0
    elif incoming.client_id in sessions:
        session = sessions[incoming.client_id][0]
        for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive",
                     "username", "password"):
            setattr(session, name, getattr(incoming, name))
        session.parent = 1
    else:
        session.parent = 0
    delay = broker.config.get("timeout-disconnect-delay", 0)
    if session.keep_alive > 0 and isinstance(delay, int):
        session.keep_alive += delay
    return session
