"""The running service: database, broker connection, recorder, scheduler and (for demos) simulated nodes.

Started and stopped by the web app's lifespan; every component is stopped in reverse order.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from radio.auth import add_user
from radio.broadcast import Broadcaster, Plan
from radio.db import make_engine, migrate, session_factory
from radio.dispatch import acl, topics
from radio.dispatch.broker import EmbeddedBroker
from radio.dispatch.clock import ClockResponder
from radio.dispatch.mqtt import BrokerAddress, MqttClient
from radio.dispatch.outbox import Outbox
from radio.logbook.recorder import Recorder, flag_silent
from radio.models import Bulletin, BulletinStatus, Node, Priority, Role, User, utcnow
from radio.node.agent import NodeConfig
from radio.node.simulator import Fleet
from radio.schedule.loader import load_programme
from radio.schedule.runner import SlotRunner
from radio.settings import Settings

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings, *, programme: Path | None = None, simulate: bool = False,
                 demo: bool = False) -> None:
        self.settings = settings
        self.programme = programme
        self.simulate = simulate
        self.demo = demo
        self.engine: Engine = make_engine(settings.db_url)
        self.factory: sessionmaker[Session] = session_factory(self.engine)
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttClient | None = None
        self.recorder = Recorder(self.factory, settings.broadcast_timeout_s)
        self.clock = ClockResponder(settings.site_id)
        self.outbox: Outbox | None = None
        self.broadcaster: Broadcaster | None = None
        self.runner: SlotRunner | None = None
        self.fleet: Fleet | None = None
        self._stack = ExitStack()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise

    def _start(self) -> None:
        s = self.settings
        s.audio_dir.mkdir(parents=True, exist_ok=True)
        migrate(self.engine)
        self._stack.callback(self.engine.dispose)
        self._first_admin()
        if self.programme is not None:
            report = load_programme(self.programme, self.factory, settings=self.settings, actor="system",
                                    timezone=self.settings.timezone)
            log.info("Đã nạp chương trình %s: %s", self.programme, report)
        if s.mqtt_url:
            address = BrokerAddress.parse(s.mqtt_url)
            if s.mqtt_secure:
                address = acl.service_address(address, s)
        else:
            self.broker = EmbeddedBroker(
                s.embedded_mqtt_host, s.embedded_mqtt_port, secure=s.mqtt_secure,
                accounts=acl.RegistryAccounts(self.factory, s) if s.mqtt_secure else None,
                service_password=acl.service_password(s) if s.mqtt_secure else None)
            self.broker.start()
            self._stack.callback(self.broker.stop)
            address = self.broker.service_address()
        if s.role == "api":
            # Publishes what its API airs (emergencies, "air now"); the `all` instances record, resend and fire.
            self.mqtt = MqttClient(address, f"radio-api-{s.site_id}-{s.instance_id}")
            self.mqtt.connect(s.mqtt_connect_timeout_s)
            self._stack.callback(self.mqtt.close)
            self.broadcaster = Broadcaster(s, self.factory, self.mqtt)
        else:
            self._start_scheduling(address)
        if self.simulate:
            self._start_fleet(address)
        if self.demo and self.runner is not None:
            at = utcnow() + dt.timedelta(seconds=s.demo_delay_s)
            self.runner.scheduler.add_job(self.air_demo, "date", run_date=at, id="demo", replace_existing=True)
            log.info("Bản tin trình diễn sẽ phát lúc %s", at.astimezone(s.tz).strftime("%H:%M:%S"))

    def stop(self) -> None:
        self._stack.close()

    def _start_scheduling(self, address: BrokerAddress) -> None:
        """Recorder, outbox worker, clock answers and the slot runner: what only `all` instances run."""
        s = self.settings
        self.recorder.start()
        self._stack.callback(self.recorder.stop)
        self.mqtt = MqttClient(address, f"radio-service-{s.site_id}-{s.instance_id}",
                               on_message=self.clock.wrap(self.recorder.submit),
                               subscriptions=topics.service_subscriptions(s.site_id))
        self.outbox = self._make_outbox(self.mqtt)  # before connecting: the first connect resends what is open
        self.mqtt.connect(s.mqtt_connect_timeout_s)
        self._stack.callback(self.mqtt.close)
        self.outbox.start()
        self._stack.callback(self.outbox.stop)
        self.broadcaster = Broadcaster(s, self.factory, self.mqtt)
        self.runner = SlotRunner(s, self.factory, self.broadcaster)
        self.runner.start()
        self._stack.callback(self.runner.stop)

    def _first_admin(self) -> None:
        """With no users yet, create 'admin' (password from settings, else generated and shown once)."""
        with self.factory() as session, session.begin():
            if session.scalar(select(func.count()).select_from(User)):
                return
            password = self.settings.admin_password or secrets.token_urlsafe(12)
            add_user(session, username="admin", password=password, role=Role.ADMIN, full_name="Quản trị",
                     actor="system")
        if not self.settings.admin_password:
            path = self.settings.data_dir / "admin-password.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others, not even briefly
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            path.chmod(0o600)
            # The password goes to the console once and to the 0600 file, never through the logger: log files
            # and log shippers keep what they are given for a long time.
            print(f"Tài khoản quản trị đầu tiên: admin / {password} (cũng lưu ở {path}; "
                  "đổi bằng `radio user passwd admin`)", file=sys.stdout, flush=True)
            log.warning("Đã tạo tài khoản quản trị đầu tiên 'admin'; mật khẩu ở %s (đổi bằng `radio user passwd admin`)",
                        path)

    def _make_outbox(self, mqtt: MqttClient) -> Outbox:
        """Clock answers and the outbox ride on the service's MQTT client; the recorder tells the outbox who is back."""
        s = self.settings
        self.clock.publish = lambda topic, payload: mqtt.publish(topic, payload, qos=0)
        outbox = Outbox(self.factory, mqtt, site=s.site_id, resend_s=float(getattr(s, "outbox_resend_s", 5.0)),
                        tick_s=float(getattr(s, "outbox_tick_s", 1.0)), settle_timeout_s=s.broadcast_timeout_s,
                        housekeeping=[lambda: flag_silent(self.factory, float(getattr(s, "node_silent_after_s", 90.0)))],
                        backlog=self.recorder.queue.qsize)  # no resends while node answers wait to be recorded
        mqtt.add_on_connect(outbox.on_connect)
        self.recorder.on_node_online = outbox.node_online
        return outbox

    def air_demo(self) -> int | None:
        """Air the shortest approved bulletin on the whole ward, so a newcomer sees the path work in seconds."""
        assert self.broadcaster is not None
        with self.factory() as session:
            bulletin = session.scalars(
                select(Bulletin).where(Bulletin.status == BulletinStatus.APPROVED, Bulletin.text.is_not(None))
                .order_by(func.length(Bulletin.text), Bulletin.id)
            ).first()
        if bulletin is None:
            log.warning("no approved bulletin to demonstrate")
            return None
        now = utcnow()
        return self.broadcaster.air(Plan.of_bulletins(
            [bulletin], occurrence_key=f"demo:{now:%Y%m%dT%H%M%S.%f}", kind="demo",
            title=f"Trình diễn: {bulletin.title}", priority=Priority.NORMAL, scheduled_at=now,
        ))

    def _start_fleet(self, address: BrokerAddress) -> None:
        """One simulated node per registered loudspeaker cluster, on its own event loop thread."""
        s = self.settings
        with self.factory() as session:
            nodes = list(session.scalars(select(Node).order_by(Node.id)))
        configs = [NodeConfig(node_id=n.id, zone_id=n.zone_id, site=s.site_id, broker=address,
                              cache_dir=s.data_dir / "node-cache" / n.id) for n in nodes]
        self.fleet = Fleet(configs)
        loop = asyncio.new_event_loop()
        task: asyncio.Future[None] = asyncio.Future(loop=loop)

        def run() -> None:
            asyncio.set_event_loop(loop)
            nonlocal task
            task = loop.create_task(self.fleet.run())  # type: ignore[union-attr]
            try:
                loop.run_until_complete(task)
            except asyncio.CancelledError:
                pass
            finally:
                loop.close()

        thread = threading.Thread(target=run, name="fleet", daemon=True)
        thread.start()

        def stop() -> None:
            loop.call_soon_threadsafe(task.cancel)
            thread.join(timeout=10)

        self._stack.callback(stop)
        log.info("Đã khởi động %d cụm loa mô phỏng", len(configs))
