"""APScheduler only triggers: the next occurrence of each slot is computed from our tables.

Each enabled slot has exactly one pending job, ``slot:<id>``, for its next occurrence; when it fires
the broadcaster claims the occurrence (unique key) and the job is re-armed for the one after.
A periodic ``sync`` picks up slots changed by the CLI or another instance directly in the database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import logging
import sys
import threading
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from radio.broadcast import PRIORITY_RANK, Broadcaster, occurrence_key
from radio.db import transaction
from radio.logbook.recorder import settle_due
from radio.models import Alert, Broadcast, BroadcastStatus, Priority, ServiceMark, Slot, utcnow
from radio.schedule.recurrence import SlotRule, next_occurrence, occurrences
from radio.settings import Settings

log = logging.getLogger(__name__)
SETTLE_INTERVAL_S = 2
ALIVE = "scheduler_alive"  # service mark: the last instant a scheduler was known to run
LOOKBACK = dt.timedelta(days=7)
# A fire can take a second or more (audio, database) and many slots share a minute (every zone at 06:00):
# APScheduler's default 10 threads would queue fires behind each other.
FIRE_THREADS = 64
RULE_COLUMNS = (Slot.id, Slot.start_time, Slot.weekdays, Slot.interval_weeks, Slot.dates, Slot.exclude_dates,
                Slot.valid_from, Slot.valid_until, Slot.holidays)  # what SlotRule.from_slot reads
# Occurrences due at the same instant fire in priority order: a fire is put back (at most this long, checking
# every PRIORITY_POLL_S) while a higher-priority one of that instant is not issued yet, so it starts after
# them instead of being cut off. Put back, not waited for: a waiting fire would hold a pool thread the
# higher-priority fire needs.
PRIORITY_WAIT_S = 30.0
PRIORITY_POLL_S = 0.1


def _rank(priority: object) -> int:
    try:
        return PRIORITY_RANK[Priority(str(priority))]
    except ValueError:
        return 0


class _FirePool(ThreadPoolExecutor):  # type: ignore[misc]
    """APScheduler's thread pool, joined only after the scheduler has let go of its locks.

    ``shutdown(wait=True)`` waits for running jobs while holding the job-store lock, so a job that is
    re-arming a slot or syncing (``add_job``/``get_jobs`` take that lock) deadlocks the shutdown.
    """

    def join(self) -> None:
        self._pool.shutdown(wait=True)


class SlotRunner:
    def __init__(self, settings: Settings, factory: sessionmaker[Session], broadcaster: Broadcaster) -> None:
        self.settings = settings
        self.factory = factory
        self.broadcaster = broadcaster
        self._pool = _FirePool(FIRE_THREADS)
        # misfire_grace_time=None: APScheduler runs a late job however late; the broadcaster then records an
        # occurrence later than settings.misfire_grace_s as missed (an alert, never aired late) instead of it
        # vanishing without a trace.
        self.scheduler = BackgroundScheduler(
            timezone=dt.UTC, executors={"default": self._pool},
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        # slot id → (its recurrence columns, their rule, its next unhandled occurrence) as of the last sync:
        # unchanged slots are not recomputed.
        self._next: dict[str, tuple[tuple[Any, ...], SlotRule, dt.datetime]] = {}
        self._armed: dict[str, dt.datetime] = {}  # slot id → the occurrence its job is armed for
        # Occurrences handed to the broadcaster by this process: a sync whose claimed-keys query ran just before
        # the claim committed must not arm them again (the claim would refuse, but it is wasted work).
        self._handed: set[tuple[str, dt.datetime]] = set()
        self._rank: dict[str, int] = {}  # slot id → priority rank (PRIORITY_RANK), as of the last sync
        # Occurrences above normal priority, by instant: those armed here and not fired yet (``_unfired``), and
        # all of them (``_above``: once fired here, or claimed by another instance, lower-priority fires of the
        # instant go on when the database says it is issued). Normal ones are not tracked (nothing ranks below
        # them), so 10,000 slots at 06:00 cost nothing here.
        self._unfired: dict[dt.datetime, set[str]] = {}
        self._above: dict[dt.datetime, set[str]] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        # The scheduler's timing thread competes for the GIL with fires, the recorder and (in role `all`) the
        # API; a 1 ms switch interval instead of 5 ms gets it the interpreter sooner when a slot is due.
        sys.setswitchinterval(0.001)
        self.record_downtime_misses()
        self.scheduler.start()
        self.sync()
        # The armed jobs, the slot cache and everything loaded so far live as long as the process: move them
        # out of the garbage collector's view, so a full collection (which holds the GIL throughout) does not
        # rescan them — with 10,000 slots such a pause delayed fires by ~0.4 s.
        gc.freeze()
        self.scheduler.add_job(self.sync, "interval", seconds=self.settings.schedule_sync_s, id="sync",
                               replace_existing=True)
        self.scheduler.add_job(settle_due, "interval", seconds=SETTLE_INTERVAL_S, id="settle",
                               args=(self.factory, self.settings.broadcast_timeout_s), replace_existing=True)

    def stop(self) -> None:
        # Pause, then let a pass of the timing thread in progress finish (get_jobs waits for its lock): a pass
        # that sees the scheduler already stopped fails to drop a just-fired one-off job (APScheduler 3 race).
        self.scheduler.pause()
        self.scheduler.get_jobs()
        self.scheduler.shutdown(wait=False)
        self._pool.join()  # fires and syncs in flight finish (their add_job calls are then ignored)

    def record_downtime_misses(self) -> int:
        """Occurrences that fell while no scheduler ran (older than the grace period) are recorded as missed.

        They never play late; the as-run log and the alerts show them. Looks back at most LOOKBACK.
        """
        now = utcnow()
        until = now - dt.timedelta(seconds=self.settings.misfire_grace_s)
        with self.factory() as session:
            mark = session.get(ServiceMark, ALIVE)
            since = max(mark.at, now - LOOKBACK) if mark else None
            slots = list(session.scalars(select(Slot).where(Slot.enabled.is_(True))))
        missed = 0
        if since is not None and since < until:
            for slot in slots:
                for at in occurrences(SlotRule.from_slot(slot), since, until, self.settings.tz):
                    missed += self._record_missed(slot, at, since)
        self._mark_alive()
        if missed:
            log.warning("%d lượt phát bị lỡ khi dịch vụ không chạy", missed)
        return missed

    def _record_missed(self, slot: Slot, at: dt.datetime, since: dt.datetime) -> int:
        reason = (f"dịch vụ không chạy từ {since.astimezone(self.settings.tz):%H:%M %d/%m/%Y}; "
                  "lượt phát quá hạn không phát muộn")
        try:
            with transaction(self.factory) as session:
                b = Broadcast(occurrence_key=occurrence_key(slot.id, at), slot_id=slot.id, kind="scheduled",
                              title=slot.name, priority=slot.priority, scheduled_at=at, status=BroadcastStatus.MISSED,
                              reason=reason, completed_at=utcnow())
                session.add(b)
                session.flush()
                local = at.astimezone(self.settings.tz)
                session.add(Alert(kind="missed", message=f"«{slot.name}» lúc {local:%H:%M %d/%m/%Y}: {reason}",
                                  broadcast_id=b.id))
            return 1
        except IntegrityError:  # handled already (aired, or recorded by another instance)
            return 0

    def _mark_alive(self) -> None:
        with transaction(self.factory) as session:
            mark = session.get(ServiceMark, ALIVE)
            if mark is None:
                session.add(ServiceMark(key=ALIVE, at=utcnow()))
            else:
                mark.at = utcnow()

    def sync(self) -> None:
        """Arm one job per enabled slot for its next occurrence not yet handled.

        Cheap when little changed (10,000 slots: well under a second): the recurrence columns are read as
        plain rows and a slot whose row and armed occurrence are unchanged is skipped; armed jobs are tracked
        here, so APScheduler's job-store lock (which its timing thread needs to fire) is only taken to change one.
        """
        self._mark_alive()
        now = utcnow()
        since = now - dt.timedelta(seconds=self.settings.misfire_grace_s)
        wanted: dict[str, dt.datetime] = {}
        known: dict[str, tuple[tuple[Any, ...], SlotRule, dt.datetime]] = {}
        with self.factory() as session:
            # Occurrences already claimed (aired, missed, or taken by another instance), in one query.
            claimed = {occurrence_key(slot_id, at) for slot_id, at in session.execute(
                select(Broadcast.slot_id, Broadcast.scheduled_at)
                .where(Broadcast.slot_id.is_not(None), Broadcast.scheduled_at >= since)) if slot_id}
            ranks: dict[str, int] = {}
            for row in session.execute(select(*RULE_COLUMNS, Slot.priority).where(Slot.enabled.is_(True))):
                raw = tuple(row)
                ranks[row.id] = _rank(row.priority)
                cached = self._next.get(row.id)
                if cached and cached[0] == raw and cached[2] >= since \
                        and occurrence_key(row.id, cached[2]) not in claimed:
                    rule, at = cached[1], cached[2]
                else:
                    try:
                        rule = SlotRule.from_slot(row)  # type: ignore[arg-type]  # a row has the same attributes
                        at = self._next_unhandled(row.id, rule, since, claimed)  # type: ignore[assignment]
                    except (ValueError, OverflowError, TypeError):  # one bad row never stops the others
                        log.exception("slot %s: cannot compute its next occurrence; not armed", row.id)
                        continue
                if at is not None:
                    wanted[row.id] = at
                    known[row.id] = (raw, rule, at)
        self._next = known
        self._rank = ranks
        self._handed = {(slot_id, at) for slot_id, at in set(self._handed) if at >= since}
        for slot_id in set(self._armed) - wanted.keys():
            self._release(slot_id, self._armed.pop(slot_id, None))
            with contextlib.suppress(JobLookupError):  # it may just have run (a one-off's job then goes)
                self.scheduler.remove_job(f"slot:{slot_id}")
        for slot_id, at in wanted.items():
            if self._armed.get(slot_id) != at and (slot_id, at) not in self._handed:
                self._arm(slot_id, at)
        with self._lock:  # occurrences long past: nobody waits for them any more
            for pending in (self._unfired, self._above):
                for when in [when for when in pending if when < since]:
                    del pending[when]

    def _next_unhandled(self, slot_id: str, rule: SlotRule, since: dt.datetime, claimed: set[str]) -> dt.datetime | None:
        at = next_occurrence(rule, since - dt.timedelta(microseconds=1), self.settings.tz)
        # Skip occurrences already claimed (e.g. aired just before a restart).
        for _ in range(100):
            if at is None or occurrence_key(slot_id, at) not in claimed:
                return at
            at = next_occurrence(rule, at, self.settings.tz)
        return at

    def _release(self, slot_id: str, at: dt.datetime | None, *, fired: bool = False) -> None:
        """The occurrence has fired here, or will not (un-armed, moved): lower-priority fires of its instant
        stop waiting for it — once fired, only while the database says it is still being prepared."""
        if at is None:
            return
        with self._lock:
            _discard(self._unfired, at, slot_id)
            if not fired and at > utcnow():  # moved before its time; once due, another instance may have it
                _discard(self._above, at, slot_id)

    def _arm(self, slot_id: str, at: dt.datetime) -> None:
        previous = self._armed.get(slot_id)
        if previous is not None and previous != at and (slot_id, previous) not in self._handed:
            self._release(slot_id, previous)
        self._armed[slot_id] = at
        if self._rank.get(slot_id, 0) > 0:
            with self._lock:
                self._unfired.setdefault(at, set()).add(slot_id)
                self._above.setdefault(at, set()).add(slot_id)
        self.scheduler.add_job(self._fire, DateTrigger(run_date=at), args=(slot_id, at), id=f"slot:{slot_id}",
                               replace_existing=True)
        log.debug("slot %s armed for %s", slot_id, at.isoformat())

    def _higher_pending(self, slot_id: str, at: dt.datetime) -> bool:
        """Is a higher-priority occurrence of the same instant not issued yet (emergency > priority > normal)?
        Issued after it, this one starts when it ends (Broadcaster._start_after_higher_priority)."""
        rank = self._rank.get(slot_id, 0)
        with self._lock:
            unfired = [o for o in self._unfired.get(at, ()) if o != slot_id and self._rank.get(o, 0) > rank]
            above = [o for o in self._above.get(at, ()) if o != slot_id and self._rank.get(o, 0) > rank]
        if unfired:
            return True
        if not above:
            return False
        with self.factory() as session:  # fired here or by another instance: still being prepared?
            return session.scalar(select(Broadcast.id).where(
                Broadcast.occurrence_key.in_([occurrence_key(o, at) for o in above]),
                Broadcast.status == BroadcastStatus.PREPARING).limit(1)) is not None

    def _fire(self, slot_id: str, at: dt.datetime, wait_until: dt.datetime | None = None) -> None:
        self._handed.add((slot_id, at))
        if self._higher_pending(slot_id, at):
            now = utcnow()
            wait_until = wait_until or now + dt.timedelta(seconds=min(PRIORITY_WAIT_S, self.settings.misfire_grace_s))
            if now < wait_until:
                self.scheduler.add_job(self._fire, DateTrigger(run_date=now + dt.timedelta(seconds=PRIORITY_POLL_S)),
                                       args=(slot_id, at, wait_until), id=f"slot:{slot_id}", replace_existing=True)
                return
            log.warning("slot %s: a higher-priority occurrence at %s is still not issued; firing anyway",
                        slot_id, at.isoformat())
        try:
            self.broadcaster.fire_slot(slot_id, at)
        finally:
            self._release(slot_id, at, fired=True)
            with self.factory() as session:
                slot = session.get(Slot, slot_id)
                rule = SlotRule.from_slot(slot) if slot else None
            nxt = next_occurrence(rule, at, self.settings.tz) if rule else None
            if rule is not None and nxt is not None:
                self._arm(slot_id, nxt)


def _discard(index: dict[dt.datetime, set[str]], at: dt.datetime, slot_id: str) -> None:
    members = index.get(at)
    if members is not None:
        members.discard(slot_id)
        if not members:
            del index[at]
