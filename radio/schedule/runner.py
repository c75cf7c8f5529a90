"""APScheduler only triggers: the next occurrence of each slot is computed from our tables.

Each enabled slot has exactly one pending job, ``slot:<id>``, for its next occurrence; when it fires
the broadcaster claims the occurrence (unique key) and the job is re-armed for the one after.
A periodic ``sync`` picks up slots changed by the CLI or another instance directly in the database.
"""

from __future__ import annotations

import datetime as dt
import logging

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radio.broadcast import Broadcaster, occurrence_key
from radio.logbook.recorder import settle_due
from radio.models import Broadcast, Slot, utcnow
from radio.schedule.recurrence import SlotRule, next_occurrence
from radio.settings import Settings

log = logging.getLogger(__name__)
SETTLE_INTERVAL_S = 2


class SlotRunner:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], broadcaster: Broadcaster) -> None:
        self.settings = settings
        self.factory = factory
        self.broadcaster = broadcaster
        self.scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            job_defaults={"misfire_grace_time": settings.misfire_grace_s, "coalesce": True, "max_instances": 1},
        )

    def start(self) -> None:
        self.scheduler.start()
        self.sync()
        self.scheduler.add_job(self.sync, "interval", seconds=self.settings.schedule_sync_s, id="sync",
                               replace_existing=True)
        self.scheduler.add_job(settle_due, "interval", seconds=SETTLE_INTERVAL_S, id="settle",
                               args=(self.factory, self.settings.broadcast_timeout_s), replace_existing=True)

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)

    def sync(self) -> None:
        """Arm one job per enabled slot for its next occurrence not yet handled."""
        now = utcnow()
        since = now - dt.timedelta(seconds=self.settings.misfire_grace_s)
        wanted: dict[str, dt.datetime] = {}
        with self.factory() as session:
            for slot in session.scalars(select(Slot).where(Slot.enabled.is_(True))):
                at = self._next_unhandled(session, slot, since)
                if at is not None:
                    wanted[slot.id] = at
        for job in self.scheduler.get_jobs():
            if job.id.startswith("slot:") and job.id[5:] not in wanted:
                job.remove()
        for slot_id, at in wanted.items():
            job = self.scheduler.get_job(f"slot:{slot_id}")
            if job is None or job.args[1] != at:
                self._arm(slot_id, at)

    def _next_unhandled(self, session: Session, slot: Slot, since: dt.datetime) -> dt.datetime | None:
        rule = SlotRule.from_slot(slot)
        at = next_occurrence(rule, since - dt.timedelta(microseconds=1), self.settings.tz)
        # Skip occurrences already claimed (e.g. aired just before a restart).
        for _ in range(100):
            if at is None or session.scalar(
                select(Broadcast.id).where(Broadcast.occurrence_key == occurrence_key(slot.id, at))
            ) is None:
                return at
            at = next_occurrence(rule, at, self.settings.tz)
        return at

    def _arm(self, slot_id: str, at: dt.datetime) -> None:
        self.scheduler.add_job(self._fire, DateTrigger(run_date=at), args=(slot_id, at), id=f"slot:{slot_id}",
                               replace_existing=True)
        log.debug("slot %s armed for %s", slot_id, at.isoformat())

    def _fire(self, slot_id: str, at: dt.datetime) -> None:
        try:
            self.broadcaster.fire_slot(slot_id, at)
        finally:
            with self.factory() as session:
                slot = session.get(Slot, slot_id)
                nxt = next_occurrence(SlotRule.from_slot(slot), at, self.settings.tz) if slot else None
            if nxt is not None:
                self._arm(slot_id, nxt)
