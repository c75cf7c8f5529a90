"""Benchmark: resident memory of the service with 10,000 slots and 5,000 connected nodes.

Run: ``.venv/bin/python bench/memory.py`` (``--db sqlite|postgres``, ``--nodes 5000``, ``--no-record``). It

* takes a copy of the generated dataset (bench/common.py: 10,000 slots, 5,000 nodes, a year of as-run)
  with every node offline, and a Mosquitto of its own (the queue limits of docs/deploy.md);
* starts ``radio serve`` in its own process and samples its RSS (``psutil``, every 0.2 s): after start-up
  (every slot armed), then while ``radio simulate`` connects ``--nodes`` nodes (one MQTT connection each,
  in a third process) until the database says every one is online, then for ``--hold-s`` seconds with
  them connected (heartbeats and clock syncs flowing), then after a few API reads (node list, as-run);
* reports idle / connected / peak RSS of the service, and the fleet's and Mosquitto's for the record.

Target: service RSS ≤ 300 MB. Appends to bench/results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
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
    mosquitto,
    mosquitto_version,
    pg_version,
    record,
    service_process,
    table,
    wait_for,
)

TARGET_MB = 300.0


class Sampler:
    """RSS of one process every ``interval`` s, in MiB, in a thread; ``mark`` names phases."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, float, str]] = []
        self.phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), self.proc.memory_info().rss / 2**20, self.phase))
            except Exception:  # the process ended
                return
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def now(self) -> float:
        return float(self.proc.memory_info().rss / 2**20)

    def peak(self, phase: str | None = None) -> float:
        values = [m for _, m, p in self.samples if phase is None or p == phase]
        return round(max(values), 1) if values else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import psutil
    from sqlalchemy import func, select, update

    from radio.db import make_engine, session_factory
    from radio.models import Node

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_s:
        tmp = Path(tmp_s)
        with dataset_db(args.db, tmp, fresh=args.fresh) as url, mosquitto(tmp) as broker:
            engine = make_engine(url)
            factory = session_factory(engine)
            with factory.begin() as session:
                session.execute(update(Node).values(online=False))
            headers = api_token(url)
            broker_proc = next(p for p in psutil.process_iter(["name", "cmdline"])
                               if p.info["name"] == "mosquitto" and str(tmp) in " ".join(p.info["cmdline"] or []))
            extra_env = dict(item.split("=", 1) for item in args.env)
            with service_process(url, tmp / "data", broker, instance="bench-memory",
                                 log_file=tmp / "service.log", **extra_env) as (proc, base):
                sampler = Sampler(proc.pid).start()
                time.sleep(3)
                idle = sampler.now()
                sampler.phase = "connecting"
                env = {**os.environ, "RADIO_DATABASE_URL": url, "RADIO_DATA_DIR": str(tmp / "fleet")}
                fleet = subprocess.Popen([sys.executable, "-m", "radio.cli", "simulate", "--broker", broker,
                                          "--nodes", str(args.nodes), "--summary", "0"], env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

                def online() -> int:
                    with factory() as s:
                        return int(s.scalar(select(func.count()).select_from(Node).where(Node.online.is_(True))) or 0)

                began = time.monotonic()
                try:
                    wait_for(lambda: online() >= args.nodes, 300, f"{args.nodes} nodes online", 1.0)
                    connect_s = time.monotonic() - began
                    sampler.phase = "connected"
                    time.sleep(args.hold_s)
                    connected = sampler.now()
                    sampler.phase = "reads"
                    today = dt.date.today()
                    end = today.replace(day=1) - dt.timedelta(days=1)
                    reads: dict[str, object] = {}
                    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
                        for path in ("/api/v1/nodes", "/api/v1/occurrences?days=1",
                                     f"/api/v1/asrun?from={end.replace(day=1)}&to={end}", "/metrics"):
                            try:
                                reads[path.split("?")[0]] = http.get(path).status_code
                            except httpx.HTTPError as exc:
                                reads[path.split("?")[0]] = f"{type(exc).__name__}: {exc}"
                    time.sleep(2)
                    after_reads = sampler.now()
                    fleet_rss = psutil.Process(fleet.pid).memory_info().rss / 2**20
                    broker_rss = broker_proc.memory_info().rss / 2**20
                    nodes_online = online()
                    service_alive = proc.poll() is None
                finally:
                    fleet.terminate()
                    try:
                        fleet.wait(60)
                    except subprocess.TimeoutExpired:
                        fleet.kill()
                        fleet.wait(10)
                    sampler.stop()
            engine.dispose()
            shutil.copyfile(tmp / "service.log", Path(tempfile.gettempdir()) / "bench-memory-service.log")
    peak = sampler.peak()
    return {"db": args.db, "env": args.env, "slots": 10_000, "nodes": args.nodes, "nodes_online": nodes_online,
            "connect_s": round(connect_s, 1), "idle_mib": round(idle, 1),
            "connecting_peak_mib": sampler.peak("connecting"), "connected_mib": round(connected, 1),
            "after_reads_mib": round(after_reads, 1), "peak_mib": peak, "fleet_mib": round(fleet_rss, 1),
            "mosquitto_mib": round(broker_rss, 1), "target_mb": TARGET_MB, "reads": reads,
            "service_alive_after_reads": service_alive,
            "met": peak * 2**20 / 1e6 <= TARGET_MB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--hold-s", type=float, default=30.0, help="seconds with every node connected")
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra environment for the service, e.g. MALLOC_ARENA_MAX=2 (as the systemd unit sets)")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    r = run(args)
    rows = [
        ("service after start-up (10,000 slots armed)", f"{r['idle_mib']} MiB", ""),
        (f"service while {r['nodes']:,} nodes connect", f"{r['connecting_peak_mib']} MiB peak",
         f"all online in {r['connect_s']} s"),
        (f"service with {r['nodes_online']:,} nodes connected", f"{r['connected_mib']} MiB",
         f"after {args.hold_s:g} s of heartbeats and clock syncs"),
        ("service after the busiest reads", f"{r['after_reads_mib']} MiB", "nodes, today, as-run month, /metrics"),
        ("service peak", f"{r['peak_mib']} MiB",
         f"target <= {TARGET_MB:.0f} MB: {'ok' if r['met'] else 'MISS'}"),
        ("fleet process (simulated nodes)", f"{r['fleet_mib']} MiB", "not part of the service"),
        ("mosquitto", f"{r['mosquitto_mib']} MiB", f"{r['nodes']:,} connections"),
    ]
    print(table(rows, ["resident memory", "RSS", "note"]))
    print(f"reads: {r['reads']}; service alive after them: {r['service_alive_after_reads']} "
          f"(its log: {Path(tempfile.gettempdir()) / 'bench-memory-service.log'})")
    record("memory", r, enabled=not args.no_record, broker=mosquitto_version(),
           postgres=pg_version() if args.db == "postgres" else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
