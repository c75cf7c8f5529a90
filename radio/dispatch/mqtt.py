"""A small paho-mqtt 2.x wrapper for the service: connect with a timeout, publish QoS 1, hand messages off.

paho runs its network loop in its own thread (``loop_start``); incoming messages are handed to a
callback on that thread, which must only enqueue (see radio/logbook/recorder.py).

Broker URLs: ``mqtt://[user:password@]host[:1883]`` or, over TLS, ``mqtts://[user:password@]host[:8883]``
with optional query parameters ``ca`` (CA bundle that signed the broker's certificate; default: the system's
trust store), ``cert`` and ``key`` (a client certificate), e.g.
``mqtts://loa-tdp1-a:secret@radio.example.vn:8883?ca=/etc/radio/ca.pem``. The broker's certificate and host
name are always verified (:func:`tls_context`); there is no switch to turn that off.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

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
    ca_file: Path | None = None  # CA bundle to verify the broker with; None = the system's trust store
    cert_file: Path | None = None  # client certificate (PEM; may hold the key too)
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError("TLS files (ca, cert, key) need an mqtts:// broker URL")
        if self.key_file and not self.cert_file:
            raise ValueError("a client key needs its certificate (cert=...)")

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """``mqtt[s]://[user:password@]host[:port][?ca=FILE&cert=FILE&key=FILE]``."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"not an MQTT URL: {url!r} (expected mqtt://host:port)")
        tls = parts.scheme == "mqtts"
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"ca", "cert", "key"}
        if unknown:
            raise ValueError(f"unknown MQTT URL option(s) {', '.join(sorted(unknown))} (expected ca, cert, key)")

        def path(name: str) -> Path | None:
            values = query.get(name)
            return Path(values[-1]) if values and values[-1] else None

        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=path("ca"),
            cert_file=path("cert"),
            key_file=path("key"),
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails: paho 2.2 drops such a socket without closing it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(address: BrokerAddress) -> ssl.SSLContext | None:
    """The TLS settings for ``address`` (None for plain mqtt://): TLS 1.2+, certificate and host name checked.

    paho (the service) and aiomqtt (nodes: ``aiomqtt.Client(..., tls_context=tls_context(address))``) both take it.
    """
    if not address.tls:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                             cafile=str(address.ca_file) if address.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.sslsocket_class = _ClosingSSLSocket  # paho (under aiomqtt too) leaks a socket whose handshake failed
        if address.cert_file:
            context.load_cert_chain(address.cert_file, address.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ServiceUnavailable(f"không đọc được các tệp TLS cho broker MQTT {address}: {exc}") from None
    return context


IO_SWITCH_INTERVAL_S = 0.0005


def _prefer_io_threads() -> None:
    """Let paho's network thread (and the web server's) get the GIL back within 0.5 ms, not CPython's 5 ms.

    Every socket call releases the GIL, and while another thread computes (the recorder writing thousands of node
    events) each re-acquisition waits a whole switch interval: at 5,000 nodes the network thread managed only a
    few dozen packets a second, clock requests timed out and downloads crawled. Process-wide, never raised.
    """
    if sys.getswitchinterval() > IO_SWITCH_INTERVAL_S:
        sys.setswitchinterval(IO_SWITCH_INTERVAL_S)


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
        context = tls_context(address)
        if context is not None:
            self._client.tls_set_context(context)
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
            raise ServiceUnavailable(f"không kết nối được broker MQTT {self.address}: {exc}") from None
        _prefer_io_threads()
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            raise ServiceUnavailable(f"broker MQTT {self.address} không chấp nhận kết nối trong {timeout_s:g} giây")

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        """Queue a publish; paho resends QoS 1 after a reconnect. Returns the handle to wait on."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise ServiceUnavailable(f"không gửi được tới {topic}: {paho.error_string(info.rc)}")
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
