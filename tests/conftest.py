"""Shared fixtures: real brokers (embedded amqtt, Mosquitto), real databases (SQLite, PostgreSQL).

Service-backed fixtures skip with a reason when the service is missing; with RADIO_REQUIRE_SERVICES=1
(as .ci/run sets) they fail instead, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from radio.service import Service
from radio.settings import REPO_ROOT, Settings, load_settings
from radio.web.app import create_app

REQUIRE_SERVICES = os.environ.get("RADIO_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get("RADIO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DEMO = REPO_ROOT / "schedules" / "tho-xuong-2024.yaml"


def unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail in CI where every service is mandatory."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


# brokers --------------------------------------------------------------------------------------------
@dataclass
class Mosquitto:
    port: int
    conf: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self._listening, 10, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def _listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


def start_mosquitto(tmp: Path, extra: str = "") -> Mosquitto:
    if shutil.which("mosquitto") is None:
        unavailable("the mosquitto binary is not installed")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        # The service's own subscription must never lose node events (see docs/deploy.md).
        "max_queued_messages 100000\nmax_inflight_messages 0\n" + extra
    )
    broker = Mosquitto(port, conf)
    broker.start()
    return broker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = start_mosquitto(tmp_path)
    yield broker
    broker.stop()


# databases ------------------------------------------------------------------------------------------
@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"radio_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unavailable(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc.orig}")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'radio.db'}"
    return str(request.getfixturevalue("pg_url"))


# The machine's other brokers, with MQTT enabled by .ci/brokers.sh (shared by every test, unlike Mosquitto).
SHARED_BROKERS = {
    "rabbitmq": os.environ.get("RADIO_TEST_RABBITMQ_MQTT", "mqtt://127.0.0.1:1885"),
    "nats": os.environ.get("RADIO_TEST_NATS_MQTT", "mqtt://127.0.0.1:1886"),
}


def _reachable(url: str) -> bool:
    host, _, port = url.removeprefix("mqtt://").rpartition("@")[2].partition(":")
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, int(port or 1883))) == 0


@pytest.fixture(params=["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto),
                        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
                        pytest.param("nats", marks=pytest.mark.nats)])
def mqtt_url(request: pytest.FixtureRequest) -> str | None:
    """None means: the service starts its embedded broker."""
    if request.param == "embedded":
        return None
    if request.param in SHARED_BROKERS:
        url = SHARED_BROKERS[request.param]
        if not _reachable(url):
            unavailable(f"{request.param}'s MQTT listener at {url} is not reachable (run .ci/brokers.sh)")
        return url
    broker: Mosquitto = request.getfixturevalue("mosquitto")
    return broker.url


# settings and a running service ---------------------------------------------------------------------
@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        port = free_port()
        values: dict[str, object] = {
            "data_dir": tmp_path / "data", "http_port": port, "embedded_mqtt_port": free_port(),
            "public_base_url": f"http://127.0.0.1:{port}", "command_lead_s": 1.0, "broadcast_timeout_s": 20.0,
            # One-off test slots fire "now", whatever the hour: no quiet hours here (rules have their own tests).
            "quiet_hours": "00:00-00:00",
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@dataclass
class Running:
    service: Service
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def run_service(service: Service) -> Running:
    """Serve the app (and so start the service) with uvicorn in a thread, as `radio serve` does."""
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=service.settings.http_port,
                            log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 60, "the service to start")
    if not server.started:
        raise AssertionError("the service did not start (see the log above)")
    return Running(service, server, thread)


@pytest.fixture
def start_service() -> Iterator[Callable[[Service], Running]]:
    started: list[Running] = []

    def start(service: Service) -> Running:
        running = run_service(service)
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        running.stop()


# people ---------------------------------------------------------------------------------------------
ROLES = ("admin", "officer", "approver", "auditor", "node")


def role_headers(service: Service) -> dict[str, dict[str, str]]:
    """One user per role (named r-<role>) with an API token; the Authorization header for each."""
    from radio import auth
    from radio.db import migrate, transaction

    migrate(service.engine)
    headers: dict[str, dict[str, str]] = {}
    with transaction(service.factory) as session:
        for role in ROLES:
            user = auth.add_user(session, username=f"r-{role}", password="mat-khau-thu", role=role)
            headers[role] = {"Authorization": f"Bearer {auth.create_token(session, user, 'test')}"}
    return headers
