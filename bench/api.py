"""Benchmark: requests per second and latency of the busiest reads, on SQLite and on PostgreSQL.

Run: ``.venv/bin/python bench/api.py`` (``--db sqlite postgres``, ``--seconds 15``, ``--clients 4``,
``--profile``, ``--fresh``, ``--no-record``, ``--env KEY=VALUE …``). For each database it

* takes a copy of the generated dataset (bench/common.py: 10,000 slots, 5,000 nodes, a year of as-run:
  9,125 broadcasts and 2.26 M deliveries; generated once a day, then cloned in seconds);
* starts ``radio serve`` in its own process (one uvicorn worker, as shipped) on a Mosquitto of its own;
* for each endpoint runs ``--clients`` closed-loop HTTP clients (threads in this process, loopback only)
  for ``--seconds`` and reports requests/s and the latency p50/p99/max, with errors counted:

  - ``today``  — today's programme: ``GET /api/v1/occurrences?days=1``
  - ``nodes``  — the node list: ``GET /api/v1/nodes``
  - ``asrun``  — the as-run log for last month: ``GET /api/v1/asrun?from=…&to=…`` (first page of 50)
  - ``asrun-summary`` — the same page without the per-cluster lists: ``…&deliveries=false``
  - ``metrics`` — a Prometheus scrape: ``GET /metrics`` (one client), when the app serves it.

``--profile`` also runs the work behind each read once in this process under cProfile and prints the top entries.
No latency target is set by the issue; the numbers feed docs/deploy.md's arithmetic.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import pstats
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
    stats_ms,
    table,
)


def endpoints(today: dt.date) -> dict[str, str]:
    last_month_end = today.replace(day=1) - dt.timedelta(days=1)
    first = last_month_end.replace(day=1)
    asrun = f"/api/v1/asrun?from={first.isoformat()}&to={last_month_end.isoformat()}"
    return {"today": "/api/v1/occurrences?days=1", "nodes": "/api/v1/nodes", "asrun": asrun,
            "asrun-summary": f"{asrun}&deliveries=false", "metrics": "/metrics"}


def load(base: str, path: str, headers: dict[str, str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``seconds``: requests/s, latency, errors, response size."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    sizes: list[int] = []
    lock = threading.Lock()
    stop = 0.0

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            while time.monotonic() < stop:
                began = time.perf_counter()
                try:
                    r = http.get(path)
                    took = time.perf_counter() - began
                    with lock:
                        if r.status_code == 200:
                            latencies.append(took)
                            sizes.append(len(r.content))
                        else:
                            errors.append(f"{r.status_code}")
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(type(exc).__name__)

    with httpx.Client(base_url=base, headers=headers, timeout=120) as warm:  # caches, connections, JIT-less warm-up
        first = warm.get(path)
        if first.status_code == 404:
            return {"skipped": "404"}
        first.raise_for_status()
    began = time.monotonic()
    stop = began + seconds
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies),
            "rps": round(len(latencies) / elapsed, 2), "latency_ms": stats_ms(latencies), "errors": len(errors),
            "error_kinds": sorted(set(errors))[:5], "bytes": sizes[0] if sizes else 0}


def profile(db_url: str) -> dict[str, str]:
    """The work behind each read, once, in this process under cProfile (top 20 by own time).

    The HTTP layer is left out on purpose: uvicorn runs sync endpoints in worker threads, which cProfile
    does not follow; the query functions are where the time goes.
    """
    from radio.db import make_engine, session_factory
    from radio.logbook import asrun
    from radio.models import utcnow
    from radio.settings import load_settings
    from radio.web import queries
    from radio.web.api import list_nodes
    from radio.web.audit_api import json_response
    from radio.web.metrics import DatabaseCollector

    engine = make_engine(db_url)
    factory = session_factory(engine)
    tz = load_settings().tz
    today = dt.date.today()
    last_month_end = today.replace(day=1) - dt.timedelta(days=1)
    period = asrun.Period.parse(last_month_end.replace(day=1), last_month_end, tz)

    class _Service:  # what DatabaseCollector reads
        pass

    svc = _Service()
    svc.factory = factory  # type: ignore[attr-defined]
    work = {
        "today": lambda s: queries.upcoming(s, tz, utcnow(), 1),
        "nodes": lambda s: [n.model_dump(mode="json") for n in list_nodes(s)],
        "asrun": lambda s: json_response(asrun.query(s, period=period)),
        "metrics": lambda s: list(DatabaseCollector(svc)._database()),  # type: ignore[arg-type]
    }
    out: dict[str, str] = {}
    for name, fn in work.items():
        with factory() as session:
            fn(session)  # warm
        prof = cProfile.Profile()
        began = time.perf_counter()
        with factory() as session:
            prof.enable()
            fn(session)
            prof.disable()
        took = time.perf_counter() - began
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
        out[name] = f"{took:.3f} s under the profiler\n" + buf.getvalue()
    engine.dispose()
    return out


def run_db(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    from bench.common import service_process

    paths = endpoints(dt.date.today())
    with tempfile.TemporaryDirectory(prefix=f"bench-api-{kind}-") as tmp_s:
        tmp = Path(tmp_s)
        with dataset_db(kind, tmp, fresh=args.fresh) as url, mosquitto(tmp) as broker:
            headers = api_token(url)
            result: dict[str, Any] = {"db": kind, "env": args.env, "endpoints": {}}
            extra_env = dict(item.split("=", 1) for item in args.env)
            with service_process(url, tmp / "data", broker, instance=f"bench-api-{kind}",
                                 log_file=tmp / "service.log", **extra_env) as (_proc, base):
                for name, path in paths.items():
                    clients = 1 if name == "metrics" else args.clients
                    r = load(base, path, headers, clients, args.seconds)
                    r["path"] = path
                    result["endpoints"][name] = r
                    if "skipped" not in r:
                        lat = r["latency_ms"]
                        print(f"  {kind:8s} {name:8s} {r['rps']:8.2f} req/s  p50 {lat['p50']:8.1f} ms  "
                              f"p99 {lat['p99']:8.1f} ms  errors {r['errors']}", flush=True)
            if args.profile:
                result["profile"] = profile(url)
                for name, text in result["profile"].items():
                    print(f"--- profile {kind} {name}\n{text}")
            return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--fresh", action="store_true", help="regenerate the dataset instead of the cached copy")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra environment for the service, e.g. RADIO_ROLE=api (the API without the scheduler)")
    args = parser.parse_args()
    runs = [run_db(kind, args) for kind in args.db]
    rows = []
    for run in runs:
        for name, r in run["endpoints"].items():
            if "skipped" in r:
                continue
            lat = r["latency_ms"]
            rows.append((run["db"], name, r["path"].split("?")[0], r["clients"], f"{r['rps']:.1f}", lat["p50"],
                         lat["p99"], lat["max"], r["errors"], f"{r['bytes'] / 1024:.0f} KiB"))
    print()
    print(table(rows, ["db", "read", "path", "clients", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "size"]))
    for run in runs:
        run.pop("profile", None)
    record("api", {"dataset": {"slots": 10_000, "nodes": 5_000, "asrun_broadcasts": 9_125,
                               "asrun_deliveries": 2_263_000}, "runs": runs},
           enabled=not args.no_record, broker=mosquitto_version(),
           postgres=pg_version() if "postgres" in args.db else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
