"""MQTT over TLS: the service (paho) and nodes (aiomqtt) verify the broker against the configured CA, or refuse it."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from radio.dispatch.mqtt import BrokerAddress, MqttClient, tls_context
from radio.errors import ServiceUnavailable
from tests.conftest import Mosquitto, free_port, unavailable, wait_for

pytestmark = pytest.mark.mosquitto


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key


def _ca(tmp: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = _key(tmp / f"{name}.key")
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = tmp / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def _leaf(tmp: Path, name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *,
          server: bool) -> tuple[Path, Path]:
    key_path = tmp / f"{name}.key"
    key = _key(key_path)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:  # valid for the IP address only: connecting as "localhost" must fail the host name check
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                        critical=False)
    cert_path = tmp / f"{name}.pem"
    cert_path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A self-signed CA made for this test, a server certificate for 127.0.0.1 and a client certificate."""
    ca, ca_key, ca_path = _ca(tmp_path, "radio-test-ca")
    server_cert, server_key = _leaf(tmp_path, "broker", ca, ca_key, server=True)
    client_cert, client_key = _leaf(tmp_path, "loa-tdp1-a", ca, ca_key, server=False)
    _, _, other = _ca(tmp_path, "someone-else")
    return Pki(ca_path, server_cert, server_key, client_cert, client_key, other)


def _tls_mosquitto(tmp: Path, pki: Pki, *, require_certificate: bool = False) -> Mosquitto:
    if shutil.which("mosquitto") is None:
        unavailable("the mosquitto binary is not installed")
    port = free_port()
    conf = tmp / f"tls-{port}.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\ntls_version tlsv1.2\n"
        f"require_certificate {'true' if require_certificate else 'false'}\n"
        "user root\n"  # read the test's private key files as the test's own user (see tests/security/conftest.py)
    )
    broker = Mosquitto(port, conf)
    broker.start()
    return broker


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    broker = _tls_mosquitto(tmp_path, pki)
    yield broker
    broker.stop()


def _url(port: int, host: str = "127.0.0.1", **query: Path) -> str:
    tail = "&".join(f"{k}={v}" for k, v in query.items())
    return f"mqtts://{host}:{port}" + (f"?{tail}" if tail else "")


def test_broker_urls_carry_the_tls_files() -> None:
    """mqtts:// URLs take ca, cert and key; TLS files on a plain mqtt:// URL or unknown options are refused."""
    address = BrokerAddress.parse("mqtts://n1:p%40ss@broker.vn?ca=/etc/radio/ca.pem&cert=/c.pem&key=/k.pem")
    assert (address.port, address.password, address.ca_file, address.cert_file, address.key_file) == (
        8883, "p@ss", Path("/etc/radio/ca.pem"), Path("/c.pem"), Path("/k.pem"))
    assert str(address) == "mqtts://broker.vn:8883"
    assert tls_context(BrokerAddress.parse("mqtt://broker.vn")) is None
    for bad in ("mqtt://broker.vn?ca=/ca.pem", "mqtts://broker.vn?key=/k.pem", "mqtts://broker.vn?insecure=1"):
        with pytest.raises(ValueError):
            BrokerAddress.parse(bad)
    with pytest.raises(ServiceUnavailable, match="tệp TLS"):
        tls_context(BrokerAddress.parse("mqtts://broker.vn?ca=/khong/co/ca.pem"))


def test_the_service_connects_with_the_ca_and_exchanges_messages(tls_broker: Mosquitto, pki: Pki) -> None:
    """With the CA that signed the broker's certificate, the paho client connects over TLS and messages flow."""
    received: list[tuple[str, bytes]] = []
    client = MqttClient(BrokerAddress.parse(_url(tls_broker.port, ca=pki.ca)), f"svc-{uuid.uuid4().hex[:6]}",
                        on_message=lambda t, p: received.append((t, p)), subscriptions=["radio/v1/tx/evt/+"])
    client.connect(5)
    try:
        client.publish("radio/v1/tx/evt/n1", b"{}").wait_for_publish(5)
        wait_for(lambda: received == [("radio/v1/tx/evt/n1", b"{}")], 5, "the message over TLS")
    finally:
        client.close()


@pytest.mark.parametrize("case", ["no-ca", "other-ca", "wrong-host"])
def test_the_service_refuses_a_broker_it_cannot_verify(tls_broker: Mosquitto, pki: Pki, case: str) -> None:
    """Without the CA, with another CA, or under a name the certificate does not carry, the connection is refused."""
    url = {"no-ca": _url(tls_broker.port), "other-ca": _url(tls_broker.port, ca=pki.other_ca),
           "wrong-host": _url(tls_broker.port, host="localhost", ca=pki.ca)}[case]
    client = MqttClient(BrokerAddress.parse(url), f"svc-{uuid.uuid4().hex[:6]}")
    with pytest.raises(ServiceUnavailable, match="certificate verify failed|CERTIFICATE_VERIFY_FAILED"):
        client.connect(5)


async def _node_roundtrip(address: BrokerAddress, topic: str) -> bytes:
    async with aiomqtt.Client(address.host, address.port, identifier=f"n-{uuid.uuid4().hex[:6]}",
                              tls_context=tls_context(address), timeout=5) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"xin chao", qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                return bytes(message.payload) if isinstance(message.payload, bytes) else b""
    raise AssertionError("no message")


def test_a_node_connects_with_the_ca_and_is_refused_without_it(tls_broker: Mosquitto, pki: Pki) -> None:
    """aiomqtt with tls_context(address) talks to the broker with the CA, and cannot connect without it."""
    good = BrokerAddress.parse(_url(tls_broker.port, ca=pki.ca))
    assert asyncio.run(_node_roundtrip(good, "radio/v1/tx/cmd/all")) == b"xin chao"
    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(_node_roundtrip(BrokerAddress.parse(_url(tls_broker.port)), "radio/v1/tx/cmd/all"))
    with pytest.raises(aiomqtt.MqttError):
        asyncio.run(_node_roundtrip(BrokerAddress.parse(_url(tls_broker.port, ca=pki.other_ca)), "radio/v1/tx/cmd/all"))


def test_a_broker_requiring_client_certificates_lets_in_only_holders(tmp_path: Path, pki: Pki) -> None:
    """With require_certificate, a node presenting a certificate from the CA connects; one without is refused."""
    broker = _tls_mosquitto(tmp_path, pki, require_certificate=True)
    try:
        with_cert = BrokerAddress.parse(_url(broker.port, ca=pki.ca, cert=pki.client_cert, key=pki.client_key))
        assert asyncio.run(_node_roundtrip(with_cert, "radio/v1/tx/cmd/all")) == b"xin chao"
        with pytest.raises(aiomqtt.MqttError):
            asyncio.run(_node_roundtrip(BrokerAddress.parse(_url(broker.port, ca=pki.ca)), "radio/v1/tx/cmd/all"))
    finally:
        broker.stop()
