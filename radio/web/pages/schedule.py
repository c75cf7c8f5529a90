"""Lịch phát: the week per TDP, and the slot form with its checks shown before saving.

The form becomes the same ``SlotSpec`` as the programme file and the JSON API, and is checked and saved
by the API's own functions (radio/web/slots_api.py): conflicts, quiet hours and session caps are the
same rules with the same Vietnamese messages. ``POST /lich-phat/kiem-tra`` runs the check without
saving; /static/app.js calls it while the officer types and shows the answer inline.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from radio.auth import Principal
from radio.errors import Conflict, InvalidInput, NotFound
from radio.models import AudioAsset, Bulletin, ItemKind, NodeGroup, Segment, Slot, utcnow
from radio.schedule.loader import SlotSpec
from radio.schedule.recurrence import holiday_name
from radio.settings import Settings
from radio.web import queries, slots_api
from radio.web.deps import SessionDep, SettingsDep
from radio.web.pages.common import (
    WEEKDAY_CODES,
    WEEKDAY_VI,
    Editor,
    Form,
    Reader,
    invalid,
    local_today,
    page_router,
    redirect,
    render,
    say,
    slugify,
    unique_id,
)

router = page_router()
RULE_VI = {"conflict": "Trùng lịch", "quiet_hours": "Giờ yên tĩnh", "session_length": "Phiên quá dài",
           "sessions_per_day": "Quá số phiên trong ngày"}
PLAY_ROWS = 5
_DATE_LIST = re.compile(r"[,;\s]+")


def short_zone(name: str) -> str:
    return name.replace("Tổ dân phố số ", "TDP ").replace("Tổ dân phố ", "TDP ")


# the week -----------------------------------------------------------------------------------------
@router.get("/lich-phat")
def schedule_page(request: Request, session: SessionDep, settings: SettingsDep, _user: Reader,
                  zone: str = "", week: str = "") -> Response:
    tz = settings.tz
    try:
        day = dt.date.fromisoformat(week) if week else local_today(tz)
    except ValueError:
        day = local_today(tz)
    monday = day - dt.timedelta(days=day.weekday())
    zones = queries.zones(session)
    zone_names = {z.id: short_zone(z.name) for z in zones}
    if zone not in zone_names:
        zone = ""
    start = dt.datetime.combine(monday, dt.time(), tzinfo=tz).astimezone(dt.UTC)
    slots = {s.id: s for s in queries.slots(session)}
    bulletins = {b.id: b for b in session.scalars(select(Bulletin))}
    groups = dict(session.execute(select(NodeGroup.id, NodeGroup.name)).all())
    days: list[tuple[dt.date, list[dict[str, Any]]]] = [(monday + dt.timedelta(days=i), []) for i in range(7)]
    holidays = {day: name for day, _items in days if (name := holiday_name(day))}
    for occ in queries.upcoming(session, tz, start, 7, zone or None):
        slot = slots[occ.slot_id]
        local = occ.at.astimezone(tz)
        where = [zone_names.get(z, z) for z in slot.zone_ids] + [groups.get(g, g) for g in slot.group_ids]
        pending = [bulletins[b].title for b in occ.bulletins if b in bulletins and bulletins[b].status != "approved"]
        days[(local.date() - monday).days][1].append({
            "at": occ.at, "slot": slot, "where": ", ".join(where) or "Toàn phường", "pending": pending,
            "past": occ.at < utcnow()})
    return render(request, "schedule.html", {
        "active": "schedule", "days": days, "holidays": holidays, "monday": monday, "zone": zone, "zones": zones,
        "zone_names": zone_names,
        "group_names": groups, "slots": list(slots.values()), "today": local_today(tz),
        "prev_week": (monday - dt.timedelta(days=7)).isoformat(), "next_week": (monday + dt.timedelta(days=7)).isoformat(),
        "weekday_codes": dict(zip(WEEKDAY_CODES, WEEKDAY_VI, strict=True)),
    })


# the slot form ------------------------------------------------------------------------------------
def _options(session: Session, slot: Slot | None) -> dict[str, Any]:
    bulletins = list(session.scalars(select(Bulletin).where(~Bulletin.id.startswith("khan-cap-"))
                                     .order_by(Bulletin.title)))
    assets = list(session.scalars(select(AudioAsset).order_by(AudioAsset.created_at.desc())))
    relays = [(f"r:{i.position}", f"Tiếp âm {i.relay_url} ({(i.relay_s or 0) / 60:g} phút)")
              for i in (slot.items if slot else []) if i.kind == ItemKind.RELAY]
    return {
        "zones": queries.zones(session), "groups": list(session.scalars(select(NodeGroup).order_by(NodeGroup.name))),
        "segments": list(session.scalars(select(Segment).order_by(Segment.name))),
        "bulletins": bulletins, "assets": assets, "relays": relays,
        "weekdays": list(zip(WEEKDAY_CODES, WEEKDAY_VI, strict=True)), "play_rows": PLAY_ROWS,
    }


def _dmy(day: dt.date) -> str:
    return day.strftime("%d/%m/%Y")


def _values_from_slot(slot: Slot) -> dict[str, Any]:
    dates = [dt.date.fromisoformat(str(d)) for d in slot.dates]
    once = bool(dates) and not slot.weekdays
    play = []
    for item in slot.items:
        if item.kind == ItemKind.RELAY:
            play.append(f"r:{item.position}")
        elif item.kind == ItemKind.AUDIO:
            play.append(f"a:{item.asset_id}")
        else:
            play.append(f"b:{item.bulletin_id}")
    return {
        "original_id": slot.id, "name": slot.name, "segment": slot.segment_id or "",
        "time": slot.start_time.strftime("%H:%M:%S" if slot.start_time.second else "%H:%M"),
        "repeat": "once" if once else ("daily" if not slot.weekdays else "weekly"),
        "days": slot.weekdays.split(",") if slot.weekdays else [],
        "every_weeks": str(slot.interval_weeks), "date": dates[0].isoformat() if once else "",
        "more_dates": ", ".join(_dmy(d) for d in (dates[1:] if once else dates)),
        "valid_from": slot.valid_from.isoformat() if slot.valid_from else "",
        "valid_until": slot.valid_until.isoformat() if slot.valid_until else "",
        "except": ", ".join(_dmy(dt.date.fromisoformat(str(d))) for d in slot.exclude_dates),
        "holidays": slot.holidays == "skip", "priority": slot.priority,
        "where": "all" if slot.whole_ward else "some", "zones": slot.zone_ids, "groups": slot.group_ids,
        "duration": f"{slot.duration_s / 60:g}" if slot.duration_s else "", "play": play, "enabled": slot.enabled,
    }


def _values_from_form(form: FormData) -> dict[str, Any]:
    one = {k: str(form.get(k, "") or "").strip() for k in (
        "original_id", "name", "segment", "time", "repeat", "every_weeks", "date", "more_dates", "valid_from",
        "valid_until", "except", "priority", "where", "duration")}
    return {**one, "days": form.getlist("days"), "zones": form.getlist("zones"), "groups": form.getlist("groups"),
            "play": [str(p) for p in form.getlist("play") if p], "holidays": bool(form.get("holidays")),
            "enabled": bool(form.get("enabled"))}


def _new_values(request: Request, session: Session, settings: Settings) -> dict[str, Any]:
    """An empty form; ``?ban_tin=<id>`` or ``?am_thanh=<id>`` starts a one-off slot playing it soon."""
    tz = settings.tz
    soon = (utcnow() + dt.timedelta(minutes=15)).astimezone(tz)
    values: dict[str, Any] = {
        "original_id": "", "name": "", "segment": "", "time": "", "repeat": "weekly", "days": [], "every_weeks": "1",
        "date": "", "more_dates": "", "valid_from": local_today(tz).isoformat(), "valid_until": "", "except": "",
        "holidays": True, "priority": "normal", "where": "all", "zones": [], "groups": [], "duration": "",
        "play": [], "enabled": True,
    }
    bulletin = session.get(Bulletin, request.query_params.get("ban_tin", ""))
    asset = session.get(AudioAsset, request.query_params.get("am_thanh", ""))
    if bulletin or asset:
        values.update(repeat="once", date=soon.date().isoformat(), time=soon.strftime("%H:%M"), holidays=False,
                      name=(bulletin.title if bulletin else asset.name)[:300],  # type: ignore[union-attr]
                      play=[f"b:{bulletin.id}" if bulletin else f"a:{asset.id}"])  # type: ignore[union-attr]
        if bulletin and bulletin.segment_id:
            values["segment"] = bulletin.segment_id
    if request.query_params.get("zone"):
        values.update(where="some", zones=[request.query_params["zone"]])
    return values


def _dates(text: str) -> list[str]:
    return [part for part in _DATE_LIST.split(text) if part]


def _spec(values: dict[str, Any], session: Session) -> SlotSpec:
    """The form's values as the programme file's slot (raises InvalidInput / ValidationError in Vietnamese)."""
    if not values["name"]:
        raise InvalidInput("hãy đặt tên cho khung giờ phát", where="name")
    if values["original_id"]:
        ident = values["original_id"]
    else:
        ident = unique_id(slugify(values["name"]), lambda i: session.get(Slot, i) is not None)
    data: dict[str, Any] = {
        "id": ident, "name": values["name"], "time": values["time"] or None, "priority": values["priority"] or "normal",
        "holidays": "skip" if values["holidays"] else "keep", "enabled": values["enabled"],
        "except": _dates(values["except"]),
    }
    if values["segment"]:
        data["segment"] = values["segment"]
    repeat = values["repeat"]
    if repeat == "once":
        if not values["date"]:
            raise InvalidInput("hãy chọn ngày phát", where="dates")
        data["dates"] = [values["date"], *_dates(values["more_dates"])]
    else:
        if repeat == "weekly":
            if not values["days"]:
                raise InvalidInput("hãy chọn ít nhất một thứ trong tuần", where="days")
            data["days"] = values["days"]
        else:
            data["days"] = "daily"
        data["every_weeks"] = values["every_weeks"] or 1
        data["dates"] = _dates(values["more_dates"])
        if values["valid_from"]:
            data["from"] = values["valid_from"]
        if values["valid_until"]:
            data["until"] = values["valid_until"]
    if values["where"] == "all":
        data["zones"] = "all"
    else:
        if not values["zones"] and not values["groups"]:
            raise InvalidInput("hãy chọn toàn phường, hoặc ít nhất một tổ dân phố hay nhóm loa", where="zones")
        if values["zones"]:
            data["zones"] = values["zones"]
        if values["groups"]:
            data["groups"] = values["groups"]
    if values["duration"]:
        data["duration"] = f"{values['duration'].replace(',', '.')}m"
    data["play"] = _playlist(values["play"], session, values["original_id"])
    if not data["play"]:
        raise InvalidInput("hãy chọn ít nhất một bản tin hoặc bản thu để phát", where="play")
    return SlotSpec.model_validate(data)


def _playlist(choices: list[str], session: Session, slot_id: str) -> list[Any]:
    relays = {}
    if slot_id and (slot := session.get(Slot, slot_id)) is not None:
        relays = {f"r:{i.position}": {"relay": i.relay_url, "seconds": i.relay_s}
                  for i in slot.items if i.kind == ItemKind.RELAY}
    play: list[Any] = []
    for choice in choices:
        kind, _, ident = choice.partition(":")
        if kind == "b":
            play.append(ident)
        elif kind == "a":
            play.append({"audio": ident})
        elif choice in relays:
            play.append(relays[choice])
    return play


def _form_page(request: Request, session: Session, settings: Settings, values: dict[str, Any], *,
               slot: Slot | None, error: str | None = None, problems: list[Any] | None = None,
               checked: bool = False, status_code: int = 200) -> Response:
    return render(request, "slot.html", {
        "active": "schedule", "v": values, "slot": slot, "error": error, "problems": problems or [],
        "checked": checked, "rule_vi": RULE_VI, "quiet_hours": settings.quiet_hours, **_options(session, slot),
    }, status_code=status_code)


_QUOTED_ID = re.compile(r'"([A-Za-z0-9._-]+)"')


def explain(problems: list[Any], name: str, slot_id: str, session: Session) -> list[dict[str, Any]]:
    """The rules' messages with slot names instead of ids, and links to the other slots involved."""
    names = dict(session.execute(select(Slot.id, Slot.name)).all())
    names[slot_id] = name
    out = []
    for p in problems:
        ids = list(dict.fromkeys(_QUOTED_ID.findall(p.message)))
        if p.other_slot_id and p.other_slot_id not in ids:
            ids.append(p.other_slot_id)
        others = [(i, names[i]) for i in ids if i != slot_id and i in names]
        message = _QUOTED_ID.sub(lambda m: f"«{names.get(m.group(1), m.group(1))}»", p.message)
        out.append({"rule": p.rule, "message": message, "others": others})
    return out


def _check(values: dict[str, Any], session: Session, settings: Settings) -> tuple[str | None, list[Any]]:
    """(an input error, rule problems) for the form's slot, without saving anything."""
    try:
        spec = _spec(values, session)
        result = slots_api.check_slot(spec, session, settings)
    except ValidationError as exc:
        session.rollback()
        return invalid(exc), []
    except InvalidInput as exc:
        session.rollback()
        return say(exc), []
    return None, explain(list(result.problems), spec.name, spec.id, session)


@router.get("/lich-phat/moi")
def new_slot(request: Request, session: SessionDep, settings: SettingsDep, _user: Editor) -> Response:
    return _form_page(request, session, settings, _new_values(request, session, settings), slot=None)


@router.post("/lich-phat/kiem-tra")
def check_slot(request: Request, form: Form, session: SessionDep, settings: SettingsDep, _user: Editor) -> Response:
    """The checks a save would run; a fragment for the page's script, or the whole form without JavaScript."""
    values = _values_from_form(form)
    error, problems = _check(values, session, settings)
    slot = session.get(Slot, values["original_id"]) if values["original_id"] else None
    if request.headers.get("X-Fragment"):
        return render(request, "_slot_check.html", {"error": error, "problems": problems, "checked": True,
                                                    "rule_vi": RULE_VI})
    return _form_page(request, session, settings, values, slot=slot, error=error, problems=problems, checked=True)


def _save(request: Request, session: Session, settings: Settings, user: Principal, values: dict[str, Any],
          slot: Slot | None) -> Response:
    try:
        spec = _spec(values, session)
        if slot is None:
            saved = slots_api.create_slot(spec, session, settings, user)
        else:
            saved = slots_api.update_slot(slot.id, spec, session, settings, user)
    except ValidationError as exc:
        session.rollback()
        return _form_page(request, session, settings, values, slot=slot, error=invalid(exc), status_code=422)
    except slots_api.RuleViolationError as exc:
        session.rollback()
        problems = explain(exc.problems, values["name"], slot.id if slot else "", session)
        return _form_page(request, session, settings, values, slot=slot, problems=problems, checked=True,
                          error="Chưa lưu: khung giờ vi phạm quy định dưới đây.", status_code=422)
    except InvalidInput as exc:
        session.rollback()
        return _form_page(request, session, settings, values, slot=slot, error=say(exc), status_code=422)
    except Conflict as exc:
        session.rollback()
        return _form_page(request, session, settings, values, slot=slot, error=str(exc), status_code=422)
    first = _first_day(spec, settings)
    week = f"&week={first.isoformat()}" if first else ""
    zone = f"zone={spec.zones[0]}" if spec.zones not in (None, "all") and spec.zones else "zone="
    return redirect(f"/lich-phat?{zone}{week}#slot-{saved.id}", flash=f"Đã lưu khung giờ «{saved.name}».")


def _first_day(spec: SlotSpec, settings: Settings) -> dt.date | None:
    today = local_today(settings.tz)
    future = [d for d in spec.dates if d >= today]
    return min(future) if future and not spec.days else None


@router.post("/lich-phat/moi")
def create_slot(request: Request, form: Form, session: SessionDep, settings: SettingsDep, user: Editor) -> Response:
    return _save(request, session, settings, user, _values_from_form(form), None)


def _slot(session: Session, slot_id: str) -> Slot:
    slot = session.get(Slot, slot_id)
    if slot is None:
        raise NotFound("khung giờ", slot_id)
    return slot


@router.get("/lich-phat/{slot_id}")
def slot_page(slot_id: str, request: Request, session: SessionDep, settings: SettingsDep, _user: Reader) -> Response:
    slot = _slot(session, slot_id)
    return _form_page(request, session, settings, _values_from_slot(slot), slot=slot)


@router.post("/lich-phat/{slot_id}")
def update_slot(slot_id: str, request: Request, form: Form, session: SessionDep, settings: SettingsDep,
                user: Editor) -> Response:
    slot = _slot(session, slot_id)
    values = _values_from_form(form)
    values["original_id"] = slot.id
    return _save(request, session, settings, user, values, slot)


@router.post("/lich-phat/{slot_id}/xoa")
def delete_slot(slot_id: str, session: SessionDep, user: Editor) -> Response:
    name = _slot(session, slot_id).name
    slots_api.delete_slot(slot_id, session, user)
    return redirect("/lich-phat", flash=f"Đã xóa khung giờ «{name}».")
