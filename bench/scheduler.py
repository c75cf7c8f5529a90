"""Benchmark: the scheduler with 10,000 slots — start-up time, and firing jitter while the API is under load.

Run: ``.venv/bin/python bench/scheduler.py`` (``--db sqlite|postgres``, ``--fires 200``, ``--per-second 4``,
``--clients 4``, ``--no-record``). It

* takes a copy of the generated dataset (bench/common.py: 10,000 slots, 5,000 nodes, a year of as-run),
  with every node offline (no fleet here: nothing to resend to);
* starts the service in this process (uvicorn thread, as ``radio serve`` does) on a Mosquitto of its own and
  times the start: the whole ``Service.start()`` and, inside it, the scheduler's downtime scan and its
  first ``sync`` (one APScheduler job armed per enabled slot);
* adds ``--fires`` one-off slots on distinct zones, ``--per-second`` of them on each second starting
  ~20 s later (many zones at 06:00 is what a real programme looks like), and re-syncs;
* loads the API from a second process (``--clients`` closed-loop clients on the node list and the
  as-run log) for the whole firing window — by default on a separate ``RADIO_ROLE=api`` instance on the
  same database at ``--api-nice`` 10, as docs/deploy.md recommends (``--single``: on the scheduling
  instance itself);
* records, for every slot that fires, **jitter** = the instant the runner hands the occurrence to the
  broadcaster − its planned instant; and the claim lag (``fired_at − scheduled_at`` in the database).

Target: jitter p99 ≤ 50 ms. Appends to bench/results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    api_token,
    dataset_db,
    free_port,
    mosquitto,
    mosquitto_version,
    pg_version,
    record,
    stats_ms,
    table,
    wait_for,
    zone_id,
)

TARGET_P99_MS = 50.0


def load_child(base: str, seconds: float, clients: int, headers_json: str) -> None:
    """Child process: API load on the node list and last month's as-run; prints one JSON summary."""
    from bench.api import endpoints, load

    paths = endpoints(dt.date.today())
    headers = json.loads(headers_json)
    out: dict[str, Any] = {}
    threads = []
    for name in ("nodes", "asrun"):
        def run(name: str = name) -> None:
            out[name] = load(base, paths[name], headers, max(1, clients // 2), seconds)
        threads.append(threading.Thread(target=run))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(out), flush=True)


def add_slots(factory: Any, tz: dt.tzinfo, first: dt.datetime, fires: int, per_second: int) -> list[tuple[str, dt.datetime]]:
    """One-off slots ``bench-fire-<i>`` on distinct zones, ``per_second`` on each second from ``first``."""
    from radio.db import transaction
    from radio.models import Slot, SlotItem, SlotTarget

    planned = []
    with transaction(factory) as session:
        for i in range(fires):
            at = first + dt.timedelta(seconds=i // per_second)
            local = at.astimezone(tz)
            sid = f"bench-fire-{i:03d}"
            session.add(Slot(id=sid, name=f"Bench {i}", start_time=local.time().replace(tzinfo=None),
                             dates=[local.date().isoformat()], priority="normal", enabled=True, duration_s=60))
            session.add(SlotItem(slot_id=sid, position=0, kind="bulletin", bulletin_id="b-000"))
            session.add(SlotTarget(slot_id=sid, zone_id=zone_id(i % 100)))
            planned.append((sid, at))
    return planned


def api_instance(url: str, broker: str, tmp: Path, nice: int) -> tuple[str, subprocess.Popen[bytes]]:
    """A `radio serve` process with RADIO_ROLE=api on the same database and broker: it takes the API load.

    On one 2-core machine it shares the cores with the scheduling instance, so it runs at ``nice`` (the
    systemd unit's ``Nice=`` in docs/deploy.md): a heavy report then yields the CPU to a due fire."""
    import httpx

    port = free_port()
    env = {**os.environ, "RADIO_DATABASE_URL": url, "RADIO_MQTT_URL": broker, "RADIO_DATA_DIR": str(tmp / "api"),
           "RADIO_HTTP_PORT": str(port), "RADIO_ROLE": "api", "RADIO_INSTANCE_ID": "bench-api",
           "RADIO_ADMIN_PASSWORD": "bench-mat-khau"}
    proc = subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-m", "radio.cli", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    wait_for(up, 120, "the API instance", 0.2)
    assert proc.poll() is None, "the API instance exited"
    return base, proc


def run(args: argparse.Namespace) -> dict[str, Any]:
    import uvicorn
    from sqlalchemy import select, update

    from radio.broadcast import Broadcaster
    from radio.models import Broadcast, Node, utcnow
    from radio.schedule.runner import SlotRunner
    from radio.service import Service
    from radio.settings import load_settings
    from radio.web.app import create_app

    timings: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                timings.setdefault(name, time.perf_counter() - began)  # the first call: the one at start-up
        return wrapper

    # Time the scheduler's own start-up steps (class-level: the runner is built inside Service.start()).
    SlotRunner.record_downtime_misses = timed("downtime_scan_s", SlotRunner.record_downtime_misses)  # type: ignore[method-assign]
    SlotRunner.sync = timed("first_sync_s", SlotRunner.sync)  # type: ignore[method-assign]
    syncs: list[tuple[dt.datetime, float]] = []  # every sync's start and duration, to set beside late fires
    plain_sync = SlotRunner.sync

    def logged_sync(self: SlotRunner) -> None:
        began, t0 = dt.datetime.now(dt.UTC), time.perf_counter()
        try:
            plain_sync(self)
        finally:
            syncs.append((began, time.perf_counter() - t0))

    SlotRunner.sync = logged_sync  # type: ignore[method-assign]

    with tempfile.TemporaryDirectory(prefix="bench-scheduler-") as tmp_s:
        tmp = Path(tmp_s)
        with dataset_db(args.db, tmp, fresh=args.fresh) as url, mosquitto(tmp) as broker:
            from radio.db import make_engine, session_factory
            engine = make_engine(url)
            with session_factory(engine).begin() as session:
                session.execute(update(Node).values(online=False))
            engine.dispose()
            headers = api_token(url)
            port = free_port()
            settings = load_settings(database_url=url, data_dir=tmp / "data", mqtt_url=broker, http_port=port,
                                     public_base_url=f"http://127.0.0.1:{port}", instance_id="bench-scheduler",
                                     quiet_hours="00:00-00:00", admin_password="bench-mat-khau",
                                     schedule_sync_s=args.sync_s)
            service = Service(settings)
            server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                                   log_level="warning", lifespan="on"))
            began = time.perf_counter()
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            wait_for(lambda: server.started or not thread.is_alive(), 300, "the service to start", 0.05)
            startup_s = time.perf_counter() - began
            ready_at = utcnow()
            assert service.runner is not None and service.broadcaster is not None
            jobs = sum(1 for j in service.runner.scheduler.get_jobs() if j.id.startswith("slot:"))
            print(f"start-up: {startup_s:.1f} s (downtime scan {timings.get('downtime_scan_s', 0):.2f} s, "
                  f"first sync {timings.get('first_sync_s', 0):.2f} s), {jobs:,} slot jobs armed", flush=True)

            # Every occurrence the runner hands over, with its lag.
            lags: dict[tuple[str, dt.datetime], float] = {}
            fire_slot = service.broadcaster.fire_slot

            durations: list[float] = []

            repeats: list[tuple[str, dt.datetime, float]] = []  # hand-overs of an occurrence already handed over

            def spy(slot_id: str, at: dt.datetime) -> int | None:
                lag = (utcnow() - at).total_seconds()
                if (slot_id, at) in lags:
                    repeats.append((slot_id, at, lag))
                else:
                    lags[(slot_id, at)] = lag
                began = time.perf_counter()
                try:
                    return fire_slot(slot_id, at)
                finally:
                    durations.append(time.perf_counter() - began)

            service.broadcaster.fire_slot = spy  # type: ignore[method-assign,assignment]
            Broadcaster  # noqa: B018  (the spy stands in for Broadcaster.fire_slot)

            first = (utcnow() + dt.timedelta(seconds=args.lead_s)).replace(microsecond=0)
            planned = add_slots(service.factory, settings.tz, first, args.fires, args.per_second)
            sync_began = time.perf_counter()
            service.runner.sync()  # what the periodic sync does within RADIO_SCHEDULE_SYNC_S
            sync_s = time.perf_counter() - sync_began
            last = planned[-1][1]
            window = (last - utcnow()).total_seconds() + 10
            api_base, api_proc = f"http://127.0.0.1:{port}", None
            if not args.single:
                api_base, api_proc = api_instance(url, broker, tmp, args.api_nice)
            loader = subprocess.Popen([sys.executable, __file__, "--load-child", api_base,
                                       str(window), str(args.clients), json.dumps(headers)],
                                      stdout=subprocess.PIPE, text=True) if args.clients else None
            print(f"{args.fires} fires from {first:%H:%M:%S} UTC, {args.per_second}/s; API load for {window:.0f} s "
                  f"(re-sync took {sync_s:.2f} s)", flush=True)
            wanted = set(planned)
            wait_for(lambda: wanted <= lags.keys(), window + 120, "every planned slot to fire", 0.5)
            api: dict[str, Any] = {}
            if loader is not None:
                api_out, _ = loader.communicate(timeout=window + 300)
                api = json.loads(api_out.strip().splitlines()[-1])
            time.sleep(2)
            with service.factory() as session:
                claimed = {(b.slot_id, b.scheduled_at): (b.fired_at - b.scheduled_at).total_seconds()
                           for b in session.scalars(select(Broadcast).where(Broadcast.slot_id.like("bench-fire-%")))
                           if b.fired_at}
            if api_proc is not None:
                api_proc.terminate()
                api_proc.wait(60)
            server.should_exit = True
            thread.join(180)  # the service stops (scheduler, outbox, MQTT) before its database is dropped
    ours = [lags[k] for k in planned]
    # Other slots of the programme that fell in the window; occurrences planned before the service was up are
    # catch-ups (aired late on purpose within RADIO_MISFIRE_GRACE_S), not jitter.
    others = [v for k, v in lags.items() if k not in wanted and k[1] >= ready_at]
    catch_ups = sum(1 for k in lags if k not in wanted and k[1] < ready_at)
    result = {
        "db": args.db, "slots": 10_000 + args.fires, "startup_s": round(startup_s, 2),
        "downtime_scan_s": round(timings.get("downtime_scan_s", 0), 2),
        "first_sync_s": round(timings.get("first_sync_s", 0), 2), "slot_jobs_armed": jobs,
        "resync_s": round(sync_s, 2), "fires": len(ours), "per_second": args.per_second,
        "jitter_ms": stats_ms(ours), "claim_lag_ms": stats_ms(list(claimed.values())),
        "fire_duration_ms": stats_ms(durations), "repeat_handovers": len(repeats),
        "other_fires_in_window": len(others), "other_fires_jitter_ms": stats_ms(others), "catch_up_fires": catch_ups,
        "sync_s_setting": args.sync_s,
        "api_on": "scheduling instance" if args.single else f"RADIO_ROLE=api instance, nice {args.api_nice}",
        "api_load": {k: {"rps": v.get("rps"), "latency_ms": v.get("latency_ms"), "errors": v.get("errors")}
                     for k, v in api.items()},
    }
    late = sorted(((v, k[1]) for k, v in lags.items() if k in wanted), reverse=True)[:5]
    result["latest_fires"] = [{"planned": f"{at:%H:%M:%S}", "lag_ms": round(v * 1000, 1)} for v, at in late]
    result["syncs"] = [{"at": f"{at:%H:%M:%S.%f}"[:12], "s": round(d, 2)} for at, d in syncs
                       if at >= planned[0][1] - dt.timedelta(seconds=30)]
    print("latest fires:", result["latest_fires"], "\nsyncs meanwhile:", result["syncs"], flush=True)
    result["met"] = result["jitter_ms"]["p99"] <= TARGET_P99_MS
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--fires", type=int, default=200)
    parser.add_argument("--per-second", type=int, default=4)
    parser.add_argument("--lead-s", type=float, default=20.0, help="first fire this long after the slots are added")
    parser.add_argument("--clients", type=int, default=4, help="API clients meanwhile (0: no API load)")
    parser.add_argument("--sync-s", type=float, default=20.0, help="RADIO_SCHEDULE_SYNC_S (default 20, as shipped)")
    parser.add_argument("--single", action="store_true",
                        help="serve the API load from the scheduling instance itself (no RADIO_ROLE=api instance)")
    parser.add_argument("--api-nice", type=int, default=10, help="niceness of the RADIO_ROLE=api instance")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--load-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_child:
        base, seconds, clients, headers = args.load_child
        load_child(base, float(seconds), int(clients), headers)
        return 0
    import logging

    logging.basicConfig(level=logging.WARNING)
    r = run(args)
    rows = [
        ("start-up (Service.start, 10,000 slots)", f"{r['startup_s']} s",
         f"downtime scan {r['downtime_scan_s']} s, first sync {r['first_sync_s']} s, {r['slot_jobs_armed']:,} jobs"),
        ("re-sync after adding slots", f"{r['resync_s']} s", "every RADIO_SCHEDULE_SYNC_S (20 s)"),
        (f"jitter, {r['fires']} fires ({r['per_second']}/s)", f"p50 {r['jitter_ms']['p50']} ms",
         f"p99 {r['jitter_ms']['p99']} ms, max {r['jitter_ms']['max']} ms — target p99 <= {TARGET_P99_MS:.0f} ms: "
         + ("ok" if r["met"] else "MISS")),
        ("claim lag (fired_at − scheduled_at)", f"p50 {r['claim_lag_ms']['p50']} ms",
         f"p99 {r['claim_lag_ms']['p99']} ms, max {r['claim_lag_ms']['max']} ms"),
        ("one fire's own duration (claim → published)", f"p50 {r['fire_duration_ms']['p50']} ms",
         f"p99 {r['fire_duration_ms']['p99']} ms, max {r['fire_duration_ms']['max']} ms"),
        ("occurrences handed over again (refused by the claim)", str(r["repeat_handovers"]), ""),
        ("other slots fired in the window", str(r["other_fires_in_window"]),
         f"jitter p99 {r['other_fires_jitter_ms']['p99']} ms" if r["other_fires_in_window"] else ""),
    ]
    for name, v in r["api_load"].items():
        lat = v.get("latency_ms") or {}
        rows.append((f"API load meanwhile: {name}", f"{v.get('rps')} req/s",
                     f"p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, errors {v.get('errors')}"))
    print()
    print(table(rows, ["scheduler", "value", "detail"]))
    record("scheduler", r, enabled=not args.no_record, broker=mosquitto_version(),
           postgres=pg_version() if args.db == "postgres" else None)
    sys.stdout.flush()
    os._exit(0)  # fires still running in APScheduler's (non-daemon) pool must not keep the bench alive


if __name__ == "__main__":
    raise SystemExit(main())
