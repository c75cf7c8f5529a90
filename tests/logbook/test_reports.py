"""Reports as evidence: the numbers, and the CSV, XLSX and PDF files read back (the PDF rendered with poppler).

The PDF check turns the pages into PNG with ``pdftoppm`` and extracts the text with ``pdftotext`` to see
that the Vietnamese letters survive (both from Debian's poppler-utils, which CI installs).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import pytest
from sqlalchemy.orm import Session, sessionmaker

from radio.cli import main
from radio.db import make_engine, migrate, session_factory, transaction
from radio.logbook import audit, reports, sample
from radio.settings import Settings
from tests.logbook.conftest import seeded


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} (poppler-utils) is not installed"
        if os.environ.get("RADIO_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    with seeded(f"sqlite:///{tmp_path_factory.mktemp('reports') / 'r.db'}") as factory:
        yield factory


@pytest.fixture(scope="module")
def report(factory: sessionmaker[Session]) -> reports.Report:
    settings = Settings(data_dir=Path("unused"))
    with factory() as s:
        return reports.build_report(s, settings, sample.FIRST, sample.LAST, now=sample.NOW)


def line(lines: list[reports.Line], key: str) -> reports.Line:
    return next(x for x in lines if x.key == key)


def test_numbers_per_segment(report: reports.Report) -> None:
    """Per segment: planned due occurrences, aired, aired fully, minutes, coverage %, not aired and why."""
    cds = line(report.segments, "cds")
    assert (cds.planned, cds.aired, cds.aired_fully, cds.not_aired, cds.partial) == (8, 6, 3, 3, 2)
    assert cds.airtime_min == round((5 * 95 + 155) / 60, 1)  # 4/9, 5/9, 10/9, 11/9, 12/9 + 13/9 with its relay
    assert cds.coverage_pct == round(100 * (6 + 5 + 6 + 4 + 6 + 5) / 36, 1)
    assert cds.reasons == {"bị lỡ": 2, "phát một phần": 2, "bị ngắt do phát khẩn cấp": 1}
    cchc = line(report.segments, "cchc")
    assert (cchc.planned, cchc.aired, cchc.coverage_pct, dict(cchc.reasons)) == (1, 0, None, {"chưa được phê duyệt": 1})
    emergency = line(report.segments, "khan-cap")  # the ward's Khẩn cấp segment, not a separate line
    assert (emergency.planned, emergency.aired, emergency.name) == (0, 1, "Khẩn cấp")
    assert reports.EMERGENCY_KEY not in {x.key for x in report.segments}
    assert report.segments_total.planned == 13 and report.segments_total.aired == 10


def test_numbers_per_tdp(report: reports.Report) -> None:
    """Per TDP: its clusters only — TDP 4 partly lost 13/09, TDP 3's offline cluster missed 5/09."""
    tdp4 = line(report.zones, "tdp-4")
    assert (tdp4.nodes, tdp4.planned, tdp4.aired, tdp4.aired_fully, tdp4.partial) == (1, 9, 6, 5, 1)
    assert tdp4.airtime_min == round((5 * 95 + 95 + 12) / 60, 1)
    tdp3 = line(report.zones, "tdp-3")
    assert tdp3.coverage_pct == round(100 * 11 / 12, 1) and tdp3.reasons["phát một phần"] == 1
    tdp1 = line(report.zones, "tdp-1")
    assert tdp1.reasons["bị ngắt do phát khẩn cấp"] == 1 and tdp1.reasons["lỗi"] == 1
    assert report.zones_total.nodes == 6


def test_weekly_airtime_and_lists(report: reports.Report) -> None:
    """Weeks start on Monday; minutes per segment per week; the missed list and the aired bulletins with text."""
    assert [w.isoformat() for w in report.weeks] == ["2024-09-02", "2024-09-09"]
    assert report.weekly_minutes["Chuyển đổi số"] == [round(2 * 95 / 60, 1), round((3 * 95 + 155) / 60, 1)]
    assert report.weekly_minutes["Khẩn cấp"] == [0.0, 0.5] and "Phát khẩn cấp" not in report.weekly_minutes
    assert {r.category_vi for r in report.not_fully} == {"phát một phần", "bị lỡ", "chưa được phê duyệt", "lỗi",
                                                          "bị ngắt do phát khẩn cấp"}
    titles = {b.title: b for b in report.bulletins}
    dvc = titles["Hướng dẫn thực hiện thủ tục hành chính trên Cổng dịch vụ công"]
    assert dvc.times == 6 and dvc.text == sample.TEXT_DVC and dvc.programmes == ["Bản tin sáng ngày thường"]
    assert "Thông báo khẩn: mưa lớn, ngập ngầm tràn" in titles  # matches no bulletin: listed as aired
    assert report.chain_ok and report.head.last_id == 8


def test_csv_is_utf8_with_bom_and_reads_back(report: reports.Report) -> None:
    """The CSV starts with a BOM (Excel), holds the header block and every table with Vietnamese headings."""
    data = reports.render(report, "csv")
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows[0] == ["ỦY BAN NHÂN DÂN PHƯỜNG THỌ XƯƠNG"] and rows[1] == [reports.TITLE]
    assert ["Kỳ báo cáo", "Từ ngày 02/09/2024 đến ngày 15/09/2024"] in rows
    assert list(reports.ZONE_HEADERS) in rows and list(reports.SEGMENT_HEADERS) in rows
    tdp4 = next(r for r in rows if r and r[0] == "Tổ dân phố số 4")
    assert tdp4[1:7] == ["1", "9", "6", "5", str(line(report.zones, "tdp-4").airtime_min), "83.3"]
    assert any(r and r[0] == "DANH SÁCH BẢN TIN ĐÃ PHÁT" for r in rows)
    assert any(sample.TEXT_MOT_CUA in r for r in rows)


def test_xlsx_reads_back_with_openpyxl(report: reports.Report, tmp_path: Path) -> None:
    """A sheet per table, Vietnamese headers, the numbers, and a native weekly bar chart."""
    from openpyxl import load_workbook  # type: ignore[import-untyped]

    path = tmp_path / "r.xlsx"
    path.write_bytes(reports.render(report, "xlsx"))
    wb = load_workbook(path)
    assert wb.sheetnames == ["Tổng hợp", "Theo chuyên mục", "Theo tổ dân phố", "Theo tuần", "Không phát đầy đủ",
                             "Bản tin đã phát"]
    summary = wb["Tổng hợp"]
    assert summary["A1"].value == "ỦY BAN NHÂN DÂN PHƯỜNG THỌ XƯƠNG" and summary["A2"].value == reports.TITLE
    zones = wb["Theo tổ dân phố"]
    assert [c.value for c in zones[3]] == list(reports.ZONE_HEADERS)
    values = {row[0]: row for row in zones.iter_rows(min_row=4, values_only=True)}
    assert values["Tổ dân phố số 4"][1:7] == (1, 9, 6, 5, line(report.zones, "tdp-4").airtime_min, 83.3)
    assert values["Tổng (cộng theo từng tổ)"][1] == 6
    weekly = wb["Theo tuần"]
    assert len(weekly._charts) == 1  # noqa: SLF001 - openpyxl keeps charts there
    aired = wb["Bản tin đã phát"]
    assert any(row[-1] == sample.TEXT_DVC for row in aired.iter_rows(min_row=4, values_only=True))


def test_pdf_renders_vietnamese_text(report: reports.Report, tmp_path: Path) -> None:
    """pdftotext finds the headings with their diacritics; pdftoppm renders every page; DejaVu Sans is embedded."""
    pdftotext, pdftoppm = need("pdftotext"), need("pdftoppm")
    path = tmp_path / "bao-cao.pdf"
    path.write_bytes(reports.render(report, "pdf"))
    text = subprocess.run([pdftotext, "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout
    for expected in ("ỦY BAN NHÂN DÂN", "PHƯỜNG THỌ XƯƠNG", "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
                     "Độc lập - Tự do - Hạnh phúc", "BÁO CÁO KẾT QUẢ PHÁT THANH",
                     "Từ ngày 02/09/2024 đến ngày 15/09/2024", "Thọ Xương, ngày 13 tháng 09 năm 2024",
                     "KẾT QUẢ THEO TỔ DÂN PHỐ", "Tổ dân phố số 1", "Chuyển đổi số", "Bị ngắt do phát khẩn cấp",
                     "DANH SÁCH BẢN TIN ĐÃ PHÁT", "Đoàn thanh niên phường Thọ Xương", report.head.hash):
        assert expected in text, expected
    subprocess.run([pdftoppm, "-r", "50", "-png", str(path), str(tmp_path / "trang")], check=True)
    pages = sorted(tmp_path.glob("trang-*.png"))
    assert len(pages) >= 2
    from PIL import Image

    with Image.open(pages[0]) as first:
        assert first.size[0] < first.size[1]  # A4 portrait
        darkest, lightest = first.convert("L").getextrema()
        assert int(darkest) < 64 and int(lightest) > 240  # type: ignore[arg-type]  # dark text on white, not blank
    fonts = shutil.which("pdffonts")
    if fonts:
        listing = subprocess.run([fonts, str(path)], check=True, capture_output=True, text=True).stdout
        assert "DejaVuSans" in listing and " yes " in listing  # embedded subset


def test_chart_is_a_png(report: reports.Report) -> None:
    """The weekly chart is drawn without a display (Agg canvas) as a PNG."""
    png = reports.weekly_chart_png(report, dpi=50)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000


def test_empty_period_still_makes_every_format(factory: sessionmaker[Session]) -> None:
    """A period with nothing aired gives valid files saying so, not an error."""
    settings = Settings(data_dir=Path("unused"))
    with factory() as s:
        empty = reports.build_report(s, settings, "2023-01-01", "2023-01-31", now=sample.NOW)
    assert empty.bulletins == [] and empty.not_fully == [] and empty.weekly_minutes == {}
    for fmt in reports.FORMATS:
        assert len(reports.render(empty, fmt)) > 500


def test_site_name_comes_from_settings(factory: sessionmaker[Session]) -> None:
    """The heading and the place-date line follow settings.site_name when the field exists."""
    settings = SimpleNamespace(tz=sample.TZ, site_id="hoang-van-thu", site_name="Phường Hoàng Văn Thụ",
                               misfire_grace_s=300)
    with factory() as s:
        other = reports.build_report(s, settings, sample.FIRST, sample.LAST, now=sample.NOW)
    assert other.ward_heading == "PHƯỜNG HOÀNG VĂN THỤ"
    assert other.place_date == "Hoàng Văn Thụ, ngày 13 tháng 09 năm 2024"


def test_report_shows_a_broken_chain(tmp_path: Path) -> None:
    """If the audit chain is broken when the report is made, the header block says so."""
    engine = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    migrate(engine)
    factory = session_factory(engine)
    with transaction(factory) as s:
        sample.seed(s)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
        conn.exec_driver_sql("UPDATE audit_log SET actor = 'ke-gian' WHERE id = 2")
    with factory() as s:
        broken = reports.build_report(s, Settings(data_dir=tmp_path), sample.FIRST, sample.LAST, now=sample.NOW)
    engine.dispose()
    assert not broken.chain_ok
    assert dict(broken.header_lines())["Kiểm tra chuỗi nhật ký"].startswith("PHÁT HIỆN SAI LỆCH: bản ghi 2 đã bị sửa")


def test_file_names_and_content_disposition(report: reports.Report) -> None:
    """An ASCII fallback name plus the Vietnamese name encoded per RFC 5987."""
    header = reports.content_disposition(report, "pdf")
    assert 'filename="bao-cao-phat-thanh_2024-09-02_2024-09-15.pdf"' in header
    encoded = header.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == "Báo cáo phát thanh 02-09-2024 đến 15-09-2024.pdf"
    assert audit.GENESIS not in header


def test_cli_report_writes_each_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """'radio report --from --to --format -o' writes the file; the format may come from the suffix."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("RADIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RADIO_DATABASE_URL", url)
    engine = make_engine(url)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        sample.seed(s)
    engine.dispose()
    assert main(["report", "--from", "2024-09-02", "--to", "2024-09-15", "--format", "pdf",
                 "-o", str(tmp_path / "a.pdf")]) == 0
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    assert main(["report", "--from", "02/09/2024", "--to", "15/09/2024", "-o", str(tmp_path / "a.xlsx")]) == 0
    assert (tmp_path / "a.xlsx").read_bytes().startswith(b"PK")
    assert main(["report", "--from", "2024-09-02", "--to", "2024-09-15", "--format", "csv",
                 "-o", str(tmp_path / "a.txt")]) == 0
    assert (tmp_path / "a.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    assert "Đã lập" in capsys.readouterr().out
    assert main(["report", "--from", "2024-09-15", "--to", "2024-09-02", "-o", str(tmp_path / "b.pdf")]) == 2
    assert "Lỗi:" in capsys.readouterr().err and not (tmp_path / "b.pdf").exists()


def _embedded_fonts(pdf: bytes) -> list[object]:
    """The TrueType font programs embedded in the PDF (fpdf2 writes each /FontFile2 as a Flate stream)."""
    import re
    import zlib

    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    fonts = []
    for number in sorted({int(n) for n in re.findall(rb"/FontFile2 (\d+) 0 R", pdf)}):
        head = re.search(rb"\n%d 0 obj\s*<<(.*?)>>\s*stream\r?\n" % number, pdf, re.S)
        assert head is not None, number
        length = int(re.search(rb"/Length (\d+)", head.group(1)).group(1))  # type: ignore[union-attr]
        raw = pdf[head.end():head.end() + length]
        fonts.append(TTFont(io.BytesIO(zlib.decompress(raw) if b"FlateDecode" in head.group(1) else raw)))
    return fonts


def _drawn(font: object, char: str) -> bool:
    """The font maps the character to a glyph with an outline (not .notdef, not an empty box)."""
    cmap = font.getBestCmap()  # type: ignore[attr-defined]
    name = cmap.get(ord(char))
    if name is None or name == ".notdef":
        return False
    glyph = font["glyf"][name]  # type: ignore[index]
    return bool(glyph.isComposite() or glyph.numberOfContours > 0)


def test_pdf_fonts_cover_every_vietnamese_letter_and_headings_are_not_stranded(
        factory: sessionmaker[Session], tmp_path: Path) -> None:
    """Every character the report shows has a real glyph: in DejaVu Sans (each style used) and in the subsets
    embedded in the PDF; no section heading ends a page without its table (made after the period, the
    old layout left «IV. KẾT QUẢ THEO TỔ DÂN PHỐ» alone at the foot of page 1); the title is drawn centred."""
    import datetime as dt

    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    pdftotext, pdftoppm = need("pdftotext"), need("pdftoppm")
    with factory() as s:
        report = reports.build_report(s, Settings(data_dir=Path("unused")), sample.FIRST, sample.LAST,
                                      now=dt.datetime(2024, 9, 20, 9, 0, tzinfo=dt.UTC))
    pdf = reports.render(report, "pdf")
    path = tmp_path / "bao-cao.pdf"
    path.write_bytes(pdf)
    shown = unicodedata.normalize("NFC", reports.render(report, "csv").decode("utf-8-sig") + reports.TITLE
                                  + reports.SUBTITLE + "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM Độc lập - Tự do - Hạnh phúc"
                                  + reports.ZONES_TOTAL_NOTE + reports.DOC_NUMBER)
    letters = {c for c in shown if not c.isspace()}
    assert {"ệ", "ử", "ờ", "Đ", "ỦY"[0], "ự", "ẩ"} <= letters
    for style in ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf"):
        font = TTFont(reports.font_dir() / style)
        missing = sorted(c for c in letters if not _drawn(font, c))
        assert not missing, (style, missing)
    text = subprocess.run([pdftotext, "-layout", str(path), "-"], check=True, capture_output=True, text=True).stdout
    embedded = _embedded_fonts(pdf)
    assert embedded
    in_pdf = {c for c in unicodedata.normalize("NFC", text) if not c.isspace()}
    assert {"ệ", "Đ", "ư", "ờ"} <= in_pdf
    missing = sorted(c for c in in_pdf if not any(_drawn(f, c) for f in embedded))
    assert not missing, missing
    headings = ("I. ", "II. ", "III. ", "IV. ", "V. ", "VI. ", "VII. ", "VIII. ")
    for number, page in enumerate(text.split("\f"), start=1):
        body = [ln.strip() for ln in page.splitlines() if ln.strip() and not ln.strip().startswith(reports.TITLE[:5])
                and "Trang " not in ln]
        if body:
            assert not body[-1].startswith(headings), (number, body[-1])
    subprocess.run([pdftoppm, "-r", "100", "-f", "1", "-l", "1", "-png", str(path), str(tmp_path / "p")], check=True)
    from PIL import Image

    (first,) = sorted(tmp_path.glob("p-*.png"))
    with Image.open(first) as img:
        grey = img.convert("L")
        w, h = grey.size
        top = int(h * 40 / 297)  # the title sits about 45 mm from the top of the page
        band = grey.crop((0, top, w, top + int(h * 12 / 297))).point(lambda v: 255 if v < 128 else 0)
        box = band.getbbox()
    assert box is not None
    left, right = box[0], w - box[2]
    assert abs(left - right) < w * 0.03, (left, right)  # centred on the page
    assert box[2] - box[0] > w * 0.4  # the whole title line, not a stray mark


def test_report_reasons_are_vietnamese_with_local_times(report: reports.Report) -> None:
    """Nodes' English reasons are translated in the report, and '23:30 UTC' is shown as Vietnam time; the TDP
    total says it adds up the TDPs."""
    text = reports.render(report, "csv").decode("utf-8-sig")
    for english in ("missed: offline", "preempted", "UTC,", "23:30 UTC"):
        assert english not in text, english
    assert "loa-tdp3-b: bị lỡ (cụm loa mất kết nối)" in text
    assert "dịch vụ không chạy lúc 06:30 (giờ Việt Nam)" in text
    assert "Tổng (cộng theo từng tổ)," in text and reports.ZONES_TOTAL_NOTE in text


def test_priority_preemption_is_not_called_an_emergency() -> None:
    """A broadcast cut off by a priority bulletin is 'bị ngắt do bản tin ưu tiên'; by an emergency, as before."""
    from radio.logbook.asrun import Category, category_vi
    from radio.logbook.labels import reason_vi

    assert category_vi(Category.PREEMPTED, "loa-1: lỗi (preempted by priority command c9)") == \
        "bị ngắt do bản tin ưu tiên"
    assert category_vi(Category.PREEMPTED, "preempted by emergency command e1") == "bị ngắt do phát khẩn cấp"
    assert reason_vi("preempted by priority command c9") == "bị ngắt do bản tin ưu tiên (lệnh c9)"


def test_chart_leaves_room_above_the_tallest_bar(report: reports.Report) -> None:
    """The y axis reaches past the tallest week (it used to end exactly at it: the bar touched the frame)."""
    import matplotlib.axes

    seen: list[tuple[float, float]] = []
    original = matplotlib.axes.Axes.set_title

    def spy(ax: matplotlib.axes.Axes, *args: Any, **kw: Any) -> Any:
        seen.append(ax.get_ylim())
        return original(ax, *args, **kw)

    matplotlib.axes.Axes.set_title = spy  # type: ignore[method-assign,assignment]
    try:
        reports.weekly_chart_png(report, dpi=30)
    finally:
        matplotlib.axes.Axes.set_title = original  # type: ignore[method-assign]
    tallest = max(sum(week) for week in zip(*report.weekly_minutes.values(), strict=True))
    assert seen and seen[0][1] >= tallest * 1.08
