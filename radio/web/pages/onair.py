"""Phát khẩn cấp (emergency, confirmed twice) and Thu âm và phát (record with the microphone, air or schedule).

Both end on /phat/<id>, where each loudspeaker cluster's state is followed live. The emergency is
the JSON API's own ``post_emergency``; airing a recording now is ``air_api.air_now`` (approvers);
the recording itself is uploaded by the page's script to ``POST /api/v1/assets`` (or, without
JavaScript, by the plain upload form here, which calls the same function).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from radio.errors import InvalidInput, RadioError
from radio.models import AudioAsset, Bulletin, BulletinStatus, Node, utcnow
from radio.settings import Settings
from radio.web import air_api, programme_api, queries
from radio.web.deps import ServiceDep, SessionDep, SettingsDep
from radio.web.pages.common import (
    Approver,
    Editor,
    Form,
    Recorder,
    invalid,
    page_router,
    redirect,
    render,
    say,
    slugify,
    unique_id,
)
from radio.web.pages.schedule import short_zone

router = page_router()


def _targets(form: FormData) -> list[str]:
    return [] if form.get("where", "all") == "all" else [str(z) for z in form.getlist("zones")]


def _where_vi(session: Session, zones: list[str]) -> tuple[str, int]:
    """("Toàn phường" or the TDP names, how many clusters will play)."""
    names = {z.id: z.name for z in queries.zones(session)}
    count = select(func.count()).select_from(Node)
    if zones:
        count = count.where(Node.zone_id.in_(zones))
    label = ", ".join(names.get(z, z) for z in zones) if zones else "Toàn phường"
    return label, int(session.scalar(count) or 0)


# emergency -------------------------------------------------------------------------------------------
def _emergency_form(request: Request, session: Session, values: dict[str, Any], error: str | None = None,
                    status_code: int = 200) -> Response:
    bulletins = list(session.scalars(select(Bulletin).where(Bulletin.status == BulletinStatus.APPROVED,
                                                            Bulletin.text.is_not(None)).order_by(Bulletin.title)))
    texts = json.dumps({b.id: {"title": b.title, "text": b.text} for b in bulletins}, ensure_ascii=False)
    return render(request, "emergency.html", {
        "active": "emergency", "v": values, "error": error, "bulletins": bulletins, "texts": texts.replace("</", "<\\/"),
        "zones": queries.zones(session)}, status_code=status_code)


@router.get("/khan-cap")
def emergency_page(request: Request, session: SessionDep, _user: Approver) -> Response:
    return _emergency_form(request, session, {"title": "Thông báo khẩn cấp", "text": "", "bulletin": "",
                                              "where": "all", "zones": []})


def _emergency_values(form: FormData, session: Session) -> dict[str, Any]:
    values = {"title": str(form.get("title", "") or "").strip() or "Thông báo khẩn cấp",
              "text": str(form.get("text", "") or "").replace("\r\n", "\n").strip(),
              "bulletin": str(form.get("bulletin", "") or ""), "where": str(form.get("where", "all")),
              "zones": _targets(form)}
    if not values["text"] and values["bulletin"]:
        chosen = session.get(Bulletin, values["bulletin"])
        if chosen is not None and chosen.status == BulletinStatus.APPROVED and chosen.text:
            values["text"] = chosen.text
            if values["title"] == "Thông báo khẩn cấp":
                values["title"] = chosen.title
    return values


@router.post("/khan-cap")
def emergency_review(request: Request, form: Form, session: SessionDep, _user: Approver) -> Response:
    """First confirmation: the officer reads back what will air, where."""
    values = _emergency_values(form, session)
    if form.get("step") == "edit":
        return _emergency_form(request, session, values)
    if not values["text"]:
        return _emergency_form(request, session, values, "Hãy nhập nội dung hoặc chọn một bản tin.", 422)
    if values["where"] != "all" and not values["zones"]:
        return _emergency_form(request, session, values, "Hãy chọn ít nhất một tổ dân phố, hoặc Toàn phường.", 422)
    where, count = _where_vi(session, values["zones"])
    return render(request, "emergency_confirm.html", {"active": "emergency", "v": values, "where": where,
                                                      "count": count, "error": None})


@router.post("/khan-cap/phat")
def emergency_air(request: Request, form: Form, session: SessionDep, service: ServiceDep, user: Approver) -> Response:
    """Second confirmation (the ticked box, and the browser's dialog): air it now."""
    values = _emergency_values(form, session)
    where, count = _where_vi(session, values["zones"])
    if not form.get("confirm"):
        return render(request, "emergency_confirm.html", {
            "active": "emergency", "v": values, "where": where, "count": count,
            "error": "Hãy đánh dấu ô xác nhận trước khi phát."}, status_code=422)
    try:
        body = programme_api.EmergencyIn(text=values["text"], title=values["title"][:300], zones=values["zones"])
    except ValidationError as exc:
        return _emergency_form(request, session, values, invalid(exc), 422)
    aired = programme_api.post_emergency(body, service, user)
    return redirect(f"/phat/{aired.broadcast_id}", flash=f"Đã phát khẩn cấp trên {where}.")


# record and air --------------------------------------------------------------------------------------
def _record_page(request: Request, session: Session, settings: Settings, chosen: str = "", error: str | None = None,
                 status_code: int = 200) -> Response:
    recent = list(session.scalars(select(AudioAsset).order_by(AudioAsset.created_at.desc()).limit(12)))
    selected = session.get(AudioAsset, chosen) if chosen else None
    now = utcnow().astimezone(settings.tz)
    return render(request, "record.html", {
        "active": "record", "recent": recent, "selected": selected, "zones": queries.zones(session),
        "short_zone": short_zone, "error": error, "default_name": f"Thông báo {now:%H:%M %d/%m/%Y}",
        "max_mb": settings.max_upload_mb}, status_code=status_code)


@router.get("/thu-am")
def record_page(request: Request, session: SessionDep, settings: SettingsDep, _user: Recorder,
                ban_thu: str = "") -> Response:
    return _record_page(request, session, settings, ban_thu)


def new_asset_id(session: Session, name: str) -> str:
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    return unique_id(f"thu-am-{stamp}-{slugify(name, limit=30)}", lambda i: session.get(AudioAsset, i) is not None)


@router.post("/thu-am")
async def upload_recording(request: Request, form: Form, session: SessionDep, settings: SettingsDep,
                           user: Editor) -> Response:
    """Without JavaScript (or a file from the phone's recorder): the same upload as POST /api/v1/assets."""
    file = form.get("file")
    name = str(form.get("name", "") or "").strip()[:300] or "Bản thu"
    if not isinstance(file, UploadFile) or not file.filename:
        return _record_page(request, session, settings, error="Hãy chọn một tệp âm thanh.", status_code=422)
    try:
        row = await programme_api.upload_asset(session, settings, file,  # type: ignore[arg-type]
                                               new_asset_id(session, name), name, user)
    except InvalidInput as exc:
        session.rollback()
        return _record_page(request, session, settings, error=say(exc), status_code=422)
    return redirect(f"/thu-am?ban_thu={row.id}", flash="Đã lưu bản thu.")


@router.post("/thu-am/{asset_id}/phat")
def air_recording(asset_id: str, request: Request, form: Form, session: SessionDep, settings: SettingsDep,
                  service: ServiceDep, user: Approver) -> Response:
    zones = _targets(form)
    if form.get("where", "all") != "all" and not zones:
        return _record_page(request, session, settings, asset_id, "Hãy chọn ít nhất một tổ dân phố, hoặc Toàn phường.",
                            422)
    try:
        aired = air_api.air_now(air_api.AirIn(asset_id=asset_id, zones=zones), service, session, user)
    except ValidationError as exc:
        return _record_page(request, session, settings, "", invalid(exc), 422)
    except RadioError as exc:
        return _record_page(request, session, settings, asset_id, say(exc), 422)
    where, _count = _where_vi(session, zones)
    return redirect(f"/phat/{aired.broadcast_id}", flash=f"Đang phát bản thu trên {where}.")
