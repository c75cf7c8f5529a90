"""What every console page shares: templates and their filters, who is signed in, errors as pages.

Pages are server-rendered and work without JavaScript; ``/static/app.js`` only adds live updates,
the speech preview, inline slot checks and microphone recording. Every page route is a
:class:`PageRoute`, which turns "not signed in" into a redirect to ``/login?next=…`` and any error
(wrong role, missing CSRF token, invalid input) into a Vietnamese error page instead of JSON.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import pass_context
from pydantic import ValidationError
from starlette.datastructures import FormData

from radio.auth import Principal
from radio.errors import Conflict, InvalidInput, NotFound, RadioError, ServiceUnavailable
from radio.logbook.labels import BROADCAST_VI, BULLETIN_VI, DELIVERY_VI
from radio.models import Role, utcnow
from radio.schedule.loader import MAX_YEAR, MIN_YEAR
from radio.web import security
from radio.web.deps import SessionDep
from radio.wording import pydantic_vi

WEB = Path(__file__).resolve().parent.parent
STATIC = WEB / "static"
templates = Jinja2Templates(directory=WEB / "templates")

# Who may use what (the same role sets as the JSON API, from radio/web/security.py).
READ = frozenset(security.READ.allowed)  # type: ignore[attr-defined]
EDIT = frozenset(security.EDIT.allowed)  # type: ignore[attr-defined]
APPROVE = frozenset(security.APPROVE.allowed)  # type: ignore[attr-defined]
PREVIEW = frozenset(security.PREVIEW.allowed)  # type: ignore[attr-defined]
LOGS = frozenset(security.LOGS.allowed)  # type: ignore[attr-defined]
RECORD = EDIT | APPROVE  # officers record and schedule; approvers air recordings now

ROLE_VI = {Role.ADMIN: "Quản trị", Role.OFFICER: "Cán bộ văn hóa", Role.APPROVER: "Lãnh đạo duyệt tin",
           Role.AUDITOR: "Giám sát"}
PRIORITY_VI = {"normal": "thông thường", "priority": "ưu tiên", "emergency": "khẩn cấp"}
KIND_VI = {"scheduled": "theo lịch", "emergency": "khẩn cấp", "manual": "phát ngay", "demo": "trình diễn"}
OUTCOME_VI = {**BROADCAST_VI, "preempted": "bị ngắt bởi tin khẩn cấp"}
WEEKDAY_VI = ("Thứ 2", "Thứ 3", "Thứ 4", "Thứ 5", "Thứ 6", "Thứ 7", "Chủ nhật")
WEEKDAY_CODES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

NAV: tuple[tuple[str, str, str, frozenset[Role]], ...] = (
    ("home", "/", "Hôm nay", READ),
    ("bulletins", "/ban-tin", "Bản tin", PREVIEW),
    ("schedule", "/lich-phat", "Lịch phát", READ),
    ("record", "/thu-am", "Thu âm và phát", RECORD),
    ("emergency", "/khan-cap", "Phát khẩn cấp", APPROVE),
    ("nodes", "/cum-loa", "Cụm loa", READ),
    ("log", "/nhat-ky", "Nhật ký", LOGS),
)
FLASH = "radio_flash"


# errors as pages ------------------------------------------------------------------------------------
class LoginNeeded(Exception):
    """No valid session: the page answers with a redirect to the login form."""


class PageRoute(APIRoute):
    """An HTML route: redirects to the login page when signed out, shows errors as Vietnamese pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginNeeded:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            except HTTPException as exc:
                return error_page(request, exc.status_code, _http_detail(exc))
            except RequestValidationError as exc:
                return error_page(request, 422, "Dữ liệu gửi lên không hợp lệ: " + validation_text(exc.errors()))
            except RadioError as exc:
                return error_page(request, _status(exc), say(exc))

        return page_handler


def page_router() -> APIRouter:
    return APIRouter(include_in_schema=False, route_class=PageRoute, default_response_class=HTMLResponse)


def _status(exc: RadioError) -> int:
    for cls, code in ((NotFound, 404), (Conflict, 409), (InvalidInput, 422), (ServiceUnavailable, 503)):
        if isinstance(exc, cls):
            return code
    return 400


def _http_detail(exc: HTTPException) -> str:
    if exc.status_code == 403 and "CSRF" in str(exc.detail):
        return "Phiên làm việc đã thay đổi. Hãy tải lại trang rồi thử lại."
    if exc.status_code == 403:
        return "Vai trò của bạn không được dùng chức năng này."
    return str(exc.detail)


ERROR_TITLES = {403: "Không được phép", 404: "Không tìm thấy", 409: "Không thực hiện được",
                422: "Dữ liệu không hợp lệ", 503: "Dịch vụ chưa sẵn sàng"}


def error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", {"status": status, "title": ERROR_TITLES.get(status, "Có lỗi xảy ra"),
                                          "message": message}, status_code=status)


# who is signed in -----------------------------------------------------------------------------------
async def _principal(request: Request, session: SessionDep) -> Principal:
    principal = await security.current_principal(request, session)
    if principal is None:
        raise LoginNeeded
    return principal


def need(roles: Iterable[Role]) -> Callable[..., Coroutine[Any, Any, Principal]]:
    allowed = frozenset(roles)

    async def dependency(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(403, "forbidden")
        return principal

    return dependency


Reader = Annotated[Principal, Depends(need(READ))]
Editor = Annotated[Principal, Depends(need(EDIT))]
Approver = Annotated[Principal, Depends(need(APPROVE))]
Previewer = Annotated[Principal, Depends(need(PREVIEW))]
LogReader = Annotated[Principal, Depends(need(LOGS))]
Recorder = Annotated[Principal, Depends(need(RECORD))]


async def _form(request: Request) -> AsyncIterator[FormData]:
    form = await request.form()  # parsed once (the CSRF check may have read it already)
    try:
        yield form
    finally:
        await form.close()  # uploaded files are spooled to temporary files


Form = Annotated[FormData, Depends(_form)]


def can(principal: Principal | None, roles: frozenset[Role]) -> bool:
    return principal is not None and principal.role in roles


# rendering ------------------------------------------------------------------------------------------
def render(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200) -> Response:
    principal: Principal | None = getattr(request.state, "principal", None)
    settings = request.app.state.service.settings
    flash = request.cookies.get(FLASH)
    ctx = {
        "user": principal,
        "role_vi": ROLE_VI.get(principal.role, principal.role) if principal else "",
        "nav": [(key, url, label) for key, url, label, roles in NAV if can(principal, roles)],
        "csrf": getattr(request.state, "csrf", None) or "",
        "site_name": settings.site_name,
        "tz": settings.tz,
        "flash": unquote(flash)[:300] if flash else None,
        "may_edit": can(principal, EDIT), "may_approve": can(principal, APPROVE),
        "may_preview": can(principal, PREVIEW), "may_logs": can(principal, LOGS),
        **context,
    }
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    if flash:
        response.delete_cookie(FLASH, path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


def redirect(url: str, flash: str | None = None) -> Response:
    """303 to ``url`` (after a POST); ``flash`` is shown once on the next page."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        response.set_cookie(FLASH, quote(flash), max_age=60, httponly=True, samesite="lax", path="/")
    return response


@cache
def _static_version(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]


def static_url(name: str) -> str:
    return f"/static/{name}?v={_static_version(name)}"


def _tz(ctx: Any) -> dt.tzinfo:
    return ctx.get("tz") or dt.UTC


def _local(ctx: Any, value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(_tz(ctx)) if value is not None else None


@pass_context
def f_datetime(ctx: Any, value: dt.datetime | None, seconds: bool = False) -> str:
    local = _local(ctx, value)
    return local.strftime("%d/%m/%Y %H:%M:%S" if seconds else "%d/%m/%Y %H:%M") if local else ""


@pass_context
def f_time(ctx: Any, value: dt.datetime | dt.time | None, seconds: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        value = value.astimezone(_tz(ctx))
    return value.strftime("%H:%M:%S" if seconds else "%H:%M")


def f_date(value: dt.date | dt.datetime | None) -> str:
    return value.strftime("%d/%m/%Y") if value else ""


@pass_context
def f_ago(ctx: Any, value: dt.datetime | None) -> str:
    if value is None:
        return "chưa bao giờ"
    seconds = (utcnow() - value).total_seconds()
    if seconds < 60:
        return "vừa xong"
    if seconds < 3600:
        return f"{int(seconds // 60)} phút trước"
    if seconds < 86400:
        return f"{int(seconds // 3600)} giờ trước"
    return f_datetime(ctx, value)


def seconds_vi(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f}".replace(".", ",") + " giây"
    minutes, rest = divmod(int(round(value)), 60)
    return f"{minutes} phút" + (f" {rest} giây" if rest else "")


def weekday_vi(value: dt.date) -> str:
    return WEEKDAY_VI[value.weekday()]


def short_node(name: str) -> str:
    """ "Cụm loa Nhà văn hóa TDP 1" → "Nhà văn hóa TDP 1" where the context already says "cụm loa"."""
    if not name.lower().startswith("cụm loa ") or len(name) <= 8:
        return name
    rest = name[8:]
    return rest[:1].upper() + rest[1:]


PLAYER_VI = {"simulated": "mô phỏng", "ffplay": "ffplay", "mpv": "mpv", "aplay": "aplay"}


templates.env.filters.update(datetime=f_datetime, time=f_time, date=f_date, ago=f_ago, seconds=seconds_vi,
                             weekday=weekday_vi, short_node=short_node)
templates.env.globals.update(static_url=static_url, BROADCAST_VI=BROADCAST_VI, DELIVERY_VI=DELIVERY_VI,
                             BULLETIN_VI=BULLETIN_VI, PRIORITY_VI=PRIORITY_VI, KIND_VI=KIND_VI, OUTCOME_VI=OUTCOME_VI,
                             PLAYER_VI=PLAYER_VI)


# small helpers --------------------------------------------------------------------------------------
def local_today(tz: dt.tzinfo) -> dt.date:
    return utcnow().astimezone(tz).date()


def slugify(text: str, *, limit: int = 40) -> str:
    """ASCII id from Vietnamese text: "Thông báo cắt nước" → "thong-bao-cat-nuoc"."""
    text = text.replace("đ", "d").replace("Đ", "D")
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")[:limit].strip("-")
    return slug or "muc"


def unique_id(base: str, taken: Callable[[str], bool]) -> str:
    if not taken(base):
        return base
    n = 2
    while taken(f"{base}-{n}"):
        n += 1
    return f"{base}-{n}"


def safe_next(value: str | None) -> str:
    """A local path to return to after login (never another site)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


FIELD_VI = {
    "title": "Tiêu đề", "text": "Nội dung", "segment_id": "Chuyên mục", "segment": "Chuyên mục",
    "engine": "Giọng đọc", "voice": "Giọng", "rate": "Tốc độ đọc", "id": "Mã", "name": "Tên", "time": "Giờ phát",
    "days": "Các thứ", "every_weeks": "Lặp mỗi", "from": "Từ ngày", "until": "Đến ngày", "dates": "Ngày phát",
    "except": "Ngày nghỉ", "priority": "Mức ưu tiên", "zones": "Nơi phát", "groups": "Nhóm loa",
    "duration": "Thời lượng", "play": "Nội dung phát", "comment": "Lý do trả lại", "zone_ids": "Tổ dân phố",
    "audio": "Tệp âm thanh", "file": "Tệp âm thanh",
}
# The console's own words for an error type; other pydantic types get the shared texts (radio.wording.PYDANTIC_VI).
# "slot_rule.<field>": SlotSpec's checks across fields, by the field the error names (its text names the fields).
TYPE_VI = {
    "missing": "bắt buộc phải có", "string_too_short": "không được để trống", "string_too_long": "quá dài",
    "time": "giờ không hợp lệ (dạng HH:MM)", "date": "ngày không hợp lệ (dạng dd/mm/yyyy)",
    "days": "hãy chọn ít nhất một thứ", "weekday": "thứ không hợp lệ", "priority": "mức ưu tiên không hợp lệ",
    "zones": "hãy chọn toàn phường hoặc ít nhất một tổ dân phố", "groups": "nhóm loa không hợp lệ",
    "duration": "thời lượng không hợp lệ", "duration_range": "thời lượng phải lớn hơn 0 và không quá giới hạn",
    "too_short": "hãy chọn ít nhất một mục", "int_parsing": "phải là số nguyên",
    "greater_than_equal": "nhỏ hơn mức cho phép", "less_than_equal": "lớn hơn mức cho phép",
    "id": "mã không hợp lệ", "play_item": "mục phát không hợp lệ", "literal_error": "giá trị không hợp lệ",
    "string_pattern_mismatch": "chỉ dùng chữ thường không dấu, số và dấu gạch ngang",
    "date_range": f"ngày phải trong khoảng năm {MIN_YEAR}–{MAX_YEAR}",
    "slot_rule.until": "Đến ngày phải sau Từ ngày", "slot_rule.days": "hãy chọn thứ trong tuần hoặc ngày phát",
    "slot_rule.groups": "toàn phường không đi kèm nhóm loa",
}


def validation_text(errors: Iterable[Any]) -> str:
    """Pydantic errors as one Vietnamese sentence: "Tiêu đề: không được để trống; Giờ phát: …"."""
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if not str(p).startswith("@") and p not in ("body", "query")]
        field = next((FIELD_VI[p] for p in loc if p in FIELD_VI), loc[0] if loc else "")
        kind = err.get("type", "")
        if kind == "slot_rule":  # the text names the fields itself ("Đến ngày phải sau Từ ngày")
            field, kind = "", f"slot_rule.{(err.get('ctx') or {}).get('field', '')}"
        text = TYPE_VI.get(kind) or pydantic_vi(err, default=err.get("msg", ""))
        parts.append(f"{field}: {text}" if field else text)
    return "; ".join(dict.fromkeys(parts))


def say(exc: RadioError) -> str:
    """An error as a sentence for the officer (field names and "not found" in Vietnamese)."""
    if isinstance(exc, NotFound):
        text = str(exc)
        return f"{text[:1].upper()}{text[1:]}."
    if isinstance(exc, InvalidInput) and exc.where and not getattr(exc, "problems", None):
        field = FIELD_VI.get(exc.where.split(".")[0].split("[")[0])
        return f"{field}: {exc.detail}" if field else exc.detail
    return str(exc)


def invalid(exc: ValidationError) -> str:
    return validation_text(exc.errors())


@dataclass
class Choice:
    value: str
    label: str
