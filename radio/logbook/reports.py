"""Reports on what aired, in Vietnamese, usable as evidence (tài liệu minh chứng): PDF, XLSX and CSV.

:func:`build_report` turns a period's reconciliation (:mod:`radio.logbook.asrun`) into a :class:`Report`:

* per segment (chuyên mục) and per TDP (tổ dân phố): occurrences planned, broadcasts aired, aired
  fully, airtime in minutes, coverage %, how many did not air (and why), how many aired partly;
* airtime per week by segment (also drawn as a chart);
* every occurrence that did not air fully, with its reason;
* the bulletins that aired, with the text that was spoken.

Definitions (also in docs/audit.md):

* airtime of a broadcast = the longest time any of its clusters played it (the seconds the node
  reported; the audio's length when it finished without saying). The clusters of one broadcast play
  together, so the time on air is the longest, not the sum. Airtime of a TDP = the same over that
  TDP's clusters only; airtime of a segment = the sum over its broadcasts.
* coverage % = clusters that played fully / clusters the broadcast was sent to, summed over the
  broadcasts that were sent (for a TDP: its clusters only).
* planned = scheduled occurrences due in the period (future ones not counted): the stored broadcasts of
  slots, under the segment they had when they fired, and occurrences of enabled slots that left no row.

Every report carries the ward's name, the period, the time it was made (Asia/Ho_Chi_Minh) and the
audit chain's head (``bản ghi #N, SHA-256 …``) with the result of verifying the chain at that moment.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from radio.logbook import audit
from radio.logbook.asrun import (
    CATEGORY_VI,
    NOT_AIRED_AT_ALL,
    Category,
    Period,
    Reconciliation,
    ReconRow,
    category_vi,
    reconcile,
    zone_view,
)
from radio.logbook.labels import reason_vi
from radio.models import Bulletin, Node, Segment, Zone, utcnow

Format = Literal["pdf", "xlsx", "csv"]
FORMATS: tuple[Format, ...] = ("pdf", "xlsx", "csv")
MEDIA_TYPES = {
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
}
DEFAULT_SITE_NAME = "Phường Thọ Xương"
TITLE = "BÁO CÁO KẾT QUẢ PHÁT THANH"
SUBTITLE = "Hệ thống đài truyền thanh thông minh"
EMERGENCY_KEY, OTHER_KEY = "_emergency", "_other"
EMERGENCY_NAME, OTHER_NAME = "Phát khẩn cấp", "Ngoài chuyên mục"
DUE = frozenset(Category) - {Category.FUTURE, Category.IN_PROGRESS}
# The TDP table's last line adds up the TDPs: a broadcast on three TDPs counts (and its airtime adds) three times.
ZONES_TOTAL = "Tổng (cộng theo từng tổ)"
DOC_NUMBER = "Số:        /BC-UBND"
ZONES_TOTAL_NOTE = ("Dòng «Tổng (cộng theo từng tổ)» cộng số liệu của các tổ: một lượt phát trên nhiều tổ được tính "
                    "ở mỗi tổ, nên thời lượng và số lượt lớn hơn ở bảng theo chuyên mục.")
EMERGENCY_SEGMENT_IDS = ("khan-cap",)  # radio.emergency.EMERGENCY_SEGMENT: the segment of emergency bulletins

SEGMENT_HEADERS = ("Chuyên mục", "Lượt theo lịch", "Lượt đã phát", "Phát đầy đủ", "Thời lượng (phút)",
                   "Độ phủ (%)", "Không phát", "Phát một phần", "Lý do không phát / phát thiếu")
ZONE_HEADERS = ("Tổ dân phố", "Số cụm loa", "Lượt theo lịch", "Lượt đã phát", "Phát đầy đủ", "Thời lượng (phút)",
                "Độ phủ (%)", "Không phát", "Phát một phần", "Lý do không phát / phát thiếu")
MISSED_HEADERS = ("Thời gian", "Chương trình", "Chuyên mục", "Vùng phát", "Kết quả", "Lý do")
BULLETIN_HEADERS = ("Tiêu đề", "Chuyên mục", "Chương trình", "Số lần phát", "Lần đầu", "Lần cuối", "Nội dung")


# data model ------------------------------------------------------------------------------------------
@dataclass
class Line:
    """One row of the segment or TDP table (and the totals)."""

    key: str
    name: str
    nodes: int = 0  # TDP table only
    planned: int = 0
    aired: int = 0  # broadcasts that played somewhere (airtime > 0)
    aired_fully: int = 0
    airtime_s: float = 0.0
    targeted: int = 0
    played_fully: int = 0
    not_aired: int = 0
    partial: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def airtime_min(self) -> float:
        return round(self.airtime_s / 60, 1)

    @property
    def coverage_pct(self) -> float | None:
        return round(100 * self.played_fully / self.targeted, 1) if self.targeted else None

    @property
    def reasons_text(self) -> str:
        return "; ".join(f"{why}: {n}" for why, n in self.reasons.most_common())

    def add(self, category: Category, airtime_s: float, targeted: int, fully: int, planned: bool,
            label: str | None = None) -> None:
        if planned and category in DUE:
            self.planned += 1
        if airtime_s > 0:
            self.aired += 1
        if category == Category.AIRED:
            self.aired_fully += 1
        self.airtime_s += airtime_s
        self.targeted += targeted
        self.played_fully += fully
        if category in NOT_AIRED_AT_ALL:
            self.not_aired += 1
            self.reasons[label or CATEGORY_VI[category]] += 1
        elif category == Category.PARTIAL:
            self.partial += 1
            self.reasons[label or CATEGORY_VI[category]] += 1

    def merge(self, other: Line) -> None:
        for name in ("nodes", "planned", "aired", "aired_fully", "airtime_s", "targeted", "played_fully", "not_aired",
                     "partial"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)


@dataclass
class AiredBulletin:
    title: str
    segment_name: str
    programmes: list[str]  # the slot names (or emergency titles) it aired in
    times: int
    first_at: dt.datetime
    last_at: dt.datetime
    text: str


@dataclass
class Report:
    site_name: str
    site_id: str
    period: Period
    generated_at: dt.datetime
    head: audit.Head
    chain_ok: bool
    chain_reason: str | None
    segments: list[Line]
    zones: list[Line]
    segments_total: Line
    zones_total: Line
    weeks: list[dt.date]  # Mondays
    weekly_minutes: dict[str, list[float]]  # segment name -> minutes per week
    not_fully: list[ReconRow]
    bulletins: list[AiredBulletin]
    counts: dict[str, int]

    @property
    def tz(self) -> dt.tzinfo:
        return self.period.tz

    @property
    def ward_heading(self) -> str:
        return self.site_name.upper()

    @property
    def place(self) -> str:
        for prefix in ("Phường ", "Xã ", "Thị trấn "):
            if self.site_name.startswith(prefix):
                return self.site_name[len(prefix):]
        return self.site_name

    @property
    def generated_local(self) -> dt.datetime:
        return self.generated_at.astimezone(self.tz)

    @property
    def place_date(self) -> str:
        d = self.generated_local
        return f"{self.place}, ngày {d:%d} tháng {d:%m} năm {d:%Y}"

    def header_lines(self) -> list[tuple[str, str]]:
        """The evidence block: what, where, which period, when made, and the integrity reference."""
        chain = "toàn vẹn" if self.chain_ok else f"PHÁT HIỆN SAI LỆCH: {self.chain_reason}"
        return [
            ("Đơn vị", f"Ủy ban nhân dân {self.site_name}"),
            ("Báo cáo", f"{TITLE.capitalize()} – {SUBTITLE.lower()}"),
            ("Kỳ báo cáo", self.period.label_vi),
            ("Thời điểm lập", f"{self.generated_local:%d/%m/%Y %H:%M} (giờ Việt Nam, {self.tz})"),
            ("Nhật ký kiểm toán", f"bản ghi #{self.head.last_id}, SHA-256 {self.head.hash}"),
            ("Kiểm tra chuỗi nhật ký", chain),
        ]


def site_name_of(settings: Any) -> str:
    return str(getattr(settings, "site_name", None) or DEFAULT_SITE_NAME)


def build_report(session: Session, settings: Any, first: dt.date | str, last: dt.date | str, *,
                 now: dt.datetime | None = None) -> Report:
    """Everything a report shows, computed once; the writers only lay it out."""
    period = Period.parse(first, last, settings.tz)
    now = now or utcnow()
    recon = reconcile(session, period, now=now, grace_s=getattr(settings, "misfire_grace_s", 300), with_text=True)
    _emergencies_in_their_segment(session, recon)
    segments, segments_total = _by_segment(session, recon)
    zones, zones_total = _by_zone(session, recon)
    weeks, weekly = _weekly(recon, [s.name for s in segments])
    result = audit.verify(session)
    return Report(
        site_name=site_name_of(settings), site_id=getattr(settings, "site_id", ""), period=period, generated_at=now,
        head=result.head or audit.head(session), chain_ok=result.ok, chain_reason=result.reason_vi,
        segments=segments, zones=zones, segments_total=segments_total, zones_total=zones_total, weeks=weeks,
        weekly_minutes=weekly, not_fully=[r for r in recon.rows if r.category in NOT_AIRED_AT_ALL | {Category.PARTIAL}],
        bulletins=_bulletins(session, recon), counts=recon.counts,
    )


def _emergencies_in_their_segment(session: Session, recon: Reconciliation) -> None:
    """Emergencies stored without a segment go to the ward's emergency segment (Khẩn cấp) when it exists,
    so the report does not show an empty «Khẩn cấp» line next to a separate «Phát khẩn cấp» one."""
    segments = list(session.scalars(select(Segment).order_by(Segment.id)))
    found = next((s for s in segments if s.id in EMERGENCY_SEGMENT_IDS), None) or next(
        (s for s in segments if unicodedata.normalize("NFC", s.name).strip().casefold() == "khẩn cấp"), None)
    if found is None:
        return
    for row in recon.rows:
        if row.kind == "emergency" and not row.segment_id:
            row.segment_id, row.segment_name = found.id, found.name


def _segment_key(row: ReconRow) -> tuple[str, str | None]:
    if row.segment_id:
        return row.segment_id, row.segment_name
    return (EMERGENCY_KEY, EMERGENCY_NAME) if row.kind == "emergency" else (OTHER_KEY, OTHER_NAME)


def _by_segment(session: Session, recon: Reconciliation) -> tuple[list[Line], Line]:
    lines = {s.id: Line(s.id, s.name) for s in session.scalars(select(Segment).order_by(Segment.id))}
    for row in recon.rows:
        key, name = _segment_key(row)
        line = lines.setdefault(key, Line(key, name or key))
        line.add(row.category, row.airtime_s, row.targeted, row.played_fully, row.planned, row.category_vi)
    total = Line("_total", "Tổng cộng")
    for line in lines.values():
        total.merge(line)
    return list(lines.values()), total


def _by_zone(session: Session, recon: Reconciliation) -> tuple[list[Line], Line]:
    zones = list(session.scalars(select(Zone).order_by(Zone.id)))
    counts = Counter(node.zone_id for node in session.scalars(select(Node)))
    lines = []
    for zone in zones:
        line = Line(zone.id, zone.name, nodes=counts.get(zone.id, 0))
        for row in recon.rows:
            if not row.targets_zone(zone.id):
                continue
            category, reason, seen = zone_view(row, zone.id)
            label = category_vi(category, reason)
            if seen is None:
                line.add(category, 0.0, 0, 0, row.planned, label)
            else:
                line.add(category, seen.airtime_s, seen.targeted, seen.played_fully, row.planned, label)
        lines.append(line)
    total = Line("_total", ZONES_TOTAL)
    for line in lines:
        total.merge(line)
    return lines, total


def _monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def _weekly(recon: Reconciliation, order: Sequence[str]) -> tuple[list[dt.date], dict[str, list[float]]]:
    period = recon.period
    weeks: list[dt.date] = []
    week = _monday(period.first)
    while week <= period.last:
        weeks.append(week)
        week += dt.timedelta(weeks=1)
    index = {w: i for i, w in enumerate(weeks)}
    minutes: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(weeks))
    for row in recon.rows:
        if row.airtime_s <= 0:
            continue
        _key, name = _segment_key(row)
        week = _monday(row.scheduled_at.astimezone(period.tz).date())
        minutes[name or _key][index[week]] += row.airtime_s / 60
    ordered = {name: [round(m, 1) for m in minutes[name]] for name in order if name in minutes}
    ordered.update({name: [round(m, 1) for m in values] for name, values in minutes.items() if name not in ordered})
    return weeks, ordered


def _bulletins(session: Session, recon: Reconciliation) -> list[AiredBulletin]:
    """Each bulletin that aired, with its text; a spoken text matching no current bulletin is listed as aired."""
    current = [(b.title, b.text.strip()) for b in session.scalars(select(Bulletin).order_by(Bulletin.id)) if b.text]
    found: dict[tuple[str, str], AiredBulletin] = {}
    for row in recon.rows:
        b = row.broadcast
        if b is None or row.airtime_s <= 0 or not b.text:
            continue
        _seg, seg_name = _segment_key(row)
        parts = [(title, text) for title, text in current if text and text in b.text] or [(b.title, b.text.strip())]
        for title, text in parts:
            item = found.get((title, text))
            if item is None:
                found[(title, text)] = AiredBulletin(title=title, segment_name=seg_name or "", programmes=[b.title],
                                                     times=1, first_at=b.scheduled_at, last_at=b.scheduled_at,
                                                     text=text)
                continue
            item.times += 1
            item.first_at, item.last_at = min(item.first_at, b.scheduled_at), max(item.last_at, b.scheduled_at)
            if b.title not in item.programmes:
                item.programmes.append(b.title)
    return sorted(found.values(), key=lambda a: (a.first_at, a.title))


# table rows shared by the writers ---------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _line_cells(line: Line, with_nodes: bool) -> list[Any]:
    cells: list[Any] = [line.name]
    if with_nodes:
        cells.append(line.nodes)
    cells += [line.planned, line.aired, line.aired_fully, line.airtime_min,
              line.coverage_pct if line.coverage_pct is not None else "—", line.not_aired, line.partial,
              line.reasons_text]
    return cells


def _zone_names(report: Report, row: ReconRow) -> str:
    if row.whole_ward:
        return "Toàn phường"
    names = {z.key: z.name for z in report.zones}
    if row.broadcast is not None and row.broadcast.deliveries and not row.planned:
        zones = sorted({d.zone_id for d in row.broadcast.deliveries})
    else:
        zones = row.reach_zones
    return ", ".join(names.get(z, z) for z in zones)


def _missed_cells(report: Report, row: ReconRow) -> list[Any]:
    _key, seg = _segment_key(row)
    return [row.local_time, row.title, seg or "", _zone_names(report, row), row.category_vi,
            reason_vi(row.reason, report.tz, row.scheduled_at)]


def _bulletin_cells(report: Report, b: AiredBulletin) -> list[Any]:
    return [b.title, b.segment_name, ", ".join(b.programmes), b.times, f"{b.first_at.astimezone(report.tz):%d/%m/%Y %H:%M}",
            f"{b.last_at.astimezone(report.tz):%d/%m/%Y %H:%M}", b.text.strip()]


def _week_label(week: dt.date) -> str:
    return f"{week:%d/%m}"


def summary_lines(report: Report) -> list[tuple[str, int]]:
    labels = {c: CATEGORY_VI[c] for c in Category}
    if any(r.category_vi != CATEGORY_VI[r.category] for r in report.not_fully if r.category == Category.PREEMPTED):
        labels[Category.PREEMPTED] = "bị ngắt do phát khẩn cấp hoặc bản tin ưu tiên"
    return [(labels[Category(c)].capitalize(), n) for c, n in report.counts.items() if n]


# chart ------------------------------------------------------------------------------------------------
def weekly_chart_png(report: Report, *, width_in: float = 10.0, height_in: float = 4.2, dpi: int = 150) -> bytes:
    """A stacked bar chart of airtime per week by segment, as PNG (matplotlib, no GUI backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(report.weeks)))
    bottom = [0.0] * len(xs)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
              "#17becf"]
    for i, (name, values) in enumerate(report.weekly_minutes.items()):
        ax.bar(xs, values, bottom=bottom, label=name, color=colors[i % len(colors)], width=0.8)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    if any(bottom):
        ax.set_ylim(0, max(bottom) * 1.12)  # room above the tallest bar: it must not touch the frame
    step = max(1, len(xs) // 20)
    ax.set_xticks(xs[::step], [_week_label(w) for w in report.weeks[::step]], rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.6, max(len(xs), 1) - 0.4)
    ax.set_ylabel("Phút")
    ax.set_xlabel("Tuần (bắt đầu từ thứ Hai)")
    ax.set_title("Thời lượng phát theo tuần và chuyên mục", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    if report.weekly_minutes:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    else:
        ax.text(0.5, 0.5, "Không có lượt phát nào trong kỳ", transform=ax.transAxes, ha="center", va="center")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# file names -------------------------------------------------------------------------------------------
def file_name(report_or_period: Report | Period, fmt: Format, *, ascii_only: bool = False) -> str:
    period = report_or_period.period if isinstance(report_or_period, Report) else report_or_period
    if ascii_only:
        return f"bao-cao-phat-thanh_{period.first:%Y-%m-%d}_{period.last:%Y-%m-%d}.{fmt}"
    return f"Báo cáo phát thanh {period.first:%d-%m-%Y} đến {period.last:%d-%m-%Y}.{fmt}"


def content_disposition(report_or_period: Report | Period, fmt: Format) -> str:
    """RFC 6266: an ASCII fallback name and the Vietnamese name as ``filename*`` (RFC 5987)."""
    fallback = file_name(report_or_period, fmt, ascii_only=True)
    utf8 = quote(file_name(report_or_period, fmt), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{utf8}"


# CSV --------------------------------------------------------------------------------------------------
def write_csv(report: Report, out: IO[str]) -> None:
    """Sections one under another, each with a title row; write to a file opened with ``encoding="utf-8-sig"``."""
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow([f"ỦY BAN NHÂN DÂN {report.ward_heading}"])
    w.writerow([TITLE])
    for label, value in report.header_lines():
        w.writerow([label, value])
    w.writerow([])
    w.writerow(["TỔNG HỢP KẾT QUẢ"])
    for label, n in summary_lines(report):
        w.writerow([label, n])
    w.writerow([])
    w.writerow(["THEO CHUYÊN MỤC"])
    w.writerow(SEGMENT_HEADERS)
    for line in [*report.segments, report.segments_total]:
        w.writerow(_line_cells(line, with_nodes=False))
    w.writerow([])
    w.writerow(["THEO TỔ DÂN PHỐ"])
    w.writerow(ZONE_HEADERS)
    for line in [*report.zones, report.zones_total]:
        w.writerow(_line_cells(line, with_nodes=True))
    w.writerow([ZONES_TOTAL_NOTE])
    w.writerow([])
    w.writerow(["THỜI LƯỢNG PHÁT THEO TUẦN (PHÚT)"])
    w.writerow(["Tuần bắt đầu", *report.weekly_minutes.keys()])
    for i, week in enumerate(report.weeks):
        w.writerow([f"{week:%d/%m/%Y}", *(values[i] for values in report.weekly_minutes.values())])
    w.writerow([])
    w.writerow(["CÁC LƯỢT KHÔNG PHÁT ĐẦY ĐỦ"])
    w.writerow(MISSED_HEADERS)
    for row in report.not_fully:
        w.writerow(_missed_cells(report, row))
    w.writerow([])
    w.writerow(["DANH SÁCH BẢN TIN ĐÃ PHÁT"])
    w.writerow(BULLETIN_HEADERS)
    for b in report.bulletins:
        w.writerow(_bulletin_cells(report, b))


def csv_bytes(report: Report) -> bytes:
    """UTF-8 with a byte-order mark, so Excel shows the Vietnamese letters correctly."""
    buf = io.StringIO()
    write_csv(report, buf)
    return buf.getvalue().encode("utf-8-sig")


# XLSX -------------------------------------------------------------------------------------------------
def xlsx_bytes(report: Report) -> bytes:
    """A workbook: summary with the evidence header, a sheet per table, and a native weekly bar chart."""
    from openpyxl import Workbook  # type: ignore[import-untyped]
    from openpyxl.chart import BarChart, Reference  # type: ignore[import-untyped]
    from openpyxl.styles import Alignment, Font, PatternFill  # type: ignore[import-untyped]
    from openpyxl.utils import get_column_letter  # type: ignore[import-untyped]

    bold = Font(bold=True)
    head_fill = PatternFill("solid", fgColor="DDE5F0")
    wrap = Alignment(wrap_text=True, vertical="top")

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Tổng hợp"
    ws.append([f"ỦY BAN NHÂN DÂN {report.ward_heading}"])
    ws.append([TITLE])
    ws.append([SUBTITLE])
    ws.append([report.period.label_vi])
    ws["A1"].font = bold
    ws["A2"].font = Font(bold=True, size=14)
    ws.append([])
    for label, value in report.header_lines():
        ws.append([label, value])
        ws.cell(ws.max_row, 1).font = bold
    ws.append([])
    ws.append(["Tổng hợp kết quả", "Số lượt"])
    ws.cell(ws.max_row, 1).font = bold
    ws.cell(ws.max_row, 2).font = bold
    for label, n in summary_lines(report):
        ws.append([label, n])
    ws.column_dimensions["A"].width = 28
    ws.column_dimensions["B"].width = 100

    def table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]], widths: Sequence[float],
              total_last: bool = False) -> Any:
        sheet = wb.create_sheet(title)
        sheet.append([f"{TITLE} – {report.site_name}"])
        sheet.append([report.period.label_vi])
        sheet["A1"].font = bold
        sheet.append(list(headers))
        for col in range(1, len(headers) + 1):
            cell = sheet.cell(3, col)
            cell.font, cell.fill, cell.alignment = bold, head_fill, Alignment(wrap_text=True, vertical="center")
        for row in rows:
            sheet.append(list(row))
        if total_last and sheet.max_row > 3:
            for col in range(1, len(headers) + 1):
                sheet.cell(sheet.max_row, col).font = bold
        for i, width in enumerate(widths, start=1):
            sheet.column_dimensions[get_column_letter(i)].width = width
        sheet.freeze_panes = "B4"
        return sheet

    table("Theo chuyên mục", SEGMENT_HEADERS,
          [_line_cells(line, False) for line in [*report.segments, report.segments_total]],
          (30, 12, 12, 12, 14, 11, 11, 12, 50), total_last=True)
    table("Theo tổ dân phố", ZONE_HEADERS,
          [_line_cells(line, True) for line in [*report.zones, report.zones_total]],
          (24, 10, 12, 12, 12, 14, 11, 11, 12, 50), total_last=True)
    names = list(report.weekly_minutes)
    weekly = table("Theo tuần", ["Tuần bắt đầu", *names],
                   [[week, *(report.weekly_minutes[n][i] for n in names)] for i, week in enumerate(report.weeks)],
                   (14, *([18] * len(names))))
    for r in range(4, weekly.max_row + 1):
        weekly.cell(r, 1).number_format = "DD/MM/YYYY"
    if names and report.weeks:
        chart = BarChart()
        chart.type, chart.grouping, chart.overlap = "col", "stacked", 100
        chart.title = "Thời lượng phát theo tuần và chuyên mục (phút)"
        chart.y_axis.title, chart.x_axis.title = "Phút", "Tuần"
        data = Reference(weekly, min_col=2, max_col=1 + len(names), min_row=3, max_row=weekly.max_row)
        cats = Reference(weekly, min_col=1, min_row=4, max_row=weekly.max_row)
        chart.add_data(data, titles_from_data=True)
        chart.set_categories(cats)
        chart.width, chart.height = 26, 12
        weekly.add_chart(chart, f"{get_column_letter(len(names) + 3)}3")
    missed = table("Không phát đầy đủ", MISSED_HEADERS, [_missed_cells(report, r) for r in report.not_fully],
                   (17, 36, 22, 24, 20, 70))
    for row in missed.iter_rows(min_row=4):
        for cell in row:
            cell.alignment = wrap
    aired = table("Bản tin đã phát", BULLETIN_HEADERS, [_bulletin_cells(report, b) for b in report.bulletins],
                  (36, 20, 30, 10, 17, 17, 110))
    for row in aired.iter_rows(min_row=4):
        for cell in row:
            cell.alignment = wrap
    wb.properties.title = f"{TITLE} – {report.site_name} – {report.period.label_vi}"
    wb.properties.creator = "radio"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# PDF --------------------------------------------------------------------------------------------------
def font_dir() -> Path:
    """DejaVu Sans, shipped with matplotlib: every Vietnamese letter, free to embed."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _nfc(value: Any) -> str:
    """Precomposed letters (ệ, not e + ̣ + ̂): the PDF has no shaping engine for combining marks."""
    return unicodedata.normalize("NFC", "" if value is None else str(value))


def pdf_bytes(report: Report) -> bytes:
    """An A4 report with the Vietnamese administrative header, tables, the weekly chart and the texts."""
    from fpdf import FPDF
    from fpdf.enums import Align, TableCellFillMode, XPos, YPos
    from fpdf.fonts import FontFace

    class Pdf(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("DejaVu", "", 7)
            self.set_text_color(90, 90, 90)
            self.cell(0, 5, _nfc(f"{TITLE.capitalize()} – {report.site_name} – {report.period.label_vi}"),
                      align=Align.L)
            self.set_x(self.l_margin)
            self.cell(0, 5, f"Trang {self.page_no()}/{{nb}}", align=Align.R)
            self.set_text_color(0, 0, 0)

    pdf = Pdf(orientation="portrait", unit="mm", format="A4")
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=16)
    fonts = font_dir()
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.add_font("DejaVu", "I", str(fonts / "DejaVuSans-Oblique.ttf"))
    pdf.add_font("DejaVu", "BI", str(fonts / "DejaVuSans-BoldOblique.ttf"))
    pdf.set_title(_nfc(f"{TITLE} – {report.site_name} – {report.period.label_vi}"))
    pdf.set_author(_nfc(f"Ủy ban nhân dân {report.site_name}"))
    pdf.set_creator("radio")
    pdf.set_creation_date(report.generated_at)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin

    # Administrative header: the issuing body on the left, the national motto on the right.
    top = pdf.get_y()
    left_w, right_w = width * 0.42, width * 0.58
    pdf.set_font("DejaVu", "B", 10)
    pdf.multi_cell(left_w, 5, _nfc(f"ỦY BAN NHÂN DÂN\n{report.ward_heading}"), align=Align.C)
    pdf.set_xy(pdf.l_margin + left_w, top)
    pdf.multi_cell(right_w, 5, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", align=Align.C,
                   new_x=XPos.LEFT, new_y=YPos.NEXT)
    pdf.set_x(pdf.l_margin + left_w)
    pdf.set_font("DejaVu", "B", 10)
    pdf.cell(right_w, 5, "Độc lập - Tự do - Hạnh phúc", align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    y_rule = pdf.get_y()
    pdf.line(pdf.l_margin + left_w / 2 - 12, top + 11.5, pdf.l_margin + left_w / 2 + 12, top + 11.5)
    pdf.line(pdf.l_margin + left_w + right_w / 2 - 27, y_rule, pdf.l_margin + left_w + right_w / 2 + 27, y_rule)
    pdf.ln(3)
    pdf.set_font("DejaVu", "", 10)
    pdf.cell(left_w, 5, _nfc(DOC_NUMBER), align=Align.C)  # the number is written in when the report is issued
    pdf.set_font("DejaVu", "I", 10)
    pdf.set_x(pdf.l_margin + left_w)
    pdf.cell(right_w, 5, _nfc(report.place_date), align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(6)
    pdf.set_font("DejaVu", "B", 15)
    pdf.cell(width, 8, TITLE, align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "B", 11)
    pdf.cell(width, 6, SUBTITLE, align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "I", 10)
    pdf.cell(width, 6, _nfc(report.period.label_vi), align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)

    grey = (235, 239, 245)
    headings = FontFace(emphasis="BOLD", fill_color=grey)

    def kv_table(rows: Sequence[tuple[str, Any]], widths: tuple[float, float] = (45, 135)) -> None:
        pdf.set_font("DejaVu", "", 8.5)
        with pdf.table(col_widths=widths, first_row_as_headings=False, text_align=(Align.L, Align.L),
                       line_height=4.6, padding=1.2, width=width) as t:
            for label, value in rows:
                r = t.row()
                r.cell(_nfc(label), style=FontFace(emphasis="BOLD"))
                r.cell(_nfc(value))

    def heading(text_: str, keep_mm: float = 30) -> None:
        """A section heading, on a new page unless ``keep_mm`` of what follows fits under it (never stranded)."""
        if pdf.get_y() + 11 + keep_mm > pdf.page_break_trigger:
            pdf.add_page()
        pdf.ln(3)
        pdf.set_font("DejaVu", "B", 11)
        pdf.cell(width, 7, _nfc(text_), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(1)

    def grid(headers: Sequence[str], rows: Sequence[Sequence[Any]], widths: Sequence[float],
             align: Sequence[str], bold_last: bool = False, size: float = 7.5) -> None:
        pdf.set_font("DejaVu", "", size)
        with pdf.table(col_widths=tuple(widths), text_align=tuple(align), line_height=size * 0.5,
                       headings_style=headings, padding=1, width=width, repeat_headings=1,
                       cell_fill_color=(248, 249, 251), cell_fill_mode=TableCellFillMode.ROWS) as t:
            head = t.row()
            for h in headers:
                head.cell(_nfc(h), align=Align.C)
            for i, values in enumerate(rows):
                r = t.row()
                style = FontFace(emphasis="BOLD") if bold_last and i == len(rows) - 1 else None
                for v in values:
                    r.cell(_nfc(v), style=style)

    heading("I. THÔNG TIN BÁO CÁO")
    kv_table(report.header_lines())
    heading("II. TỔNG HỢP KẾT QUẢ THEO LỊCH PHÁT")
    summary = summary_lines(report) or [("Không có lượt phát nào trong kỳ", 0)]
    kv_table([(label, str(n)) for label, n in summary], widths=(60, 120))

    num = "R"
    table_keep = 45  # the heading row (three lines) and two rows of the table
    heading("III. KẾT QUẢ THEO CHUYÊN MỤC", table_keep)
    grid(SEGMENT_HEADERS, [_line_cells(x, False) for x in [*report.segments, report.segments_total]],
         (34, 15, 15, 15, 17, 14, 15, 15, 40), ("L", num, num, num, num, num, num, num, "L"), bold_last=True)
    heading("IV. KẾT QUẢ THEO TỔ DÂN PHỐ", table_keep)
    grid(ZONE_HEADERS, [_line_cells(x, True) for x in [*report.zones, report.zones_total]],
         (28, 12, 15, 15, 15, 17, 14, 14, 14, 36), ("L", num, num, num, num, num, num, num, num, "L"), bold_last=True)
    pdf.set_font("DejaVu", "I", 7.5)
    pdf.multi_cell(width, 4, _nfc(ZONES_TOTAL_NOTE), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    img_h = width * 4.2 / 10
    heading("V. THỜI LƯỢNG PHÁT THEO TUẦN", img_h)
    png = weekly_chart_png(report)
    pdf.image(io.BytesIO(png), x=pdf.l_margin, w=width)
    pdf.ln(2)

    heading("VI. CÁC LƯỢT KHÔNG PHÁT ĐẦY ĐỦ", table_keep)
    if report.not_fully:
        grid(MISSED_HEADERS, [_missed_cells(report, r) for r in report.not_fully], (22, 36, 24, 24, 22, 52),
             ("L",) * 6, size=7)
    else:
        pdf.set_font("DejaVu", "", 9)
        pdf.cell(width, 6, "Mọi lượt phát theo lịch trong kỳ đều được phát đầy đủ.", new_x=XPos.LMARGIN,
                 new_y=YPos.NEXT)

    heading("VII. DANH SÁCH BẢN TIN ĐÃ PHÁT")
    if not report.bulletins:
        pdf.set_font("DejaVu", "", 9)
        pdf.cell(width, 6, "Không có bản tin nào được phát trong kỳ.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for n, b in enumerate(report.bulletins, start=1):
        if pdf.get_y() > pdf.h - 40:
            pdf.add_page()
        pdf.set_font("DejaVu", "B", 9.5)
        pdf.multi_cell(width, 5, _nfc(f"{n}. {b.title}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("DejaVu", "I", 8)
        pdf.multi_cell(width, 4.5, _nfc(
            f"Chuyên mục: {b.segment_name or '—'} · Chương trình: {', '.join(b.programmes)} · Số lần phát: {b.times} · "
            f"Lần đầu: {b.first_at.astimezone(report.tz):%d/%m/%Y %H:%M} · "
            f"Lần cuối: {b.last_at.astimezone(report.tz):%d/%m/%Y %H:%M}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("DejaVu", "", 8.5)
        pdf.multi_cell(width, 4.4, _nfc(b.text.strip()), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(2)

    heading("VIII. XÁC NHẬN")
    pdf.set_font("DejaVu", "", 8.5)
    pdf.multi_cell(width, 4.5, _nfc(
        "Báo cáo được lập tự động từ nhật ký phát sóng của hệ thống. Mã SHA-256 ở mục I là mã đầu chuỗi nhật ký "
        "kiểm toán tại thời điểm lập; đối chiếu bằng lệnh «radio audit verify --anchor "
        f"{report.head.last_id}:<mã>» để chứng minh nhật ký không bị sửa sau thời điểm này."),
        new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font("DejaVu", "B", 10)
    half = width / 2
    y = pdf.get_y()
    pdf.set_x(pdf.l_margin + half)
    pdf.multi_cell(half, 5, "NGƯỜI LẬP BÁO CÁO\n", align=Align.C)
    pdf.set_xy(pdf.l_margin + half, y + 5)
    pdf.set_font("DejaVu", "I", 8.5)
    pdf.cell(half, 5, "(Ký, ghi rõ họ tên)", align=Align.C, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


# one entry point for the CLI and the API --------------------------------------------------------------
def render(report: Report, fmt: str) -> bytes:
    if fmt == "pdf":
        return pdf_bytes(report)
    if fmt == "xlsx":
        return xlsx_bytes(report)
    if fmt == "csv":
        return csv_bytes(report)
    raise ValueError(f"định dạng không hỗ trợ {fmt!r}; chọn pdf, xlsx hoặc csv")
