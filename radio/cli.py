"""Command line `radio`: thin — parses, calls the services, prints. Help text is Vietnamese for officers."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import ValidationError

from radio.errors import RadioError
from radio.settings import REPO_ROOT, Settings, load_settings

DEMO_PROGRAMME = REPO_ROOT / "schedules" / "tho-xuong-2024.yaml"
Handler = Callable[[argparse.Namespace, Settings], int]


class LocalTimeFormatter(logging.Formatter):
    """Console times in the site's zone (Asia/Ho_Chi_Minh), whatever the server's own zone is."""

    def __init__(self, tz: dt.tzinfo) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s")
        self.tz = tz

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return dt.datetime.fromtimestamp(record.created, self.tz).strftime("%H:%M:%S")


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now, not the one at set-up: `main()` is also called in-process (tests,
    embedding), and a handler bound to a stream that was later closed turns every log line into an error."""

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(verbose: bool, tz: dt.tzinfo) -> None:
    handler = _CurrentStderr()
    handler.setFormatter(LocalTimeFormatter(tz))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for noisy in ("amqtt", "transitions", "apscheduler", "httpx", "uvicorn.access", "alembic", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# service ---------------------------------------------------------------------------------------------
def _fewer_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena (up to 8 per core); the service runs ~70 threads, and
    spare arenas hold freed memory: two keep the resident size ~20 % lower (bench/memory.py). Must run
    before threads start; a no-op off glibc or when MALLOC_ARENA_MAX is set."""
    import ctypes
    import ctypes.util
    import os

    if "MALLOC_ARENA_MAX" in os.environ or not (libc := ctypes.util.find_library("c")):
        return
    try:
        ctypes.CDLL(libc).mallopt(-8, arenas)  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    _fewer_malloc_arenas()
    import uvicorn

    from radio.service import Service
    from radio.web.app import create_app

    programme = args.programme or (DEMO_PROGRAMME if args.demo else None)
    service = Service(settings, programme=programme, simulate=args.simulate or args.demo, demo=args.demo)
    # Started here, not in the web app's lifespan: a broker that is down, a port in use or a bad programme
    # file is then one clear line (main() prints it), not a traceback from inside the web server.
    service.start()
    try:
        app = create_app(service, manage=False)
        print(f"Đài truyền thanh: http://{settings.http_host}:{settings.http_port}  (Ctrl+C để dừng)")
        uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="warning")
    finally:
        service.stop()
    return 0


def cmd_node(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from radio.node.agent import NodeAgent, until_signal
    from radio.node.config import load_node_config
    from radio.node.players import detect_player

    broker = args.broker or settings.mqtt_url or f"mqtt://{settings.embedded_mqtt_host}:{settings.embedded_mqtt_port}"
    config = load_node_config(
        args.config, id=args.id, zone=args.zone, cache_dir=args.cache, player=args.player, volume=args.volume,
        # Flags win over the file and RADIO_NODE_*; the service's own settings only fill what nothing else gives.
        broker=args.broker or (None if args.config or "RADIO_NODE_BROKER" in os.environ else broker),
        site=None if args.config or "RADIO_NODE_SITE" in os.environ else settings.site_id,
    )
    player, note = detect_player(config.player)
    logging.getLogger("radio.node").info("Cụm loa %s: phát qua %s", config.node_id, note)
    print(f"Cụm loa {config.node_id} ({config.zone_id}) kết nối tới {config.broker}")
    return _run_async(until_signal(NodeAgent(config, player).run()))


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select

    from radio.db import make_engine, migrate, session_factory
    from radio.dispatch.mqtt import BrokerAddress
    from radio.models import Node
    from radio.node.agent import until_signal
    from radio.node.config import NodeConfig
    from radio.node.simulator import FaultConfig, Fleet

    engine = make_engine(settings.db_url)
    migrate(engine)
    with session_factory(engine)() as session:
        nodes = list(session.scalars(select(Node).order_by(Node.id)))
    engine.dispose()
    if args.nodes:
        nodes = nodes[: args.nodes]
    if not nodes:
        raise RadioError("chưa có cụm loa nào trong cơ sở dữ liệu: hãy nạp chương trình (radio schedule load)")
    url = args.broker or settings.mqtt_url or f"mqtt://{settings.embedded_mqtt_host}:{settings.embedded_mqtt_port}"
    address = BrokerAddress.parse(url)
    cache = args.cache or settings.data_dir / "node-cache"
    configs = [NodeConfig(node_id=n.id, zone_id=n.zone_id, site=settings.site_id, broker=address,
                          cache_dir=cache / n.id, heartbeat_s=args.heartbeat_s) for n in nodes]
    faults = FaultConfig(
        offline=args.offline, offline_after_s=args.offline_after, offline_for_s=args.offline_for, drop=args.drop,
        duplicate=args.duplicate, slow=args.slow, slow_s=args.slow_s, corrupt=args.corrupt,
        corrupt_always=args.corrupt_always, clock_skew_s=args.clock_skew, crash=args.crash,
        crash_restart_s=args.crash_restart, seed=args.seed)
    fleet = Fleet(configs, speed=args.speed, faults=faults)
    print(f"Mô phỏng {len(configs)} cụm loa, kết nối tới {url}" + (f"; lỗi giả lập: {faults}" if faults.any else ""),
          flush=True)

    async def run() -> None:
        tasks = [asyncio.create_task(fleet.run())]
        if args.summary > 0:
            tasks.append(asyncio.create_task(fleet.report(args.summary)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            print(fleet.summary(), flush=True)

    return _run_async(until_signal(run()))


def _run_async(coro: object) -> int:
    try:
        asyncio.run(coro)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        pass
    return 0


# programme -------------------------------------------------------------------------------------------
def _factory(settings: Settings):  # type: ignore[no-untyped-def]
    from radio.db import make_engine, migrate, session_factory

    engine = make_engine(settings.db_url)
    migrate(engine)
    return session_factory(engine)


def cmd_schedule_load(args: argparse.Namespace, settings: Settings) -> int:
    from radio.schedule.loader import load_programme

    report = load_programme(args.file, _factory(settings), settings=settings, timezone=settings.timezone)
    print(f"Đã nạp {args.file}: {report}")
    return 0


def cmd_schedule_export(args: argparse.Namespace, settings: Settings) -> int:
    from radio.schedule.loader import export_programme

    text = export_programme(_factory(settings))
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_schedule_preview(args: argparse.Namespace, settings: Settings) -> int:
    from radio.models import utcnow
    from radio.web.queries import upcoming

    with _factory(settings)() as session:
        rows = upcoming(session, settings.tz, utcnow(), args.days, args.zone)
    if not rows:
        print("Không có lượt phát nào trong khoảng thời gian này.")
    for row in rows:
        zones = ", ".join([*row.zone_ids, *(f"nhóm {g}" for g in row.group_ids)]) or "toàn phường"
        print(f"{row.at.astimezone(settings.tz):%d/%m/%Y %H:%M}  {row.slot_name}  [{zones}]  "
              f"{', '.join(row.bulletins)}")
    return 0


def cmd_emergency(args: argparse.Namespace, settings: Settings) -> int:
    """Emergencies go through the running service (it owns the broker link and serves the audio)."""
    import httpx

    text = sys.stdin.read() if args.text == "-" else args.text
    url = f"{settings.public_base_url}/api/v1/emergency"
    token = args.token or os.environ.get("RADIO_API_TOKEN")
    if not token:
        raise RadioError("cần mã truy cập của người phê duyệt: --token hoặc RADIO_API_TOKEN "
                         "(tạo bằng `radio user token TÊN`)")
    try:
        r = httpx.post(url, json={"text": text, "title": args.title, "zones": args.zone or []},
                       headers={"Authorization": f"Bearer {token}"}, timeout=60)
    except httpx.HTTPError as exc:
        raise RadioError(f"không liên lạc được với dịch vụ tại {settings.public_base_url} ({exc}); "
                         "hãy chạy `radio serve`") from None
    if r.status_code >= 400:
        raise RadioError(f"dịch vụ từ chối ({r.status_code}): {r.json().get('detail', r.text)}")
    print(f"Đã phát khẩn cấp: lượt phát số {r.json()['broadcast_id']} trên {r.json()['detail']}")
    return 0


# users ----------------------------------------------------------------------------------------------
def _read_password(prompt: str) -> str:
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Nhập lại: ") != first:
            raise RadioError("hai lần nhập mật khẩu không khớp")
        return first
    return sys.stdin.readline().rstrip("\n")  # scripted: the password on standard input


def cmd_user(args: argparse.Namespace, settings: Settings) -> int:
    from radio import auth
    from radio.db import transaction

    factory = _factory(settings)
    with transaction(factory) as session:
        if args.sub == "add":
            auth.add_user(session, username=args.username, role=args.role, full_name=args.name or "",
                          password=_read_password("Mật khẩu: "))
            print(f"Đã tạo tài khoản {args.username} ({args.role})")
        elif args.sub == "passwd":
            auth.set_password(session, args.username, _read_password("Mật khẩu mới: "))
            print(f"Đã đổi mật khẩu của {args.username}")
        elif args.sub in ("disable", "enable"):
            auth.set_disabled(session, args.username, args.sub == "disable")
            print(f"Đã {'khóa' if args.sub == 'disable' else 'mở khóa'} tài khoản {args.username}")
        elif args.sub == "token":
            print(auth.create_token(session, auth.get_user(session, args.username), args.name or "cli"))
    return 0


# speech ----------------------------------------------------------------------------------------------
def cmd_tts_say(args: argparse.Namespace, settings: Settings) -> int:
    import shutil

    from radio.speech.prepare import prepare_speech

    long_job = 10  # sentences; beyond this progress is shown even when stderr is not a terminal
    if args.pitch is not None:
        settings = settings.model_copy(update={"espeak_pitch": args.pitch})
    text = sys.stdin.read() if args.text == "-" else args.text
    interactive = sys.stderr.isatty()
    open_line = False

    def progress(done: int, total: int) -> None:
        nonlocal open_line
        if interactive or total > long_job:
            open_line = done < total  # the last update ends the line, before the log says "prepared"
            print(f"\rĐang tổng hợp câu {done}/{total}…", end="" if open_line else "\n", file=sys.stderr,
                  flush=True)

    try:
        audio = prepare_speech([text], settings, engine=args.engine, voice=args.voice, rate=args.rate,
                               progress=progress)
    finally:
        if open_line:
            print(file=sys.stderr)
    fmt = args.output.suffix.lower().lstrip(".") or "mp3"
    if fmt == "mp3":
        shutil.copyfile(audio.path, args.output)  # byte for byte what airs
    elif fmt in ("wav", "ogg"):
        from radio.sound.ffmpeg import run_ffmpeg

        codec = ["-c:a", "libvorbis"] if fmt == "ogg" else []
        run_ffmpeg(["-y", "-i", str(audio.path), *codec, "-f", fmt, str(args.output)])
    else:
        raise ValueError(f"không ghi được định dạng .{fmt}; chọn tệp .mp3, .wav hoặc .ogg")
    note = f"; dự phòng: {audio.fallback_reason}" if audio.fallback_reason else ""
    cached = ", từ bộ nhớ đệm" if audio.cached else ""
    print(f"{args.output}: {audio.duration_s:.1f} giây, {audio.engine}{cached}{note}")
    return 0


def cmd_tts_normalize(args: argparse.Namespace, settings: Settings) -> int:
    from radio.speech.lexicon import site_lexicon
    from radio.speech.normalize import normalize

    print(normalize(args.text, site_lexicon(settings)))  # the officer's own words included
    return 0


# log -------------------------------------------------------------------------------------------------
def _cli_period(args: argparse.Namespace, settings: Settings, required: bool = False):  # type: ignore[no-untyped-def]
    """--from/--to as a Period (whole local days, both included); None when neither is given."""
    from radio.logbook.asrun import Period

    first, last = getattr(args, "date_from", None), getattr(args, "date_to", None)
    if first is None and last is None and not required:
        return None
    if first is None or last is None:
        raise ValueError("cần cả --from và --to (ví dụ --from 2024-01-01 --to 2024-09-15)")
    return Period.parse(first, last, settings.tz)


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_log(args: argparse.Namespace, settings: Settings) -> int:
    from radio.logbook import asrun
    from radio.web.queries import check_known

    if args.page < 1 or not 1 <= args.limit <= asrun.MAX_LIMIT:
        raise ValueError(f"--page phải từ 1, --limit từ 1 đến {asrun.MAX_LIMIT}")
    tz = settings.tz
    with _factory(settings)() as session:
        check_known(session, zone=args.zone, segment=args.segment)
        page = asrun.query(session, period=_cli_period(args, settings), zone=args.zone, segment=args.segment,
                           priority=args.priority, outcome=args.outcome, limit=args.limit,
                           offset=(args.page - 1) * args.limit)
    if not page.items:
        filtered = any((args.date_from, args.date_to, args.zone, args.segment, args.priority, args.outcome))
        if page.total:
            print(f"Trang {args.page} trống (tổng {page.total} lượt phát).")
        else:
            print("Không có lượt phát nào khớp điều kiện." if filtered else "Chưa có lượt phát nào.")
        return 0

    def hms(at: dt.datetime | None) -> str:
        return at.astimezone(tz).strftime("%H:%M:%S.%f")[:-3] if at else ""

    rows = [("Giờ phát", "Nội dung", "Kết quả", "Phủ", "Cụm loa", "Phần", "Trạng thái", "Nhận lệnh", "Bắt đầu",
             "Đã phát (giây)", "Lý do")]
    for b in page.items:
        cover = f"{b.played_fully}/{b.targeted}" if b.targeted else ""
        head = (b.scheduled_at.astimezone(tz).strftime("%d/%m/%Y %H:%M"), b.title[:36], b.status_vi, cover)
        if not b.deliveries:
            rows.append((*head, "", "", "", "", "", "", (b.reason or "")[:60]))
        for i, d in enumerate(b.deliveries):
            rows.append((*(head if i == 0 else ("", "", "", "")), d.node_id, str(d.part + 1), d.state_vi,
                         hms(d.received_at), hms(d.started_at), f"{d.played_s:.1f}" if d.played_s is not None else "",
                         (d.reason or (b.reason if i == 0 else "") or "")[:60]))
    print(_table(rows))
    pages = (page.total + args.limit - 1) // args.limit
    print(f"\nTrang {args.page}/{pages} — tổng {page.total} lượt phát")
    return 0


# audit and reports -----------------------------------------------------------------------------------
def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from radio.logbook import audit

    anchors = [audit.parse_anchor(a) for a in args.anchor or []]
    with _factory(settings)() as session:
        result = audit.verify(session, anchors)
    if result.ok:
        head = result.head or audit.Head(0, audit.GENESIS)
        print(f"Chuỗi nhật ký kiểm toán toàn vẹn: {result.count} bản ghi đã kiểm tra.")
        print(f"Đầu chuỗi: bản ghi #{head.last_id}, SHA-256 {head.hash}")
        return 0
    where = f" tại bản ghi {result.first_broken_id}" if result.first_broken_id is not None else ""
    print(f"CHUỖI NHẬT KÝ KIỂM TOÁN BỊ PHÁ VỠ{where}: {result.reason_vi}")
    print(f"({result.reason}; {result.count} bản ghi đầu tiên hợp lệ)")
    return 1


def cmd_audit_log(args: argparse.Namespace, settings: Settings) -> int:
    from radio.logbook import audit

    with _factory(settings)() as session:
        total, rows = audit.entries(session, limit=args.limit, offset=args.offset, action=args.action,
                                    entity_type=args.entity)
    if not rows:
        print("Nhật ký kiểm toán chưa có bản ghi nào." if total == 0 else "Không có bản ghi ở vị trí này.")
        return 0
    for entry in rows:
        print(audit.describe(entry, settings.tz))
    print(f"\n{len(rows)}/{total} bản ghi, mới nhất trước")
    return 0


def cmd_audit_head(args: argparse.Namespace, settings: Settings) -> int:
    from radio.logbook import audit

    with _factory(settings)() as session:
        print(audit.head(session))
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from radio.logbook import reports

    fmt = args.format or (args.output.suffix.lower().lstrip(".") if args.output.suffix else "pdf")
    if fmt not in reports.FORMATS:
        raise ValueError(f"định dạng không hỗ trợ {fmt!r}; chọn pdf, xlsx hoặc csv")
    period = _cli_period(args, settings, required=True)
    with _factory(settings)() as session:
        report = reports.build_report(session, settings, period.first, period.last)
    args.output.write_bytes(reports.render(report, fmt))
    print(f"Đã lập {args.output} ({fmt.upper()}): {report.period.label_vi}; "
          f"nhật ký kiểm toán #{report.head.last_id} {'toàn vẹn' if report.chain_ok else 'BỊ PHÁ VỠ'}")
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from radio.logbook import asrun
    from radio.web.queries import check_known

    period = _cli_period(args, settings, required=True)
    with _factory(settings)() as session:
        check_known(session, zone=args.zone, segment=args.segment)
        result = asrun.reconcile(session, period, grace_s=settings.misfire_grace_s, zone=args.zone,
                                 segment=args.segment, priority=args.priority, outcome=args.outcome)
    if args.page < 1:
        raise ValueError("--page phải từ 1")
    if not result.rows:
        print(f"Không có lượt phát nào theo lịch — {period.label_vi}.")
        return 0
    shown = result.page(limit=args.limit, offset=(args.page - 1) * args.limit if args.limit else 0)
    if not shown:
        print(f"Trang {args.page} trống (tổng {result.total} dòng).")
        return 0
    rows = [("Thời gian", "Chương trình", "Theo lịch", "Kết quả", "Phủ", "Lý do")]
    for r in shown:
        rows.append((r.local_time, r.title[:40], "có" if r.planned else "ngoài lịch", r.category_vi,
                     f"{r.played_fully}/{r.targeted}" if r.targeted else "", (r.reason or "")[:70]))
    print(_table(rows))
    print(f"\n{len(shown)}/{result.total} dòng. {period.label_vi}: "
          + "; ".join(f"{asrun.CATEGORY_VI[asrun.Category(c)]} {n}" for c, n in result.counts.items() if n))
    return 0


def cmd_export_exchange(args: argparse.Namespace, settings: Settings) -> int:
    from radio.logbook import exchange

    with _factory(settings)() as session:
        doc = exchange.build(session, settings, _cli_period(args, settings))
    text = exchange.dumps(doc)
    if str(args.output) == "-":
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"Đã xuất {args.output}: {len(doc['as_run'])} lượt phát, {len(doc['clusters'])} cụm loa "
              f"(lược đồ {doc['schema']})")
    return 0


def _period_options(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--from", dest="date_from", required=required, metavar="NGÀY",
                   help="ngày đầu, ví dụ 2024-01-01 hoặc 01/01/2024")
    p.add_argument("--to", dest="date_to", required=required, metavar="NGÀY", help="ngày cuối (tính cả ngày này)")


# MQTT accounts (docs/security.md) ----------------------------------------------------------------------
def _broker_address(settings: Settings):  # type: ignore[no-untyped-def]
    from radio.dispatch.mqtt import BrokerAddress

    return BrokerAddress.parse(settings.mqtt_url or f"mqtt://{settings.embedded_mqtt_host}:{settings.embedded_mqtt_port}")


def cmd_mqtt_export(args: argparse.Namespace, settings: Settings) -> int:
    from radio.dispatch import acl

    with _factory(settings)() as session:
        result = acl.export(session, settings, args.output or settings.data_dir / "mosquitto")
    print(f"Đã ghi {result.passwd} và {result.acl}: {len(result.users)} tài khoản "
          f"({acl.SERVICE_USER} và {len(result.users) - 1} cụm loa)")
    if result.missing:
        print(f"Chưa có mật khẩu MQTT (không đăng nhập được): {', '.join(result.missing)} — "
              "tạo bằng `radio node credentials MÃ_CỤM_LOA` rồi xuất lại")
    print(result.instructions)
    return 0


def cmd_node_credentials(args: argparse.Namespace, settings: Settings) -> int:
    from radio.db import transaction
    from radio.dispatch import acl

    with transaction(_factory(settings)) as session:
        password = acl.issue_node_password(session, args.node_id)
    print(f"Mật khẩu MQTT mới của cụm loa {args.node_id} (chỉ hiện một lần; mật khẩu cũ hết hiệu lực):")
    print(password)
    print("Địa chỉ broker cho cấu hình của cụm loa (node.broker hoặc RADIO_NODE_BROKER):")
    print(acl.node_url(_broker_address(settings), args.node_id, password))
    print("Với Mosquitto: chạy `radio mqtt export` rồi nạp lại Mosquitto.")
    return 0


# parser ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radio", description="Đài truyền thanh thông minh cấp phường.")
    parser.add_argument("-v", "--verbose", action="store_true", help="ghi nhật ký chi tiết")
    sub = parser.add_subparsers(dest="command", required=True, metavar="LỆNH")

    p = sub.add_parser("serve", help="chạy dịch vụ (lịch phát, MQTT, trang web)")
    p.add_argument("--demo", action="store_true",
                   help="nạp chương trình mẫu, chạy cụm loa mô phỏng và phát một bản tin sau vài giây")
    p.add_argument("--simulate", action="store_true", help="chạy một cụm loa mô phỏng cho mỗi cụm loa đã đăng ký")
    p.add_argument("--programme", type=Path, help="nạp tệp chương trình YAML khi khởi động")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("node", help="chạy phần mềm của một cụm loa (cấu hình: tệp --config, biến RADIO_NODE_*)")
    p.add_argument("--config", type=Path, help="tệp cấu hình TOML hoặc INI (mục [node])")
    p.add_argument("--id", help="mã cụm loa")
    p.add_argument("--zone", help="mã tổ dân phố của cụm loa")
    p.add_argument("--broker", help="địa chỉ MQTT, ví dụ mqtt://127.0.0.1:1883")
    p.add_argument("--cache", type=Path, help="thư mục lưu âm thanh tải về")
    p.add_argument("--player", help="auto (mặc định), mpv, ffplay, ffmpeg-pulse, ffmpeg-alsa, aplay, paplay, null, "
                                    "simulated")
    p.add_argument("--volume", type=int, help="âm lượng ban đầu 0–100")
    p.set_defaults(handler=cmd_node)

    p = sub.add_parser("simulate", help="mô phỏng các cụm loa đã đăng ký (mỗi cụm một kết nối MQTT riêng)")
    p.add_argument("--nodes", type=int, help="chỉ mô phỏng N cụm loa đầu tiên")
    p.add_argument("--broker", help="địa chỉ MQTT")
    p.add_argument("--cache", type=Path, help="thư mục bộ nhớ đệm của các cụm loa")
    p.add_argument("--speed", type=float, default=1.0, help="phát nhanh gấp N lần (thử nghiệm)")
    p.add_argument("--heartbeat-s", type=float, default=30.0, help="chu kỳ nhịp tim, giây")
    p.add_argument("--summary", type=float, default=2.0, metavar="GIÂY", help="in tóm tắt mỗi N giây (0: tắt)")
    f = p.add_argument_group("lỗi giả lập")
    f.add_argument("--offline", type=float, default=0.0, metavar="TỈ_LỆ", help="tỉ lệ cụm loa mất kết nối")
    f.add_argument("--offline-after", type=float, default=0.0, metavar="GIÂY", help="... sau khi kết nối N giây")
    f.add_argument("--offline-for", type=float, default=30.0, metavar="GIÂY", help="... trong N giây rồi trở lại")
    f.add_argument("--drop", type=float, default=0.0, metavar="XÁC_SUẤT", help="mất lệnh đến và báo cáo đi")
    f.add_argument("--duplicate", type=float, default=0.0, metavar="XÁC_SUẤT", help="nhận trùng lệnh")
    f.add_argument("--slow", type=float, default=0.0, metavar="TỈ_LỆ", help="tỉ lệ cụm loa tải âm thanh chậm")
    f.add_argument("--slow-s", type=float, default=5.0, metavar="GIÂY", help="... chậm thêm N giây")
    f.add_argument("--corrupt", type=float, default=0.0, metavar="TỈ_LỆ", help="tải về hỏng lần đầu")
    f.add_argument("--corrupt-always", type=float, default=0.0, metavar="TỈ_LỆ", help="tải về luôn hỏng")
    f.add_argument("--clock-skew", type=float, default=0.0, metavar="GIÂY", help="đồng hồ lệch ngẫu nhiên ±N giây")
    f.add_argument("--crash", type=float, default=0.0, metavar="TỈ_LỆ", help="tỉ lệ cụm loa sập giữa lúc phát")
    f.add_argument("--crash-restart", type=float, default=2.0, metavar="GIÂY", help="... khởi động lại sau N giây")
    f.add_argument("--seed", type=int, default=1, help="hạt giống ngẫu nhiên (lặp lại được)")
    p.set_defaults(handler=cmd_simulate)

    sched = sub.add_parser("schedule", help="chương trình phát").add_subparsers(dest="sub", required=True,
                                                                              metavar="LỆNH")
    p = sched.add_parser("load", help="kiểm tra và nạp tệp chương trình YAML (tất cả hoặc không gì cả)")
    p.add_argument("file", type=Path)
    p.set_defaults(handler=cmd_schedule_load)
    p = sched.add_parser("export", help="xuất chương trình ra YAML")
    p.add_argument("-o", "--output", type=Path, help="tệp ra (mặc định: màn hình)")
    p.set_defaults(handler=cmd_schedule_export)
    p = sched.add_parser("preview", help="xem trước các lượt phát sắp tới")
    p.add_argument("--days", type=int, default=7, choices=range(1, 63), metavar="NGÀY", help="số ngày (1–62)")
    p.add_argument("--zone", help="chỉ một tổ dân phố")
    p.set_defaults(handler=cmd_schedule_preview)

    p = sub.add_parser("emergency", help="phát khẩn cấp ngay (dừng mọi nội dung đang phát)")
    p.add_argument("text", help="nội dung khẩn cấp ('-' để đọc từ bàn phím/tệp)")
    p.add_argument("--title", default="Thông báo khẩn cấp", help="tiêu đề")
    p.add_argument("--zone", action="append", help="tổ dân phố (lặp lại được); mặc định toàn phường")
    p.add_argument("--token", help="mã truy cập API của người phê duyệt (hoặc biến RADIO_API_TOKEN)")
    p.set_defaults(handler=cmd_emergency)

    users = sub.add_parser("user", help="tài khoản người dùng").add_subparsers(dest="sub", required=True,
                                                                           metavar="LỆNH")
    p = users.add_parser("add", help="tạo tài khoản (mật khẩu hỏi khi chạy, hoặc đọc từ đầu vào)")
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=["admin", "officer", "approver", "auditor", "node"],
                   help="admin, officer (biên tập), approver (phê duyệt), auditor (giám sát), node")
    p.add_argument("--name", help="họ tên")
    p.set_defaults(handler=cmd_user)
    for name, text in (("passwd", "đổi mật khẩu"), ("disable", "khóa tài khoản"), ("enable", "mở khóa tài khoản")):
        p = users.add_parser(name, help=text)
        p.add_argument("username")
        p.set_defaults(handler=cmd_user)
    p = users.add_parser("token", help="tạo mã truy cập API (in ra một lần)")
    p.add_argument("username")
    p.add_argument("--name", help="tên gợi nhớ của mã")
    p.set_defaults(handler=cmd_user)

    tts = sub.add_parser("tts", help="chuyển văn bản thành giọng nói").add_subparsers(dest="sub", required=True,
                                                                                   metavar="LỆNH")
    p = tts.add_parser("say", help="tạo đúng âm thanh sẽ phát (MP3)")
    p.add_argument("text", help="văn bản cần đọc; '-' để đọc từ đầu vào chuẩn")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="tệp ra: .mp3 (đúng tệp sẽ phát), .wav hoặc .ogg (chuyển từ tệp đó)")
    p.add_argument("--engine", choices=["espeak", "gtts", "piper"], help="bộ đọc (mặc định: của đài)")
    p.add_argument("--voice", help="giọng, ví dụ vi, vi-vn-x-central, vi-vn-x-south (espeak)")
    p.add_argument("--rate", type=int, help="tốc độ đọc, từ/phút (80–450)")
    p.add_argument("--pitch", type=int, choices=range(101), metavar="0-100", help="cao độ giọng espeak (mặc định 50)")
    p.set_defaults(handler=cmd_tts_say)
    p = tts.add_parser("normalize", help="in cách đọc của văn bản")
    p.add_argument("text")
    p.set_defaults(handler=cmd_tts_normalize)

    p = sub.add_parser("log", help="nhật ký phát sóng theo từng cụm loa, mới nhất trước")
    _period_options(p)
    p.add_argument("--zone", help="chỉ một tổ dân phố (mã, ví dụ tdp-1)")
    p.add_argument("--segment", help="chỉ một chuyên mục (mã)")
    p.add_argument("--priority", choices=["normal", "priority", "emergency"], help="mức ưu tiên")
    p.add_argument("--outcome", choices=["preparing", "on_air", "completed", "partial", "failed", "not_aired", "missed",
                                         "preempted"], help="kết quả của lượt phát")
    p.add_argument("--page", type=int, default=1, help="trang (từ 1)")
    p.add_argument("--limit", type=int, default=30, help="số lượt phát mỗi trang (mặc định 30)")
    p.set_defaults(handler=cmd_log)

    p = sub.add_parser("reconcile", help="đối chiếu lịch phát với thực tế phát trong một khoảng thời gian")
    _period_options(p, required=True)
    p.add_argument("--zone", help="chỉ một tổ dân phố")
    p.add_argument("--segment", help="chỉ một chuyên mục")
    p.add_argument("--priority", help="normal, priority, emergency (nhiều giá trị cách nhau bằng dấu phẩy)")
    p.add_argument("--outcome", help="aired, partial, preempted, missed, not_approved, not_aired, failed, "
                                     "in_progress, future (nhiều giá trị cách nhau bằng dấu phẩy)")
    p.add_argument("--limit", type=int, help="số dòng mỗi trang (mặc định: tất cả)")
    p.add_argument("--page", type=int, default=1, help="trang (từ 1)")
    p.set_defaults(handler=cmd_reconcile)

    p = sub.add_parser("report", help="lập báo cáo kết quả phát thanh (PDF, XLSX, CSV) làm tài liệu minh chứng")
    _period_options(p, required=True)
    p.add_argument("--format", choices=["pdf", "xlsx", "csv"], help="định dạng (mặc định: theo đuôi tệp, hoặc pdf)")
    p.add_argument("-o", "--output", type=Path, required=True, help="tệp báo cáo ra")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("export-exchange", help="xuất dữ liệu JSON để trao đổi với hệ thống thông tin nguồn cấp tỉnh")
    _period_options(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="tệp JSON ra ('-' = màn hình)")
    p.set_defaults(handler=cmd_export_exchange)

    aud = sub.add_parser("audit", help="nhật ký kiểm toán (ai, khi nào, thay đổi gì)").add_subparsers(
        dest="sub", required=True, metavar="LỆNH")
    p = aud.add_parser("verify", help="kiểm tra chuỗi mã băm; báo bản ghi đầu tiên bị sửa hoặc bị xóa")
    p.add_argument("--anchor", action="append", metavar="SỐ:SHA256",
                   help="mốc đầu chuỗi đã lưu trước đây (in trên báo cáo, hoặc từ 'radio audit head'); lặp lại được")
    p.set_defaults(handler=cmd_audit_verify)
    p = aud.add_parser("log", help="xem nhật ký kiểm toán, mới nhất trước")
    p.add_argument("--limit", type=int, default=20, help="số bản ghi (mặc định 20)")
    p.add_argument("--offset", type=int, default=0, help="bỏ qua N bản ghi mới nhất")
    p.add_argument("--action", help="chỉ một loại thao tác, ví dụ bulletin.approved")
    p.add_argument("--entity", help="chỉ một loại đối tượng, ví dụ slot")
    p.set_defaults(handler=cmd_audit_log)
    p = aud.add_parser("head", help="in mốc đầu chuỗi (SỐ:SHA256) để lưu ngoài cơ sở dữ liệu")
    p.set_defaults(handler=cmd_audit_head)

    mqtt = sub.add_parser("mqtt", help="tài khoản và quyền MQTT cho broker Mosquitto").add_subparsers(
        dest="sub", required=True, metavar="LỆNH")
    p = mqtt.add_parser("export", help="ghi tệp mật khẩu và tệp ACL cho Mosquitto từ danh sách cụm loa")
    p.add_argument("-o", "--output", type=Path, help="thư mục ghi tệp (mặc định: <data_dir>/mosquitto)")
    p.set_defaults(handler=cmd_mqtt_export)
    node_sub = sub.choices["node"].add_subparsers(dest="node_sub", metavar="LỆNH")  # `radio node` alone runs a node
    p = node_sub.add_parser("credentials", help="cấp mật khẩu MQTT mới cho một cụm loa (in ra một lần)")
    p.add_argument("node_id", help="mã cụm loa")
    p.set_defaults(handler=cmd_node_credentials)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pydantic_settings import SettingsError
    from sqlalchemy.exc import ArgumentError, OperationalError

    try:
        settings = load_settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = "RADIO_" + "_".join(str(p) for p in err["loc"]).upper()
            print(f"Lỗi cấu hình {field}: {err['msg']}", file=sys.stderr)
        return 2
    except SettingsError as exc:  # a RADIO_* variable that must be JSON (e.g. RADIO_CAP_ZONE_MAP) and is not
        print(f"Lỗi cấu hình: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.verbose, settings.tz)
    try:
        handler: Handler = args.handler
        return handler(args, settings)
    except (RadioError, ValueError, OSError) as exc:
        print(f"Lỗi: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, ArgumentError) as exc:  # a database that is down, or a URL that is not one
        reason = getattr(exc, "orig", None) or exc
        print(f"Lỗi: không dùng được cơ sở dữ liệu {_safe_url(settings.db_url)} "
              f"(RADIO_DATABASE_URL): {str(reason).strip().splitlines()[0]}", file=sys.stderr)
        return 2


def _safe_url(url: str) -> str:
    """The database URL without its password, fit to print."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


if __name__ == "__main__":
    raise SystemExit(main())
