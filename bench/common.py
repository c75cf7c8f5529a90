"""Shared by the benchmarks: machine info, results.json, statistics, brokers, databases and a large dataset.

The dataset (:func:`generate`) is what a big deployment holds, written with bulk inserts (COPY on
PostgreSQL, executemany on SQLite) in well under a minute:

* 100 zones × 50 nodes = **5,000 nodes**;
* **10,000 slots**: 30 % every day, 50 % on one to three weekdays, 20 % one-off dates, 06:00–20:59 local;
  each plays one of 100 approved bulletins on one zone (5 % on the whole ward);
* **a year of as-run rows** (``asrun_days`` back from today): per day 24 zone broadcasts (50 deliveries
  each) and one whole-ward broadcast (5,000 deliveries) — 9,125 broadcasts, 2.26 M deliveries, one
  command per broadcast. 97 % finished, 2 % missed (offline), 1 % failed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results.json"
PG_ADMIN_URL = os.environ.get("RADIO_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MOSQUITTO_CONF = "allow_anonymous true\npersistence false\nmax_queued_messages 100000\nmax_inflight_messages 0\n"
UTC = dt.UTC


# machine and results ------------------------------------------------------------------------------------
def machine(**extra: object) -> dict[str, object]:
    """What the numbers were measured on."""
    import psutil

    info: dict[str, object] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                               "python": platform.python_version(),
                               "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                               "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    info.update(extra)
    return info


def record(bench: str, data: dict[str, Any], *, enabled: bool = True, **machine_extra: object) -> dict[str, Any]:
    """Append ``{"bench": ..., "utc": ..., "machine": ..., **data}`` to bench/results.json."""
    rec: dict[str, Any] = {"bench": bench, "utc": dt.datetime.now(UTC).isoformat(timespec="seconds"),
                           "machine": machine(**machine_extra), **data}
    if enabled:
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
        results.append(rec)
        RESULTS.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return rec


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def stats_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p99/max in milliseconds of values in seconds."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    return {"p50": round(pct(values, 50) * 1000, 2), "p99": round(pct(values, 99) * 1000, 2),
            "max": round(max(values) * 1000, 2), "n": len(values)}


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain-text table, columns padded."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# processes, ports, brokers ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


@contextmanager
def mosquitto(tmp: Path) -> Iterator[str]:
    """A Mosquitto of our own on a free loopback port, with the queue limits of docs/deploy.md."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\n" + MOSQUITTO_CONF)
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening(port), 10, "mosquitto")
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def mosquitto_version() -> str:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    out = subprocess.run([exe, "-h"], capture_output=True, text=True).stdout.splitlines()
    return out[0] if out else "mosquitto"


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh database URL: ``sqlite`` (a file in ``tmp``) or ``postgres`` (a new database, dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'radio.db'}"
        return
    import sqlalchemy as sa

    name = f"radio_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def pg_version() -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    finally:
        engine.dispose()


def rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


# the dataset -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    zones: int = 100
    nodes_per_zone: int = 50
    slots: int = 10_000
    bulletins: int = 100
    asrun_days: int = 365
    zone_broadcasts_per_day: int = 24
    ward_broadcasts_per_day: int = 1
    nodes_online: bool = True
    seed: int = 9

    @property
    def nodes(self) -> int:
        return self.zones * self.nodes_per_zone


def zone_id(i: int) -> str:
    return f"z-{i:03d}"


def node_id(i: int) -> str:
    return f"n-{i:05d}"


BULLETIN_TEXT = ("UBND phường thông báo: từ ngày 30/9/2024, các hộ gia đình trên địa bàn phường thực hiện phân loại "
                 "rác thải sinh hoạt tại nguồn. Xe thu gom đi qua các tổ dân phố vào lúc 17 giờ hằng ngày; đề nghị "
                 "bà con để rác đúng giờ, đúng nơi quy định.")


def generate(url: str, data: Dataset = Dataset(), *, log: Callable[[str], None] = print) -> dict[str, int | float]:
    """Migrate ``url`` and fill it with ``data``; returns row counts and the seconds it took."""
    from sqlalchemy import text

    from radio.db import make_engine, migrate

    began = time.perf_counter()
    engine = make_engine(url)
    migrate(engine)
    rng = random.Random(data.seed)
    now = dt.datetime.now(UTC).replace(microsecond=0)
    naive_now = now.replace(tzinfo=None)
    rows: dict[str, list[tuple[Any, ...]]] = {}
    cols: dict[str, tuple[str, ...]] = {}

    def put(table: str, columns: tuple[str, ...], values: list[tuple[Any, ...]]) -> None:
        cols[table], rows[table] = columns, values

    put("zones", ("id", "name"), [(zone_id(z), f"Tổ dân phố {z + 1}") for z in range(data.zones)])
    put("nodes", ("id", "zone_id", "name", "online", "session", "last_seen_at"),
        [(node_id(i), zone_id(i // data.nodes_per_zone), f"Cụm loa {i + 1}", data.nodes_online, 1, naive_now)
         for i in range(data.nodes)])
    put("segments", ("id", "name"), [(f"seg-{i}", f"Chuyên mục {i}") for i in range(10)])
    put("bulletins", ("id", "segment_id", "title", "text", "status", "updated_at", "approved_by", "approved_at"),
        [(f"b-{i:03d}", f"seg-{i % 10}", f"Bản tin {i}", f"{BULLETIN_TEXT} Số {i}.", "approved", naive_now, "bench",
          naive_now) for i in range(data.bulletins)])
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    slots: list[tuple[Any, ...]] = []
    items: list[tuple[Any, ...]] = []
    targets: list[tuple[Any, ...]] = []
    today = now.date()
    for i in range(data.slots):
        sid = f"s-{i:05d}"
        kind = rng.random()
        weekdays, dates = "", "[]"
        if 0.3 <= kind < 0.8:
            weekdays = ",".join(sorted(rng.sample(days, rng.randint(1, 3)), key=days.index))
        elif kind >= 0.8:
            picks = sorted({today + dt.timedelta(days=rng.randint(0, 364)) for _ in range(2)})
            dates = json.dumps([d.isoformat() for d in picks])
        wall = dt.time(rng.randint(6, 20), rng.randint(0, 59), 0)
        slots.append((sid, f"Khung giờ {i}", f"seg-{i % 10}", wall, weekdays, 1, dates, "[]", "keep", "normal",
                      True, 300.0))
        items.append((sid, 0, "bulletin", f"b-{i % data.bulletins:03d}"))
        if rng.random() >= 0.05:
            targets.append((sid, zone_id(rng.randrange(data.zones))))
    put("slots", ("id", "name", "segment_id", "start_time", "weekdays", "interval_weeks", "dates", "exclude_dates",
                  "holidays", "priority", "enabled", "duration_s"), slots)
    put("slot_items", ("slot_id", "position", "kind", "bulletin_id"), items)
    put("slot_targets", ("slot_id", "zone_id"), targets)

    broadcasts: list[tuple[Any, ...]] = []
    deliveries: list[tuple[Any, ...]] = []
    commands: list[tuple[Any, ...]] = []
    bid = 0
    did = 0
    for day in range(data.asrun_days, 0, -1):
        base = dt.datetime.combine(today - dt.timedelta(days=day), dt.time(0, 0))  # naive UTC midnight
        plan: list[tuple[int, int | None]] = [(h, rng.randrange(data.zones))
                                              for h in range(data.zone_broadcasts_per_day)]
        plan += [(-1, None) for _ in range(data.ward_broadcasts_per_day)]
        for slot_hour, zone in plan:
            bid += 1
            at = base + dt.timedelta(hours=slot_hour if slot_hour >= 0 else 5, minutes=rng.randint(0, 50))
            start, dur = at + dt.timedelta(seconds=3), 60.0
            cid = uuid.UUID(int=rng.getrandbits(128)).hex
            broadcasts.append((bid, f"gen:{bid}", None, "scheduled", "normal", f"Phát {bid}", at, at, start,
                               start + dt.timedelta(seconds=70), "completed", f"{'0' * 63}1", dur, "espeak",
                               start + dt.timedelta(seconds=660)))
            topic = "radio/v1/tho-xuong/cmd/all" if zone is None else f"radio/v1/tho-xuong/cmd/zone/{zone_id(zone)}"
            commands.append((cid, bid, topic, json.dumps({"v": 1, "id": cid, "audio": {"duration_s": dur}}), at,
                             start + dt.timedelta(seconds=660), at, 1))
            members = range(data.nodes) if zone is None else range(zone * data.nodes_per_zone,
                                                                   (zone + 1) * data.nodes_per_zone)
            for n in members:
                did += 1
                r = rng.random()
                if r < 0.97:
                    deliveries.append((did, bid, node_id(n), 0, cid, "finished", None, at,
                                       at + dt.timedelta(milliseconds=40), at + dt.timedelta(milliseconds=900), start,
                                       start + dt.timedelta(seconds=dur), dur))
                elif r < 0.99:
                    deliveries.append((did, bid, node_id(n), 0, cid, "missed", "missed: offline", at, None, None, None,
                                       None, None))
                else:
                    deliveries.append((did, bid, node_id(n), 0, cid, "failed", "checksum", at,
                                       at + dt.timedelta(milliseconds=40), None, None, None, None))
    put("broadcasts", ("id", "occurrence_key", "slot_id", "kind", "priority", "title", "scheduled_at", "fired_at",
                       "start_at", "completed_at", "status", "audio_sha256", "duration_s", "engine", "valid_until"),
        broadcasts)
    put("commands", ("id", "broadcast_id", "topic", "payload", "created_at", "valid_until", "published_at", "attempts"),
        commands)
    put("deliveries", ("id", "broadcast_id", "node_id", "part", "command_id", "state", "reason", "issued_at",
                       "received_at", "ready_at", "started_at", "finished_at", "played_s"), deliveries)
    built = time.perf_counter() - began

    order = ["zones", "nodes", "segments", "bulletins", "slots", "slot_items", "slot_targets", "broadcasts",
             "commands", "deliveries"]
    big = ("broadcasts", "commands", "deliveries")
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            # Plain indexes are rebuilt after the load (one sort each beats 2 M random inserts).
            cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) AND indexname LIKE 'ix_%%'",
                        (list(big),))
            indexes = list(cur.fetchall())
            for index, _ in indexes:
                cur.execute(f'DROP INDEX "{index}"')
            cur.execute("SET session_replication_role = replica")  # generated rows are consistent: skip FK triggers
            for name in order:
                with cur.copy(f"COPY {name} ({', '.join(cols[name])}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for row in rows[name]:
                        copy.write_row(row)
            cur.execute("SET maintenance_work_mem = '256MB'")
            for _, definition in indexes:
                cur.execute(definition)
            for name in ("broadcasts", "deliveries"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
            raw.commit()
            cur.execute("ANALYZE")
            raw.commit()
        finally:
            raw.close()
    else:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            # A bulk load: a big page cache keeps the (random-keyed) index inserts in memory; no fsync.
            cur.execute("PRAGMA cache_size=-1000000")
            cur.execute("PRAGMA synchronous=OFF")
            raw.commit()
            cur.execute("PRAGMA foreign_keys=OFF")  # generated rows are consistent; on again for the service
            marks = ",".join("?" * len(big))
            indexes = cur.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                                  f"AND tbl_name IN ({marks})", big).fetchall()
            for index, _ in indexes:
                cur.execute(f'DROP INDEX "{index}"')
            for name in order:
                marks = ", ".join("?" for _ in cols[name])
                cur.executemany(f"INSERT INTO {name} ({', '.join(cols[name])}) VALUES ({marks})",
                                [tuple(_sqlite(v) for v in row) for row in rows[name]])
            for _, definition in indexes:
                cur.execute(definition)
            raw.commit()
            cur.execute("ANALYZE")
            raw.commit()
        finally:
            raw.close()
    with engine.connect() as conn:
        counts: dict[str, int | float] = {name: int(conn.execute(text(f"SELECT count(*) FROM {name}")).scalar() or 0)
                                          for name in ("nodes", "slots", "broadcasts", "deliveries", "commands")}
    engine.dispose()
    counts["seconds"] = round(time.perf_counter() - began, 1)
    log(f"dataset: {counts['nodes']:,} nodes, {counts['slots']:,} slots, {counts['broadcasts']:,} broadcasts, "
        f"{counts['deliveries']:,} deliveries in {counts['seconds']} s (rows built in {built:.1f} s)")
    return counts


def _cache_key(data: Dataset) -> str:
    """Same dataset, same day, same schema → same cached copy."""
    import hashlib

    heads = sorted(p.name for p in (ROOT / "radio" / "migrations" / "versions").glob("*.py"))
    raw = f"{data}|{dt.datetime.now(UTC).date()}|{heads}".encode()
    return hashlib.sha256(raw).hexdigest()[:12]


@contextmanager
def dataset_db(kind: str, tmp: Path, data: Dataset = Dataset(), *, fresh: bool = False,
               log: Callable[[str], None] = print) -> Iterator[str]:
    """A private copy of the generated dataset: made once per day and schema, then copied (seconds).

    SQLite: a cached file in $TMPDIR/radio-bench-cache copied into ``tmp``. PostgreSQL: a template
    database ``radio_bench_tpl_<key>`` cloned with CREATE DATABASE … TEMPLATE (older templates dropped).
    """
    key = _cache_key(data)
    if kind == "sqlite":
        cache = Path(os.environ.get("TMPDIR", "/tmp")) / "radio-bench-cache"
        cache.mkdir(exist_ok=True)
        source = cache / f"dataset-{key}.db"
        if fresh or not source.exists():
            for old in cache.glob("dataset-*.db*"):
                old.unlink()
            generate(f"sqlite:///{source}", data, log=log)
        else:
            log(f"dataset: cached copy {source.name}")
        target = tmp / "radio.db"
        shutil.copyfile(source, target)
        yield f"sqlite:///{target}"
        return
    import sqlalchemy as sa

    template = f"radio_bench_tpl_{key}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"radio_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            have = set(conn.exec_driver_sql(
                "SELECT datname FROM pg_database WHERE datname LIKE 'radio_bench_tpl_%%'").scalars())
            if fresh or template not in have:
                for old in have:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)')
                conn.exec_driver_sql(f'CREATE DATABASE "{template}"')
                generate(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{template}", data, log=log)
            else:
                log(f"dataset: cached template {template}")
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _sqlite(value: Any) -> Any:
    """SQLAlchemy's SQLite storage formats for datetime/time values; everything else as is."""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.time):
        return value.strftime("%H:%M:%S.%f")
    return value


def api_token(url: str) -> dict[str, str]:
    """An admin bearer token for the API, when the service has authentication; else no header."""
    try:
        from radio import auth
    except ImportError:
        return {}
    from radio.db import make_engine, migrate, session_factory, transaction

    engine = make_engine(url)
    migrate(engine)
    try:
        with transaction(session_factory(engine)) as session:
            user = auth.add_user(session, username=f"bench-{uuid.uuid4().hex[:6]}", password="bench-mat-khau",
                                 role="admin")
            session.flush()
            return {"Authorization": f"Bearer {auth.create_token(session, user, 'bench')}"}
    finally:
        engine.dispose()



@contextmanager
def service_process(db_url: str, data_dir: Path, broker: str, *, instance: str = "bench",
                    log_file: Path | None = None, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``radio serve`` in its own process (as in production); yields it and its base URL once /healthz is ok."""
    import httpx

    port = free_port()
    environ = {**os.environ, "RADIO_DATABASE_URL": db_url, "RADIO_DATA_DIR": str(data_dir), "RADIO_MQTT_URL": broker,
               "RADIO_HTTP_PORT": str(port), "RADIO_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
               "RADIO_INSTANCE_ID": instance, "RADIO_ADMIN_PASSWORD": "bench-mat-khau", **env}
    out = log_file.open("ab") if log_file else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "radio.cli", "serve"], env=environ, cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}" + (f" (see {log_file})" if log_file else ""))
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 180, "the service to answer /healthz", 0.25)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if log_file:
            out.close()  # type: ignore[union-attr]
