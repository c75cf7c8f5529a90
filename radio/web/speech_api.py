"""JSON API v1 for speech: the pronunciation lexicon, a normaliser check and the audio preview.

The officer's lexicon entries go to ``<data_dir>/lexicon.local.tsv`` (layered over the shipped
``audio/lexicon.vi.tsv``, local wins), so an upgrade never clobbers them. A new entry is used by the
next synthesis, and since the lexicon's version is part of the audio cache key, bulletins containing
the word are spoken anew. The preview returns exactly the MP3 that would air (same preparation, same
store), so the officer hears the broadcast before it happens.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field

from radio.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from radio.logbook import audit
from radio.speech.engines import (
    SpeechError,
    UnknownEngineError,
    UnknownVoiceError,
    engine_names,
    get_engine,
)
from radio.speech.lexicon import (
    MAX_FIELD_CHARS,
    SiteLexicon,
    add_local_entry,
    local_lexicon_path,
    remove_local_entry,
    site_lexicon_info,
)
from radio.speech.normalize import normalize
from radio.speech.prepare import BulletinTextError, prepare_speech
from radio.web.deps import SessionDep, SettingsDep
from radio.web.security import PREVIEW, READ, Editor

router = APIRouter(prefix="/api/v1", tags=["speech"], dependencies=[Depends(READ)])

AUDIT_ENTITY = "lexicon_entry"
MAX_TEXT_CHARS = 200_000  # the schema's hard ceiling; the site's max_bulletin_chars is checked too
_NO_LINE_BREAKS = r"^[^\t\r\n]*$"
# Printable ASCII except "%" stays as it is; everything else is percent-encoded (UTF-8).
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class LexiconEntryIn(BaseModel):
    written: str = Field(min_length=1, max_length=MAX_FIELD_CHARS, pattern=_NO_LINE_BREAKS,
                         description="as written in bulletins, e.g. 'BCĐ' (all-caps forms match case-sensitively)")
    spoken: str = Field(min_length=1, max_length=MAX_FIELD_CHARS, pattern=_NO_LINE_BREAKS,
                        description="how to say it, e.g. 'ban chỉ đạo'")


class LexiconEntryOut(BaseModel):
    written: str
    spoken: str
    source: Literal["shipped", "local"]


class LexiconOut(BaseModel):
    version: str = Field(description="content hash of the merged lexicon; part of the audio cache key")
    count: int
    local_file: str
    problem: str | None = Field(description="why the local file is not in use (a hand edit gone wrong)")
    entries: list[LexiconEntryOut]


class LexiconChange(BaseModel):
    entry: LexiconEntryOut
    replaced: bool = Field(description="an entry with this written form existed before (shipped or local)")
    version: str
    heard: str = Field(description="the written form as the normaliser now reads it")


class NormalizeOut(BaseModel):
    text: str
    spoken: str


class PreviewIn(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    engine: str | None = Field(default=None, max_length=32, description="default: the site's engine")
    voice: str | None = Field(default=None, max_length=64, description="default: the site's voice")
    rate: int | None = Field(default=None, ge=80, le=450, description="words per minute; default: the site's")


class EngineOut(BaseModel):
    name: str
    voices: list[str]


class EnginesOut(BaseModel):
    default_engine: str
    default_voice: str
    default_rate: int
    engines: list[EngineOut]


def _entries_out(settings: SettingsDep) -> LexiconOut:
    info = site_lexicon_info(settings)
    entries = [LexiconEntryOut(written=w, spoken=s, source=info.source(w))
               for w, s in sorted(info.lexicon.entries.items(), key=lambda item: item[0].casefold())]
    return LexiconOut(version=info.lexicon.version, count=len(entries), local_file=str(local_lexicon_path(settings)),
                      problem=info.problem, entries=entries)


def _nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value).strip()


def _entry_state(info: SiteLexicon, written: str) -> dict[str, str] | None:
    """The entry as it is read at this site (for the audit trail), or None if there is none."""
    spoken = info.lexicon.get(written)
    return None if spoken is None else {"written": written, "spoken": spoken, "source": info.source(written)}


def _audit(session: SessionDep, actor: str, written: str, before: dict[str, str] | None,
           after: dict[str, str] | None) -> None:
    """Append a lexicon change to the audit trail (a site setting: ``settings.changed``) and commit it."""
    audit.record(session, actor=actor, action=audit.SETTINGS_CHANGED, entity_type=AUDIT_ENTITY, entity_id=written,
                 before=before, after=after)
    session.commit()


def _field_of(message: str, default: str) -> str:
    return next((f for f in ("written", "spoken") if message.startswith(f)), default)


@router.get("/lexicon", response_model=LexiconOut)
def get_lexicon(settings: SettingsDep) -> LexiconOut:
    """Every entry in use (shipped and the officer's, local winning), with the lexicon's version."""
    return _entries_out(settings)


@router.post("/lexicon", response_model=LexiconChange)
def add_lexicon_entry(entry: LexiconEntryIn, settings: SettingsDep, session: SessionDep,
                      user: Editor) -> LexiconChange:
    """Add or replace a pronunciation; it is saved to the local file and used by the next synthesis.

    The change is recorded in the audit trail with the entry before (None if new) and after."""
    before = site_lexicon_info(settings)
    if before.problem is not None:
        raise Conflict(f"không đọc được {local_lexicon_path(settings)}, hãy sửa hoặc xóa tệp trước: {before.problem}")
    try:
        after = add_local_entry(settings, entry.written, entry.spoken)
    except ValueError as exc:
        message = str(exc)
        field = _field_of(message, "")
        if not field:  # the file changed under us and is now malformed
            raise Conflict(message) from None
        raise InvalidInput(message.removeprefix(field).lstrip(), where=field) from None
    written = _nfc(entry.written)  # as the lexicon stores it
    _audit(session, user.username, written, _entry_state(before, written), _entry_state(after, written))
    return LexiconChange(
        entry=LexiconEntryOut(written=written, spoken=after.lexicon.entries[written], source="local"),
        replaced=written in before.lexicon,
        version=after.lexicon.version,
        heard=normalize(written, after.lexicon),
    )


@router.delete("/lexicon/{written}", status_code=status.HTTP_204_NO_CONTENT)
def delete_lexicon_entry(written: str, settings: SettingsDep, session: SessionDep, user: Editor) -> Response:
    """Remove one of the officer's entries (a shipped entry it overrode applies again).

    The audit record's ``after`` is the shipped reading that applies again, or None."""
    key = _nfc(written)
    before = site_lexicon_info(settings)
    try:
        after = remove_local_entry(settings, written)
    except ValueError as exc:
        raise Conflict(str(exc)) from None
    if after is None:
        if key in before.lexicon:  # nothing was removed: the lexicon is as it was read before
            raise Conflict(f"{written!r} là mục có sẵn của hệ thống, không xóa được; muốn đổi cách đọc, "
                           "hãy thêm một mục riêng với cùng chữ viết")
        raise NotFound("lexicon entry", written)
    _audit(session, user.username, key, _entry_state(before, key), _entry_state(after, key))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/tts/normalize", response_model=NormalizeOut)
def normalize_text(settings: SettingsDep,
                   text: Annotated[str, Query(min_length=1, max_length=MAX_TEXT_CHARS)]) -> NormalizeOut:
    """The spoken form of ``text``, with the site lexicon (what the engine will be given)."""
    _check_length(text, settings.max_bulletin_chars)
    return NormalizeOut(text=text, spoken=normalize(text, site_lexicon_info(settings).lexicon))


@router.get("/tts/engines", response_model=EnginesOut)
def list_engines(settings: SettingsDep) -> EnginesOut:
    """The engines a bulletin may ask for, with their voice names, and the site defaults."""
    engines = []
    for name in engine_names():
        try:
            voices = list(getattr(get_engine(name, settings), "voices", ()))
        except SpeechError:
            voices = []
        engines.append(EngineOut(name=name, voices=voices))
    return EnginesOut(default_engine=settings.tts_engine, default_voice=settings.tts_voice,
                      default_rate=settings.tts_rate, engines=engines)


def _check_length(text: str, limit: int) -> None:
    if len(text) > limit:
        raise InvalidInput(f"dài {_vi_count(len(text))} ký tự; giới hạn là {_vi_count(limit)} ký tự", where="text")


def _vi_count(n: int) -> str:
    """A count as Vietnamese writes it: 20001 → "20.001"."""
    return f"{n:,}".replace(",", ".")


def _header(value: str) -> str:
    return quote(" ".join(value.split()), safe=_HEADER_SAFE)


@router.post("/tts/preview", response_class=Response, dependencies=[Depends(PREVIEW)],
             responses={200: {"content": {"audio/mpeg": {}}, "description": "the MP3 that would air"}})
def preview(body: PreviewIn, settings: SettingsDep) -> Response:
    """The exact MP3 that would air for this text (chime, pauses, loudness), stored and cached as for air.

    Headers: ``X-Audio-Duration`` (seconds), ``X-Audio-Engine`` (engine used), ``X-Audio-Sha256``,
    ``X-Audio-Cached``, and ``X-Audio-Fallback`` (percent-encoded reason) when espeak stood in.
    """
    _check_length(body.text, settings.max_bulletin_chars)
    if body.engine is not None and body.engine not in engine_names():
        raise InvalidInput(f"không có bộ đọc {body.engine!r}; hãy chọn một trong: {', '.join(engine_names())}",
                           where="engine")
    try:
        audio = prepare_speech([body.text], settings, engine=body.engine, voice=body.voice, rate=body.rate)
    except BulletinTextError as exc:
        raise InvalidInput(str(exc), where="text") from None
    except UnknownEngineError as exc:
        raise InvalidInput(str(exc), where="engine") from None
    except UnknownVoiceError as exc:
        raise InvalidInput(str(exc), where="voice") from None
    except SpeechError as exc:
        raise ServiceUnavailable(f"không bộ đọc nào đọc được văn bản: {exc}") from None
    except ValueError as exc:  # the remaining caller mistake an engine reports is the rate
        message = str(exc)
        raise InvalidInput(message, where="rate" if "tốc độ" in message or "rate" in message else "text") from None
    headers = {
        "X-Audio-Duration": f"{audio.duration_s:.3f}",
        "X-Audio-Engine": _header(audio.engine),
        "X-Audio-Sha256": audio.sha256,
        "X-Audio-Cached": "true" if audio.cached else "false",
        "Cache-Control": "no-store",
        "Content-Disposition": 'inline; filename="preview.mp3"',
    }
    if audio.fallback_reason:
        headers["X-Audio-Fallback"] = _header(audio.fallback_reason)
    return Response(content=audio.path.read_bytes(), media_type="audio/mpeg", headers=headers)
