"""A small paho-mqtt 2.x wrapper for the service: connect with a timeout, publish QoS 1, hand messages off.

paho runs its network loop in its own thread (``loop_start``); incoming messages are handed to a
callback on that thread, which must only enqueue (see radio/logbook/recorder.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from radio.errors import ServiceUnavailable

log = logging.getLogger(__name__)
MessageHandler = Callable[[str, bytes], None]


@dataclass(frozen=True, kw_only=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an MQTT URL: {url!r} (expected mqtt://host:port)")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class MqttClient:
    """One MQTT connection: clean session off (the broker queues QoS 1 for us while we are away)."""

    def __init__(self, address: BrokerAddress, client_id: str, on_message: MessageHandler | None = None,
                 subscriptions: list[str] | None = None) -> None:
        self.address = address
        self._subscriptions = subscriptions or []
        self._on_message = on_message
        self._connected = threading.Event()
        self._on_connect: list[Callable[[], None]] = []
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                                   protocol=paho.MQTTv311)
        # Let the broker hold many in-flight QoS 1 messages; paho's default of 20 throttles fan-out.
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        if address.username:
            self._client.username_pw_set(address.username, address.password)
        if address.tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def add_on_connect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on paho's thread: it must only signal) after every (re)connect."""
        self._on_connect.append(callback)

    def connect(self, timeout_s: float) -> None:
        """Connect and wait for CONNACK; raise ServiceUnavailable with the broker's address otherwise."""
        try:
            self._client.connect(self.address.host, self.address.port, keepalive=30)
        except OSError as exc:
            raise ServiceUnavailable(f"cannot reach the MQTT broker at {self.address}: {exc}") from None
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            raise ServiceUnavailable(f"the MQTT broker at {self.address} did not accept us within {timeout_s:g} s")

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        """Queue a publish; paho resends QoS 1 after a reconnect. Returns the handle to wait on."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise ServiceUnavailable(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        return info

    def close(self) -> None:
        self._connected.clear()  # a deliberate disconnect is not "lost"
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    # paho thread callbacks -------------------------------------------------------------------
    def _handle_connect(self, client: paho.Client, _ud: object, _flags: object, reason: object,
                        _props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT broker %s refused the connection: %s", self.address, reason)
            return
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        self._connected.set()
        log.info("connected to MQTT broker %s", self.address)
        for callback in self._on_connect:
            try:
                callback()
            except Exception:  # a listener bug must never kill paho's network thread
                log.exception("on-connect listener failed")

    def _handle_disconnect(self, _c: paho.Client, _ud: object, _flags: object, reason: object,
                           _props: object) -> None:
        if self._connected.is_set():
            log.warning("lost the MQTT broker %s (%s); reconnecting", self.address, reason)
        self._connected.clear()

    def _handle_message(self, _c: paho.Client, _ud: object, msg: paho.MQTTMessage) -> None:
        if self._on_message is not None:
            try:
                self._on_message(msg.topic, bytes(msg.payload))
            except Exception:  # a handler bug must never kill paho's network thread
                log.exception("message handler failed for %s", msg.topic)
