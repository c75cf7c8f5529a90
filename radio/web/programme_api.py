"""JSON API v1 for the programme: bulletins and their approval, audio uploads, emergencies, CAP, calendar."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from radio import emergency
from radio.auth import Principal
from radio.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from radio.logbook import audit
from radio.logbook.labels import BULLETIN_VI
from radio.models import AudioAsset, Bulletin, BulletinStatus, NodeGroup, Role, Segment, SlotItem, utcnow
from radio.settings import Settings
from radio.sound.ffmpeg import AudioDecodeError
from radio.speech.prepare import prepare_uploaded
from radio.web import queries
from radio.web.deps import ServiceDep, SessionDep, SettingsDep, get_session
from radio.web.security import READ, Approver, Editor, current_principal, secret_key

CALENDAR_PATH = "/api/v1/calendar.ics"


async def _read_or_calendar_token(request: Request, session: Annotated[Session, Depends(get_session)]) -> None:
    """Every route needs a reader (bearer token or session cookie); the calendar also takes ``?token=``.

    A phone calendar app subscribing to ``calendar.ics`` cannot send a header or a cookie, so the feed accepts
    its read-only calendar token in the URL instead (see :func:`calendar_token`); it opens nothing else.
    """
    token = request.query_params.get("token")
    if request.url.path == CALENDAR_PATH and token is not None and "authorization" not in request.headers:
        settings: Settings = request.app.state.service.settings
        expected = calendar_token(settings, request.query_params.get("zone"))
        if not secrets.compare_digest(token.encode(), expected.encode()):
            raise HTTPException(401, "mã lịch (token) không đúng, hoặc không dành cho tổ dân phố này")
        return
    await READ(await current_principal(request, session))


router = APIRouter(prefix="/api/v1", tags=["programme"], dependencies=[Depends(_read_or_calendar_token)])
SlugId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]


class BulletinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=300)
    text: str | None = Field(default=None, max_length=20000)
    segment_id: str | None = Field(default=None, max_length=64)
    engine: Literal["espeak", "gtts", "piper"] | None = None
    voice: str | None = Field(default=None, max_length=64)
    rate: int | None = Field(default=None, ge=80, le=400)


class BulletinCreate(BulletinIn):
    id: SlugId


class BulletinOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    title: str
    text: str | None
    segment_id: str | None
    audio_sha256: str | None
    status: str
    engine: str | None
    voice: str | None
    rate: int | None
    updated_at: dt.datetime
    submitted_at: dt.datetime | None
    approved_by: str | None
    approved_at: dt.datetime | None
    review_comment: str | None


class ReturnIn(BaseModel):
    comment: str = Field(min_length=1, max_length=2000)


class AssetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    sha256: str
    duration_s: float
    created_at: dt.datetime


class EmergencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=emergency.MAX_TEXT)
    title: str = Field(default="Thông báo khẩn cấp", min_length=1, max_length=300)
    zones: list[SlugId] = Field(default_factory=list, description="empty: the whole ward")


class AiredOut(BaseModel):
    broadcast_id: int | None
    action: str = "aired"
    detail: str = ""


def _commit(session: SessionDep, actor: str, action: str, row: Bulletin | AudioAsset,
            before: dict[str, object] | None) -> None:
    """Append the change to the audit trail in the same transaction, then commit both."""
    audit.record(session, actor=actor, action=action, entity_type=type(row).__name__.lower(), entity_id=row.id,
                 before=before, after=audit.snapshot(row))
    session.commit()


# bulletins -----------------------------------------------------------------------------------------
def _status_vi(status: object) -> str:
    return BULLETIN_VI.get(str(status), str(status))


def _bulletin(session: SessionDep, bulletin_id: str) -> Bulletin:
    row = session.get(Bulletin, bulletin_id)
    if row is None:
        raise NotFound("bulletin", bulletin_id)
    return row


def _check_segment(session: SessionDep, body: BulletinIn) -> None:
    if body.segment_id is not None and session.get(Segment, body.segment_id) is None:
        raise InvalidInput(f"không có chuyên mục {body.segment_id!r}", where="segment_id")


def _check_text(body: BulletinIn, has_audio: bool) -> None:
    if body.text is not None and not body.text.strip():
        raise InvalidInput("nội dung bản tin trống", where="text")
    if body.text is None and not has_audio:
        raise InvalidInput("bản tin cần nội dung (text) hoặc tệp âm thanh", where="text")


@router.get("/bulletins", response_model=list[BulletinOut])
def list_bulletins(session: SessionDep, status: Literal["draft", "submitted", "approved"] | None = None
                   ) -> list[Bulletin]:
    query = select(Bulletin).order_by(Bulletin.id)
    if status:
        query = query.where(Bulletin.status == status)
    return list(session.scalars(query))


@router.get("/bulletins/{bulletin_id}", response_model=BulletinOut)
def get_bulletin(bulletin_id: str, session: SessionDep) -> Bulletin:
    return _bulletin(session, bulletin_id)


@router.post("/bulletins", response_model=BulletinOut, status_code=201)
def create_bulletin(body: BulletinCreate, session: SessionDep, user: Editor) -> Bulletin:
    if session.get(Bulletin, body.id) is not None:
        raise Conflict(f"bản tin «{body.id}» đã tồn tại")
    _check_text(body, has_audio=False)
    _check_segment(session, body)
    row = Bulletin(status=BulletinStatus.DRAFT, **body.model_dump())
    session.add(row)
    session.flush()
    _commit(session, user.username, audit.BULLETIN_CREATED, row, None)
    return row


@router.put("/bulletins/{bulletin_id}", response_model=BulletinOut)
def update_bulletin(bulletin_id: str, body: BulletinIn, session: SessionDep, user: Editor) -> Bulletin:
    """Editing content returns an approved or submitted bulletin to draft: it must be approved again."""
    row = _bulletin(session, bulletin_id)
    before = audit.snapshot(row)
    _check_text(body, has_audio=row.audio_sha256 is not None)
    _check_segment(session, body)
    changed = False
    for key, value in body.model_dump().items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    if changed and row.status != BulletinStatus.DRAFT:
        row.status, row.approved_by, row.approved_at = BulletinStatus.DRAFT, None, None
    if changed:
        _commit(session, user.username, audit.BULLETIN_UPDATED, row, before)
    return row


@router.delete("/bulletins/{bulletin_id}", status_code=204)
def delete_bulletin(bulletin_id: str, session: SessionDep, user: Editor) -> Response:
    row = _bulletin(session, bulletin_id)
    used = session.scalars(select(SlotItem.slot_id).where(SlotItem.bulletin_id == bulletin_id)).first()
    if used:
        raise Conflict(f"bản tin «{bulletin_id}» đang nằm trong danh sách phát của khung giờ «{used}»; "
                       "hãy bỏ nó khỏi khung giờ đó trước")
    before = audit.snapshot(row)
    session.delete(row)
    audit.record(session, actor=user.username, action=audit.BULLETIN_DELETED, entity_type="bulletin", entity_id=bulletin_id,
                 before=before, after=None)
    session.commit()
    return Response(status_code=204)


@router.post("/bulletins/{bulletin_id}/submit", response_model=BulletinOut)
def submit_bulletin(bulletin_id: str, session: SessionDep, user: Editor) -> Bulletin:
    row = _bulletin(session, bulletin_id)
    if row.status != BulletinStatus.DRAFT:
        raise Conflict(f"bản tin «{bulletin_id}» đang ở trạng thái {_status_vi(row.status)}; "
                       "chỉ bản nháp mới gửi phê duyệt được")
    before = audit.snapshot(row)
    row.status, row.submitted_at, row.review_comment = BulletinStatus.SUBMITTED, utcnow(), None
    _commit(session, user.username, audit.BULLETIN_SUBMITTED, row, before)
    return row


@router.post("/bulletins/{bulletin_id}/approve", response_model=BulletinOut)
def approve_bulletin(bulletin_id: str, session: SessionDep, user: Approver) -> Bulletin:
    row = _bulletin(session, bulletin_id)
    if row.status != BulletinStatus.SUBMITTED:
        raise Conflict(f"bản tin «{bulletin_id}» đang ở trạng thái {_status_vi(row.status)}; "
                       "chỉ bản tin đang chờ phê duyệt mới phê duyệt được")
    before = audit.snapshot(row)
    row.status, row.approved_by, row.approved_at = BulletinStatus.APPROVED, user.username, utcnow()
    _commit(session, user.username, audit.BULLETIN_APPROVED, row, before)
    return row


@router.post("/bulletins/{bulletin_id}/return", response_model=BulletinOut)
def return_bulletin(bulletin_id: str, body: ReturnIn, session: SessionDep, user: Approver) -> Bulletin:
    row = _bulletin(session, bulletin_id)
    if row.status != BulletinStatus.SUBMITTED:
        raise Conflict(f"bản tin «{bulletin_id}» đang ở trạng thái {_status_vi(row.status)}; "
                       "chỉ bản tin đang chờ phê duyệt mới trả lại được")
    before = audit.snapshot(row)
    row.status, row.review_comment = BulletinStatus.DRAFT, body.comment
    _commit(session, user.username, audit.BULLETIN_RETURNED, row, before)
    return row


# audio uploads -------------------------------------------------------------------------------------
@router.get("/assets", response_model=list[AssetOut])
def list_assets(session: SessionDep) -> list[AudioAsset]:
    return list(session.scalars(select(AudioAsset).order_by(AudioAsset.id)))


@router.post("/assets", response_model=AssetOut, status_code=201)
async def upload_asset(session: SessionDep, settings: SettingsDep, file: Annotated[UploadFile, File()],
                       id: Annotated[SlugId, Form()], name: Annotated[str, Form(min_length=1, max_length=300)],
                       user: Editor) -> AudioAsset:
    """Accept MP3/WAV/OGG/M4A by content (never by file name); measure and store it content-addressed."""
    if session.get(AudioAsset, id) is not None:
        raise Conflict(f"tệp âm thanh «{id}» đã tồn tại")
    limit = int(settings.max_upload_mb * 1024 * 1024)
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise InvalidInput(f"tệp lớn hơn giới hạn {settings.max_upload_mb:g} MB", where="file")
    try:
        audio = prepare_uploaded(data, settings)
    except (AudioDecodeError, ValueError) as exc:
        raise InvalidInput(f"không phải tệp âm thanh hợp lệ: {exc}", where="file") from None
    row = AudioAsset(id=id, name=name, sha256=audio.sha256, duration_s=audio.duration_s)
    session.add(row)
    session.flush()
    _commit(session, user.username, "asset.uploaded", row, None)
    return row


# emergencies -----------------------------------------------------------------------------------------
def _broadcaster(service: ServiceDep):  # type: ignore[no-untyped-def]
    if service.broadcaster is None or service.mqtt is None or not service.mqtt.connected:
        raise ServiceUnavailable("bộ phát chưa chạy (chưa kết nối được máy chủ MQTT)")
    return service.broadcaster


@router.post("/emergency", response_model=AiredOut, status_code=201, tags=["emergency"])
def post_emergency(body: EmergencyIn, service: ServiceDep, user: Approver) -> AiredOut:
    """Air an emergency now on its zones (default: the whole ward), preempting whatever plays there."""
    broadcast_id = emergency.trigger(_broadcaster(service), emergency.EmergencyRequest(
        text=body.text, title=body.title, zone_ids=body.zones, actor=user.username))
    return AiredOut(broadcast_id=broadcast_id, detail=", ".join(body.zones) or "toàn phường")


@router.post("/cap", response_model=AiredOut, tags=["emergency"],
             openapi_extra={"requestBody": {"content": {"application/xml": {"schema": {"type": "string"}}},
                                            "required": True}})
async def post_cap(request: Request, service: ServiceDep, settings: SettingsDep, user: Approver) -> AiredOut:
    """Receive a CAP 1.2 alert (XML): Alert airs, Update replaces, Cancel stops; Exercise/Test only in the test zone."""
    body = await request.body()
    if len(body) > 1024 * 1024:
        raise InvalidInput("bản tin CAP quá lớn", where="body")
    alert = emergency.parse_cap(body)
    outcome = emergency.handle_cap(_broadcaster(service), alert, zone_map=settings.cap_zone_map,
                                   test_zone=settings.cap_test_zone)
    return AiredOut(broadcast_id=outcome.broadcast_id, action=outcome.action, detail=outcome.detail)


# calendar ------------------------------------------------------------------------------------------------
def calendar_token(settings: Settings, zone: str | None) -> str:
    """The read-only token of the calendar feed of one zone (None: the whole ward).

    An HMAC-SHA256 of the zone under the server's secret key (RADIO_SECRET_KEY, or ``secret.key`` in the data
    directory), so it needs no storage; it opens only that zone's ``calendar.ics``. Changing the secret key
    revokes every calendar token (and every login session).
    """
    digest = hmac.new(secret_key(settings).encode(), f"calendar.ics|{zone or ''}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def calendar_url(settings: Settings, zone: str | None) -> str:
    """The address to subscribe to from a phone calendar (it carries the token: share it like a password)."""
    query = (f"zone={zone}&" if zone else "") + f"token={calendar_token(settings, zone)}"
    return f"{(settings.public_base_url or '').rstrip('/')}{CALENDAR_PATH}?{query}"


@router.get("/calendar.ics", response_class=Response, tags=["calendar"],
            responses={200: {"content": {"text/calendar": {}}}})
def calendar(session: SessionDep, settings: SettingsDep,
             principal: Annotated[Principal | None, Depends(current_principal)],
             zone: Annotated[str | None, Query(max_length=64)] = None,
             days: Annotated[int, Query(ge=1, le=366)] = 60,
             token: Annotated[str | None, Query(max_length=200, description="read-only calendar token, for "
                                                "calendar apps that cannot log in (see X-Calendar-URL)")] = None,
             ) -> Response:
    """The coming occurrences as iCalendar, so officials can subscribe from a phone calendar.

    Admins and officers get the subscription address, with its token, in the ``X-Calendar-URL`` header.
    """
    now = utcnow()
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//radio//lich phat//VI", "CALSCALE:GREGORIAN",
             f"X-WR-CALNAME:{_ics_text('Lịch phát ' + settings.site_name + (' - ' + zone if zone else ''))}",
             f"X-WR-TIMEZONE:{settings.timezone}"]
    slots = {s.id: s for s in queries.slots(session)}
    occurrences = queries.upcoming(session, settings.tz, now, days, zone)  # an unknown zone: 404 naming it
    group_names = {g.id: g.name for g in session.scalars(select(NodeGroup))}
    for occ in occurrences:
        slot = slots[occ.slot_id]
        end = occ.at + dt.timedelta(seconds=slot.duration_s or 600)
        where = ", ".join([*occ.zone_ids, *(group_names.get(g, g) for g in occ.group_ids)]) or "toàn phường"
        lines += ["BEGIN:VEVENT", f"UID:{occ.slot_id}-{occ.at:%Y%m%dT%H%M%SZ}@{settings.site_id}",
                  f"DTSTAMP:{now:%Y%m%dT%H%M%SZ}", f"DTSTART:{occ.at:%Y%m%dT%H%M%SZ}", f"DTEND:{end:%Y%m%dT%H%M%SZ}",
                  f"SUMMARY:{_ics_text(occ.slot_name)}", f"LOCATION:{_ics_text(where)}",
                  f"DESCRIPTION:{_ics_text('Phát: ' + ', '.join(occ.bulletins))}", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    body = "\r\n".join(_fold(line) for line in lines) + "\r\n"
    headers = {"Content-Disposition": 'inline; filename="lich-phat.ics"'}
    if principal is not None and principal.role in (Role.ADMIN, Role.OFFICER):
        headers["X-Calendar-URL"] = calendar_url(settings, zone)
    return Response(body, media_type="text/calendar; charset=utf-8", headers=headers)


def _ics_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def _fold(line: str) -> str:
    """RFC 5545: lines longer than 75 octets are folded (never inside a UTF-8 character)."""
    out: list[str] = []
    current = b""
    for ch in line:
        encoded = ch.encode()
        if len(current) + len(encoded) > (75 if not out else 74):
            out.append(current.decode())
            current = b""
        current += encoded
    out.append(current.decode())
    return "\r\n ".join(out)
