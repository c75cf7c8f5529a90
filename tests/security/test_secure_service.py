"""The real service in secure MQTT mode (``mqtt_secure``) on a Mosquitto configured from `radio mqtt export`.

Every node logs in with its own password (from the registry), the service with its service account. A
broadcast fired by the service plays on every targeted node; a node cannot forge another node's report
(the broker drops it), and a report naming another node on the node's own topic is dropped, with a log
line, by the service.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from radio.db import migrate, transaction
from radio.dispatch import acl, topics
from radio.dispatch.mqtt import BrokerAddress
from radio.models import BroadcastStatus, Delivery, Node, Slot, utcnow
from radio.node.agent import NodeConfig
from radio.node.simulator import Fleet
from radio.schedule.loader import load_programme, parse_programme
from radio.service import Service
from radio.settings import Settings
from tests.conftest import DEMO, Mosquitto, Running, free_port, unavailable, wait_for
from tests.node.conftest import FleetThread
from tests.security.conftest import Peer
from tests.test_end_to_end import SHORT_SLOT, _wait_settled

SETTLE_S = 0.5


def node_fleet(settings: Settings, port: int, passwords: dict[str, str], zones: dict[str, str]) -> FleetThread:
    """The registered nodes as simulated agents, each logged in with its own MQTT password, on their own loop."""
    return FleetThread(Fleet([
        NodeConfig(node_id=node, zone_id=zones[node], site=settings.site_id,
                   broker=BrokerAddress.parse(f"mqtt://{node}:{password}@127.0.0.1:{port}"),
                   cache_dir=settings.data_dir / "node-cache" / node)
        for node, password in sorted(passwords.items())]))


@pytest.fixture
def secure_setup(make_settings: Callable[..., Settings], tmp_path: Path,
                 start_service: Callable[[Service], Running]) -> Iterator[tuple[Service, int, dict[str, str]]]:
    """Registry with node passwords → `radio mqtt export` → Mosquitto (anonymous off) → the service, secure."""
    if shutil.which("mosquitto") is None:
        unavailable("the mosquitto binary is not installed")
    port = free_port()
    settings = make_settings(mqtt_secure=True, mqtt_url=f"mqtt://127.0.0.1:{port}")
    service = Service(settings)
    migrate(service.engine)
    load_programme(DEMO, service.factory, settings=settings)
    demo_slots = [slot.id for slot in parse_programme(DEMO).slots]
    passwords: dict[str, str] = {}
    with transaction(service.factory) as session:  # the demo's own slots never fire by the clock here
        session.execute(update(Slot).where(Slot.id.in_(demo_slots)).values(valid_from=dt.date(2099, 1, 1)))
        for node in session.scalars(select(Node.id).order_by(Node.id)):
            passwords[node] = acl.issue_node_password(session, node)
    out = tmp_path / "mosquitto"
    env = {**os.environ, "RADIO_DATA_DIR": str(settings.data_dir), "RADIO_DATABASE_URL": settings.db_url}
    exported = subprocess.run([sys.executable, "-m", "radio.cli", "mqtt", "export", "-o", str(out)], env=env,
                              capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    assert (out / "mosquitto.passwd").exists() and (out / "mosquitto.acl").exists(), exported.stdout
    conf = tmp_path / "secure.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {out / 'mosquitto.passwd'}\n"
                    f"acl_file {out / 'mosquitto.acl'}\npersistence false\nuser root\n")
    broker = Mosquitto(port, conf)
    broker.start()
    try:
        start_service(service)  # logs in as the service account (acl.service_address)
        yield service, port, passwords
    finally:
        broker.stop()


@pytest.mark.slow
@pytest.mark.mosquitto
def test_secure_mode_airs_to_nodes_with_their_own_credentials_and_refuses_forgery(
    secure_setup: tuple[Service, int, dict[str, str]], caplog: pytest.LogCaptureFixture,
) -> None:
    service, port, passwords = secure_setup
    site = service.settings.site_id
    assert service.mqtt is not None and service.mqtt.connected
    assert not Peer("127.0.0.1", port, "ke-la").connect(), "anonymous access must be off"
    with service.factory() as session:
        zones = {node.id: node.zone_id for node in session.scalars(select(Node))}
    fleet = node_fleet(service.settings, port, passwords, zones)
    try:
        def online() -> int:
            with service.factory() as session:
                return int(session.scalar(select(func.count()).select_from(Node).where(Node.online.is_(True))) or 0)

        wait_for(lambda: online() == len(passwords), 30, "every node to log in with its own password")
        assert service.broadcaster is not None
        broadcast_id = service.broadcaster.fire_slot(SHORT_SLOT, utcnow().replace(microsecond=0))
        assert broadcast_id is not None
        row = _wait_settled(service, broadcast_id)
        assert row.status == BroadcastStatus.COMPLETED, [(d.node_id, d.state, d.reason) for d in row.deliveries]
        assert row.deliveries and all(d.state == "finished" for d in row.deliveries)
        victim = row.deliveries[0]
        forger = next(n for n in sorted(passwords) if n != victim.node_id)

        # A witness with the service's rights sees what reaches the service's subscriptions.
        witness = Peer("127.0.0.1", port, "radio-witness", username=acl.SERVICE_USER,
                       password=acl.service_password(service.settings))
        assert witness.connect()
        witness.subscribe(topics.event(site, "+"))
        intruder = Peer("127.0.0.1", port, f"{forger}-tool", username=forger, password=passwords[forger])
        assert intruder.connect()
        try:
            with caplog.at_level(logging.WARNING, logger="radio.logbook.recorder"):
                # 1. On the victim's topic, with the forger's own login: the broker drops it.
                forged = {"v": 1, "node": victim.node_id, "command_id": victim.command_id, "event": "failed",
                          "reason": "giả mạo", "at": "2026-01-01T00:00:00Z"}
                intruder.publish(topics.event(site, victim.node_id), json.dumps(forged).encode())
                # 2. On its own topic, naming the victim: delivered, and the service drops it with a log line.
                intruder.publish(topics.event(site, forger), json.dumps(forged).encode())
                wait_for(lambda: topics.event(site, forger) in witness.topics(), 10, "the forger's own-topic event")
                time.sleep(SETTLE_S)
                assert topics.event(site, victim.node_id) not in witness.topics()
                wait_for(lambda: any(topics.event(site, forger) in r.getMessage() for r in caplog.records), 10,
                         "the service to drop the mismatched event")
            dropped = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
            assert len(dropped) == 1 and f"published on the topic of {forger!r}" in dropped[0], dropped
        finally:
            intruder.close()
            witness.close()
        with service.factory() as session:  # the victim's report stands
            assert session.get_one(Delivery, victim.id).state == "finished"
            assert session.get_one(Delivery, victim.id).reason != "giả mạo"
    finally:
        fleet.stop()
