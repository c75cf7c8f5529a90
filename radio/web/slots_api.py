"""Slot CRUD: the same slot shape as the programme file, the same rules (conflicts, quiet hours, caps).

Every change is checked against the stored programme before it is committed, and audited in the
same transaction; ``POST /slots/check`` runs the checks without saving, for forms that warn inline.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from radio.errors import Conflict, InvalidInput, NotFound
from radio.logbook import asrun, audit
from radio.models import AudioAsset, Bulletin, NodeGroup, Segment, Slot, Zone
from radio.schedule.loader import AudioItemSpec, Counts, RelayItemSpec, SlotSpec, write_slot
from radio.schedule.planning import validate_slots
from radio.settings import Settings, load_settings
from radio.web import queries
from radio.web.deps import SessionDep, SettingsDep, get_settings
from radio.web.schemas import SlotOut
from radio.web.security import EDIT, READ, Editor

router = APIRouter(prefix="/api/v1", tags=["slots"], dependencies=[Depends(READ)])


class RuleProblem(BaseModel):
    rule: str
    message: str
    other_slot_id: str | None
    at: str | None


class CheckOut(BaseModel):
    ok: bool
    problems: list[RuleProblem]


class RuleViolationError(InvalidInput):
    """The slot breaks a programme rule; carries every violation for the client to show inline."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems), where="slot")


def _check_refs(session: Session, spec: SlotSpec) -> None:
    """Every id the slot names must exist; the error names the field."""
    def need(model: type, ident: str, where: str) -> None:
        if session.get(model, ident) is None:
            raise InvalidInput(f"«{ident}» không tồn tại", where=where)

    if spec.segment:
        need(Segment, spec.segment, "segment")
    for zone in () if spec.zones in (None, "all") else spec.zones:
        need(Zone, zone, "zones")
    for group in spec.groups or ():
        need(NodeGroup, group, "groups")
    for index, item in enumerate(spec.play):
        if isinstance(item, AudioItemSpec):
            need(AudioAsset, item.audio, f"play[{index}].audio")
        elif not isinstance(item, RelayItemSpec):
            need(Bulletin, item, f"play[{index}]")
    if spec.zones is None and not spec.groups:
        raise InvalidInput("hãy chọn tổ dân phố (hoặc 'all' cho toàn phường) hoặc nhóm loa", where="zones")


def _apply(session: Session, spec: SlotSpec, settings: Settings) -> tuple[Slot, list[RuleProblem]]:
    _check_refs(session, spec)
    write_slot(session, spec, Counts())
    session.flush()
    slot = session.get_one(Slot, spec.id)
    violations = validate_slots(session, [slot], settings) if slot.enabled else []
    tz = settings.tz
    return slot, [RuleProblem(rule=v.rule, message=v.message, other_slot_id=v.other_slot_id,
                              at=v.at.astimezone(tz).isoformat() if v.at else None) for v in violations]


def _save(session: Session, spec: SlotSpec, settings: Settings, actor: str, action: str,
          before: dict[str, Any] | None) -> SlotOut:
    slot, problems = _apply(session, spec, settings)
    if problems:
        session.rollback()
        raise RuleViolationError(problems)
    out = queries.slot_out(slot)
    audit.record(session, actor=actor, action=action, entity_type="slot", entity_id=slot.id, before=before,
                 after=out.model_dump(mode="json"))
    session.commit()
    return out


@router.get("/slots/{slot_id}", response_model=SlotOut)
def get_slot(slot_id: str, session: SessionDep) -> SlotOut:
    slot = session.get(Slot, slot_id)
    if slot is None:
        raise NotFound("slot", slot_id)
    return queries.slot_out(slot)


@router.post("/slots", response_model=SlotOut, status_code=201)
def create_slot(spec: Annotated[SlotSpec, Body()], session: SessionDep, settings: SettingsDep,
                user: Editor) -> SlotOut:
    if session.get(Slot, spec.id) is not None:
        raise Conflict(f"khung giờ «{spec.id}» đã tồn tại")
    return _save(session, spec, settings, user.username, audit.SLOT_CREATED, None)


@router.put("/slots/{slot_id}", response_model=SlotOut)
def update_slot(slot_id: str, spec: Annotated[SlotSpec, Body()], session: SessionDep, settings: SettingsDep,
                user: Editor) -> SlotOut:
    if spec.id != slot_id:
        raise InvalidInput(f"mã khung giờ trong nội dung «{spec.id}» khác mã trên đường dẫn «{slot_id}»", where="id")
    slot = session.get(Slot, slot_id)
    if slot is None:
        raise NotFound("slot", slot_id)
    before = queries.slot_out(slot).model_dump(mode="json")
    _keep_past(session, slot_id, settings)
    return _save(session, spec, settings, user.username, audit.SLOT_UPDATED, before)


def _keep_past(session: Session, slot_id: str, settings: Settings | None) -> None:
    """Before a slot changes or goes: store its past occurrences that left no row, so past reports stay as they are."""
    tz = settings.tz if settings is not None else load_settings().tz
    grace = settings.misfire_grace_s if settings is not None else 300
    asrun.record_unaired(session, [slot_id], tz=tz, grace_s=grace)


@router.delete("/slots/{slot_id}", status_code=204)
def delete_slot(slot_id: str, session: SessionDep, user: Editor,
                settings: Annotated[Settings | None, Depends(get_settings)] = None) -> Response:
    """Delete a slot; its past broadcasts stay in the as-run log, linked to it and with the segment they had."""
    slot = session.get(Slot, slot_id)
    if slot is None:
        raise NotFound("slot", slot_id)
    before = queries.slot_out(slot).model_dump(mode="json")
    _keep_past(session, slot_id, settings)
    session.delete(slot)
    audit.record(session, actor=user.username, action=audit.SLOT_DELETED, entity_type="slot", entity_id=slot_id,
                 before=before, after=None)
    session.commit()
    return Response(status_code=204)


@router.post("/slots/check", response_model=CheckOut, dependencies=[Depends(EDIT)])
def check_slot(spec: Annotated[SlotSpec, Body()], session: SessionDep, settings: SettingsDep) -> CheckOut:
    """Run every check a save would run, without saving: for forms that show problems before saving."""
    try:
        _slot, problems = _apply(session, spec, settings)
    finally:
        session.rollback()
    return CheckOut(ok=not problems, problems=problems)
