"""Command line `radio`: thin — parses, calls the services, prints. Help text is Vietnamese for officers."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
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


def setup_logging(verbose: bool, tz: dt.tzinfo) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(LocalTimeFormatter(tz))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    for noisy in ("amqtt", "transitions", "apscheduler", "httpx", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# service ---------------------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from radio.service import Service
    from radio.web.app import create_app

    programme = args.programme or (DEMO_PROGRAMME if args.demo else None)
    service = Service(settings, programme=programme, simulate=args.simulate or args.demo, demo=args.demo)
    app = create_app(service)
    print(f"Đài truyền thanh: http://{settings.http_host}:{settings.http_port}  (Ctrl+C để dừng)")
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_level="warning")
    return 0


def cmd_node(args: argparse.Namespace, settings: Settings) -> int:
    from radio.dispatch.mqtt import BrokerAddress
    from radio.node.agent import NodeAgent, NodeConfig

    url = args.broker or settings.mqtt_url or f"mqtt://{settings.embedded_mqtt_host}:{settings.embedded_mqtt_port}"
    config = NodeConfig(node_id=args.id, zone_id=args.zone, site=settings.site_id, broker=BrokerAddress.parse(url),
                        cache_dir=args.cache or settings.data_dir / "node-cache" / args.id)
    print(f"Cụm loa {args.id} ({args.zone}) kết nối tới {url}")
    return _run_async(NodeAgent(config).run())


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select

    from radio.db import make_engine, migrate, session_factory
    from radio.dispatch.mqtt import BrokerAddress
    from radio.models import Node
    from radio.node.agent import NodeConfig
    from radio.node.simulator import Fleet

    engine = make_engine(settings.db_url)
    migrate(engine)
    with session_factory(engine)() as session:
        nodes = list(session.scalars(select(Node).order_by(Node.id)))
    if args.nodes:
        nodes = nodes[: args.nodes]
    if not nodes:
        raise RadioError("chưa có cụm loa nào trong cơ sở dữ liệu: hãy nạp chương trình (radio schedule load)")
    url = args.broker or settings.mqtt_url or f"mqtt://{settings.embedded_mqtt_host}:{settings.embedded_mqtt_port}"
    address = BrokerAddress.parse(url)
    configs = [NodeConfig(node_id=n.id, zone_id=n.zone_id, site=settings.site_id, broker=address,
                          cache_dir=settings.data_dir / "node-cache" / n.id) for n in nodes]
    print(f"Mô phỏng {len(configs)} cụm loa, kết nối tới {url}")
    return _run_async(Fleet(configs).run())


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

    report = load_programme(args.file, _factory(settings))
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
        zones = ", ".join(row.zone_ids) or "toàn phường"
        print(f"{row.at.astimezone(settings.tz):%d/%m/%Y %H:%M}  {row.slot_name}  [{zones}]  "
              f"{', '.join(row.bulletins)}")
    return 0


# speech ----------------------------------------------------------------------------------------------
def cmd_tts_say(args: argparse.Namespace, settings: Settings) -> int:
    import shutil

    from radio.speech.prepare import prepare_speech

    audio = prepare_speech([args.text], settings, engine=args.engine, voice=args.voice, rate=args.rate)
    shutil.copyfile(audio.path, args.output)
    note = f"; dự phòng: {audio.fallback_reason}" if audio.fallback_reason else ""
    print(f"{args.output}: {audio.duration_s:.1f} giây, {audio.engine}{note}")
    return 0


def cmd_tts_normalize(args: argparse.Namespace, settings: Settings) -> int:
    from radio.speech.normalize import normalize

    print(normalize(args.text))
    return 0


# log -------------------------------------------------------------------------------------------------
def cmd_log(args: argparse.Namespace, settings: Settings) -> int:
    from radio.logbook.report import as_run_table

    with _factory(settings)() as session:
        print(as_run_table(session, settings.tz, limit=args.limit))
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

    p = sub.add_parser("node", help="chạy phần mềm của một cụm loa")
    p.add_argument("--id", required=True, help="mã cụm loa")
    p.add_argument("--zone", required=True, help="mã tổ dân phố của cụm loa")
    p.add_argument("--broker", help="địa chỉ MQTT, ví dụ mqtt://127.0.0.1:1883")
    p.add_argument("--cache", type=Path, help="thư mục lưu âm thanh tải về")
    p.set_defaults(handler=cmd_node)

    p = sub.add_parser("simulate", help="mô phỏng các cụm loa đã đăng ký")
    p.add_argument("--nodes", type=int, help="chỉ mô phỏng N cụm loa đầu tiên")
    p.add_argument("--broker", help="địa chỉ MQTT")
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

    tts = sub.add_parser("tts", help="chuyển văn bản thành giọng nói").add_subparsers(dest="sub", required=True,
                                                                                   metavar="LỆNH")
    p = tts.add_parser("say", help="tạo đúng âm thanh sẽ phát (MP3)")
    p.add_argument("text")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--engine", choices=["espeak", "gtts"])
    p.add_argument("--voice")
    p.add_argument("--rate", type=int)
    p.set_defaults(handler=cmd_tts_say)
    p = tts.add_parser("normalize", help="in cách đọc của văn bản")
    p.add_argument("text")
    p.set_defaults(handler=cmd_tts_normalize)

    p = sub.add_parser("log", help="nhật ký phát sóng, mới nhất trước")
    p.add_argument("--limit", type=int, default=30)
    p.set_defaults(handler=cmd_log)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ValidationError as exc:
        for err in exc.errors():
            field = "RADIO_" + "_".join(str(p) for p in err["loc"]).upper()
            print(f"Lỗi cấu hình {field}: {err['msg']}", file=sys.stderr)
        return 2
    setup_logging(args.verbose, settings.tz)
    try:
        handler: Handler = args.handler
        return handler(args, settings)
    except (RadioError, ValueError, OSError) as exc:
        print(f"Lỗi: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
