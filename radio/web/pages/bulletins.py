"""Bản tin: compose (text, voice, rate, "Nghe thử"), upload a recording, submit; the approver's queue.

Every change goes through the JSON API's own functions (radio/web/programme_api.py), so the rules,
the audit trail and the approval states are the same whether a page or a script made the change.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from radio.auth import Principal
from radio.errors import Conflict, InvalidInput, NotFound, RadioError, ServiceUnavailable
from radio.logbook import audit
from radio.models import Bulletin, BulletinStatus, Segment, Slot, SlotItem
from radio.settings import Settings
from radio.sound.ffmpeg import AudioDecodeError
from radio.speech.prepare import prepare_uploaded
from radio.web import programme_api, speech_api
from radio.web.deps import SessionDep, SettingsDep
from radio.web.pages.common import (
    Approver,
    Editor,
    Form,
    Previewer,
    invalid,
    page_router,
    redirect,
    render,
    say,
    slugify,
    unique_id,
)

router = page_router()
ENGINE_VI = {"espeak": "espeak (ngoại tuyến)", "gtts": "Google (cần Internet)", "piper": "Piper (ngoại tuyến)"}
# Voice ids are the engines' own; officers choose by accent. Unknown ids (a Piper model's name) show as they are.
VOICE_VI = {"vi": "Giọng miền Bắc", "vi-vn-x-central": "Giọng miền Trung", "vi-vn-x-south": "Giọng miền Nam",
            "default": "Giọng của mô hình"}


def _choices(session: Session, settings: Settings) -> dict[str, Any]:
    engines = speech_api.list_engines(settings)
    return {
        "segments": list(session.scalars(select(Segment).order_by(Segment.name))),
        "engines": engines, "engine_vi": ENGINE_VI, "voice_vi": VOICE_VI,
    }


def _values(form: FormData | None, row: Bulletin | None, settings: Settings) -> dict[str, Any]:
    """What the form shows: what was just typed, else the stored bulletin, else the site defaults."""
    if form is not None:
        return {k: str(form.get(k, "") or "") for k in ("title", "text", "segment_id", "engine", "voice", "rate")}
    if row is not None:
        return {"title": row.title, "text": row.text or "", "segment_id": row.segment_id or "",
                "engine": row.engine or "", "voice": row.voice or "", "rate": str(row.rate or "")}
    return {"title": "", "text": "", "segment_id": "", "engine": "", "voice": "", "rate": ""}


def _body(form: FormData) -> dict[str, Any]:
    text = str(form.get("text", "") or "").replace("\r\n", "\n").strip()
    rate = str(form.get("rate", "") or "").strip()
    return {"title": str(form.get("title", "") or "").strip(), "text": text or None,
            "segment_id": str(form.get("segment_id", "") or "") or None,
            "engine": str(form.get("engine", "") or "") or None, "voice": str(form.get("voice", "") or "") or None,
            "rate": rate or None}


def _upload(form: FormData, settings: Settings) -> str | None:
    """The uploaded recording, loudness-normalised and stored; its sha256 (None when no file was chosen)."""
    file = form.get("audio")
    if not isinstance(file, UploadFile) or not file.filename:
        return None
    limit = int(settings.max_upload_mb * 1024 * 1024)
    data = file.file.read(limit + 1)
    if not data:
        return None
    if len(data) > limit:
        raise InvalidInput(f"tệp lớn hơn giới hạn {settings.max_upload_mb:g} MB", where="audio")
    try:
        return prepare_uploaded(data, settings).sha256
    except (AudioDecodeError, ValueError) as exc:
        raise InvalidInput(f"không phải tệp âm thanh hợp lệ ({exc})", where="audio") from None


def _attach(session: Session, row: Bulletin, sha: str, user: Principal, created: bool) -> None:
    """Put an uploaded recording on a bulletin; like any edit, it goes back to draft for approval."""
    before = None if created else audit.snapshot(row)
    row.audio_sha256 = sha
    if row.status != BulletinStatus.DRAFT:
        row.status, row.approved_by, row.approved_at = BulletinStatus.DRAFT, None, None
    programme_api._commit(session, user.username, audit.BULLETIN_CREATED if created else audit.BULLETIN_UPDATED,
                          row, before)


def _preview(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Without JavaScript: make the preview like POST /api/v1/tts/preview and play it from /audio/<sha>.mp3."""
    if not body["text"]:
        raise InvalidInput("chưa có nội dung để nghe thử", where="text")
    response = speech_api.preview(speech_api.PreviewIn(text=body["text"], engine=body["engine"],
                                                       voice=body["voice"], rate=body["rate"]), settings)
    return {"sha": response.headers["X-Audio-Sha256"], "duration": float(response.headers["X-Audio-Duration"])}


def _page(request: Request, session: Session, settings: Settings, row: Bulletin | None, *,
          form: FormData | None = None, error: str | None = None, preview: dict[str, Any] | None = None,
          status_code: int = 200) -> Response:
    used = []
    if row is not None:
        used = list(session.execute(select(Slot.id, Slot.name).where(
            Slot.id.in_(select(SlotItem.slot_id).where(SlotItem.bulletin_id == row.id))).order_by(Slot.name)).all())
    return render(request, "bulletin.html", {
        "active": "bulletins", "b": row, "v": _values(form, row, settings), "error": error, "preview": preview,
        "used_in": used, "default_rate": settings.tts_rate, **_choices(session, settings),
    }, status_code=status_code)


@router.get("/ban-tin")
def bulletins_page(request: Request, session: SessionDep, _user: Previewer) -> Response:
    rows = list(session.scalars(select(Bulletin).order_by(Bulletin.updated_at.desc())))
    segments = dict(session.execute(select(Segment.id, Segment.name)).all())
    groups = {s: [b for b in rows if b.status == s] for s in ("submitted", "draft", "approved")}
    groups["submitted"].sort(key=lambda b: b.submitted_at or b.updated_at)
    return render(request, "bulletins.html", {"active": "bulletins", "groups": groups, "segments": segments})


@router.get("/ban-tin/moi")
def new_bulletin(request: Request, session: SessionDep, settings: SettingsDep, _user: Editor) -> Response:
    return _page(request, session, settings, None)


@router.post("/ban-tin/moi")
def create_bulletin(request: Request, form: Form, session: SessionDep, settings: SettingsDep,
                    user: Editor) -> Response:
    action = str(form.get("action", "save"))
    body = _body(form)
    try:
        if action == "preview":
            return _page(request, session, settings, None, form=form, preview=_preview(body, settings))
        sha = _upload(form, settings)
        ident = unique_id(slugify(body["title"] or "ban-tin"), lambda i: session.get(Bulletin, i) is not None)
        if body["text"] is None and sha is None:
            raise InvalidInput("bản tin cần nội dung hoặc một tệp âm thanh", where="text")
        if body["text"] is not None:
            row = programme_api.create_bulletin(programme_api.BulletinCreate(id=ident, **body), session, user)
            if sha:
                _attach(session, row, sha, user, created=False)
        else:
            fields = programme_api.BulletinIn(**body).model_dump()
            row = Bulletin(id=ident, status=BulletinStatus.DRAFT, **fields)
            session.add(row)
            session.flush()
            _attach(session, row, sha, user, created=True)  # type: ignore[arg-type]
        if action == "submit":
            programme_api.submit_bulletin(row.id, session, user)
    except ValidationError as exc:
        session.rollback()
        return _page(request, session, settings, None, form=form, error=invalid(exc), status_code=422)
    except (InvalidInput, Conflict, ServiceUnavailable) as exc:
        session.rollback()
        return _page(request, session, settings, None, form=form, error=say(exc), status_code=422)
    done = "Đã lưu và gửi lãnh đạo phê duyệt." if action == "submit" else "Đã lưu bản nháp."
    return redirect(f"/ban-tin/{row.id}", flash=done)


def _bulletin(session: Session, bulletin_id: str) -> Bulletin:
    row = session.get(Bulletin, bulletin_id)
    if row is None:
        raise NotFound("bản tin", bulletin_id)
    return row


@router.get("/ban-tin/{bulletin_id}")
def bulletin_page(bulletin_id: str, request: Request, session: SessionDep, settings: SettingsDep,
                  _user: Previewer) -> Response:
    return _page(request, session, settings, _bulletin(session, bulletin_id))


@router.post("/ban-tin/{bulletin_id}")
def update_bulletin(bulletin_id: str, request: Request, form: Form, session: SessionDep, settings: SettingsDep,
                    user: Editor) -> Response:
    row = _bulletin(session, bulletin_id)
    action = str(form.get("action", "save"))
    body = _body(form)
    try:
        if action == "preview":
            return _page(request, session, settings, row, form=form, preview=_preview(body, settings))
        sha = _upload(form, settings)
        if body["text"] is None and sha is None and row.audio_sha256 is None:
            raise InvalidInput("bản tin cần nội dung hoặc một tệp âm thanh", where="text")
        programme_api.update_bulletin(bulletin_id, programme_api.BulletinIn(**body), session, user)
        if sha and sha != row.audio_sha256:
            _attach(session, row, sha, user, created=False)
        if action == "submit" and row.status == BulletinStatus.DRAFT:
            programme_api.submit_bulletin(bulletin_id, session, user)
    except ValidationError as exc:
        session.rollback()
        return _page(request, session, settings, row, form=form, error=invalid(exc), status_code=422)
    except (InvalidInput, Conflict, ServiceUnavailable) as exc:
        session.rollback()
        return _page(request, session, settings, row, form=form, error=say(exc), status_code=422)
    done = "Đã lưu và gửi lãnh đạo phê duyệt." if action == "submit" else "Đã lưu bản tin."
    return redirect(f"/ban-tin/{bulletin_id}", flash=done)


@router.post("/ban-tin/{bulletin_id}/nghe-thu")
def preview_bulletin(bulletin_id: str, request: Request, session: SessionDep, settings: SettingsDep,
                     _user: Previewer) -> Response:
    """The approver's "Nghe thử" without JavaScript: the stored text, spoken as it would air."""
    row = _bulletin(session, bulletin_id)
    body = {"text": row.text, "engine": row.engine, "voice": row.voice, "rate": row.rate}
    try:
        return _page(request, session, settings, row, preview=_preview(body, settings))
    except RadioError as exc:
        return _page(request, session, settings, row, error=say(exc), status_code=422)


@router.post("/ban-tin/{bulletin_id}/duyet")
def approve(bulletin_id: str, session: SessionDep, user: Approver) -> Response:
    programme_api.approve_bulletin(bulletin_id, session, user)
    return redirect("/ban-tin", flash="Đã phê duyệt bản tin.")


@router.post("/ban-tin/{bulletin_id}/tra-lai")
def return_to_author(bulletin_id: str, request: Request, form: Form, session: SessionDep, settings: SettingsDep,
                     user: Approver) -> Response:
    comment = str(form.get("comment", "") or "").strip()
    if not comment:
        row = _bulletin(session, bulletin_id)
        return _page(request, session, settings, row, error="Hãy ghi lý do trả lại để cán bộ sửa.", status_code=422)
    programme_api.return_bulletin(bulletin_id, programme_api.ReturnIn(comment=comment[:2000]), session, user)
    return redirect("/ban-tin", flash="Đã trả lại bản tin kèm góp ý.")


@router.post("/ban-tin/{bulletin_id}/xoa")
def delete(bulletin_id: str, session: SessionDep, user: Editor) -> Response:
    used = session.scalars(select(SlotItem.slot_id).where(SlotItem.bulletin_id == bulletin_id)).first()
    if used:
        raise Conflict(f"Bản tin đang nằm trong lịch phát «{used}»; hãy bỏ nó khỏi lịch phát trước.")
    programme_api.delete_bulletin(bulletin_id, session, user)
    return redirect("/ban-tin", flash="Đã xóa bản tin.")
