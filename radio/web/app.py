"""The FastAPI app factory: the service starts and stops with the app's lifespan."""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from radio.auth import LoginThrottle
from radio.errors import Conflict, InvalidInput, NotFound, RadioError, ServiceUnavailable
from radio.service import Service
from radio.sound.store import AudioStore
from radio.web import air_api, api, audit_api, auth_api, metrics, pages, programme_api, slots_api, speech_api
from radio.web.deps import ServiceDep
from radio.web.schemas import Health

log = logging.getLogger(__name__)
SHA256 = re.compile(r"^[0-9a-f]{64}$")
STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422, ServiceUnavailable: 503}
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
AUDIO_CACHE_BYTES = 64 * 1024 * 1024  # recently served audio kept in memory
AUDIO_CACHE_FILE_MAX = 16 * 1024 * 1024  # larger files are streamed from disk each time


class _AudioCache:
    """Least recently served audio bytes, by sha256, up to AUDIO_CACHE_BYTES; used on the event loop only."""

    def __init__(self, max_bytes: int = AUDIO_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0

    def get(self, sha: str) -> bytes | None:
        body = self._items.get(sha)
        if body is not None:
            self._items.move_to_end(sha)
        return body

    def put(self, sha: str, body: bytes) -> None:
        if sha in self._items:
            return
        self._items[sha] = body
        self._size += len(body)
        while self._size > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._size -= len(old)


ERROR_SCHEMA = {"type": "object", "properties": {
    "detail": {"description": "what is wrong, for a person", "anyOf": [{"type": "string"}, {"type": "array"}]},
    "field": {"type": "string"}, "problems": {"type": "array"}}}


def _document_errors(app: FastAPI) -> None:
    """Every operation may answer 4xx (auth, not found, conflict, validation, throttling) and 503 (no broker)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            for ops in schema.get("paths", {}).values():
                for op in ops.values():
                    for code in ("4XX", "503"):
                        op.setdefault("responses", {}).setdefault(code, {
                            "description": "error", "content": {"application/json": {"schema": ERROR_SCHEMA}}})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(service: Service, *, manage: bool = True) -> FastAPI:
    """Build the app around a service; with ``manage`` the app's lifespan starts and stops it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage:
            service.start()
        try:
            yield
        finally:
            if manage:
                service.stop()

    app = FastAPI(title="radio — đài truyền thanh thông minh", version="1", lifespan=lifespan)
    app.state.service = service
    app.state.login_throttle = LoginThrottle()
    store = AudioStore(service.settings.audio_dir)

    @app.exception_handler(RadioError)
    async def radio_error(_request: Request, exc: RadioError) -> JSONResponse:
        status = next((code for cls, code in STATUS.items() if isinstance(exc, cls)), 400)
        body: dict[str, object] = {"detail": str(exc)}
        if isinstance(exc, InvalidInput):  # the same shape as FastAPI's own 422: a list naming each field
            loc = ["body", *(exc.where or "").replace("]", "").replace("[", ".").split(".")] if exc.where else ["body"]
            body["detail"] = [{"loc": loc, "msg": exc.detail, "type": "value_error"}]
        problems = getattr(exc, "problems", None)
        if problems:
            body["problems"] = [p.model_dump() if hasattr(p, "model_dump") else p for p in problems]
        return JSONResponse(body, status_code=status)

    @app.exception_handler(IntegrityError)
    async def integrity(_request: Request, exc: IntegrityError) -> JSONResponse:
        """A safety net: a write that breaks a database constraint is a conflict, never a 500."""
        log.warning("refused a write that breaks a database constraint: %s", exc.orig)
        return JSONResponse({"detail": "the change conflicts with stored data (a missing or duplicate reference)"},
                            status_code=409)

    @app.exception_handler(UnicodeError)
    async def bad_text(_request: Request, exc: UnicodeError) -> JSONResponse:
        """Lone surrogates (\\ud800…) are valid JSON escapes but not text: refuse them instead of failing later."""
        return JSONResponse({"detail": [{"loc": ["body"], "msg": f"text contains invalid characters ({exc.reason})",
                                         "type": "value_error"}]}, status_code=422)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    def healthz(svc: ServiceDep) -> JSONResponse:
        try:
            with svc.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            db_ok = True
        except Exception:
            db_ok = False
        mqtt_ok = svc.mqtt is not None and svc.mqtt.connected
        ok = db_ok and mqtt_ok
        body = Health(status="ok" if ok else "unhealthy", database=db_ok, mqtt=mqtt_ok)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    audio_cache = _AudioCache()

    @app.get("/audio/{name}", tags=["nodes"], response_class=Response,
             responses={200: {"content": {"audio/mpeg": {}}, "description": "the audio file"}})
    async def audio(name: str) -> Response:
        """Audio by content hash, for nodes: ``/audio/<sha256>.mp3``.

        A whole fleet fetches the same file within seconds of a fire, so it is served from memory (the bytes of
        a hash never change) by the event loop itself: no thread hop and no file I/O per request.
        """
        sha = name.removesuffix(".mp3")
        if not SHA256.match(sha):
            raise NotFound("audio", name)
        body = audio_cache.get(sha)
        if body is None:
            try:
                path: Path = store.path_for(sha)
                size = path.stat().st_size
            except FileNotFoundError:
                raise NotFound("audio", name) from None
            if size > AUDIO_CACHE_FILE_MAX:  # long recordings stream from disk
                return FileResponse(path, media_type="audio/mpeg", headers=IMMUTABLE)
            body = await anyio.to_thread.run_sync(path.read_bytes)
            audio_cache.put(sha, body)
        return Response(body, media_type="audio/mpeg", headers=IMMUTABLE)

    _document_errors(app)
    app.include_router(auth_api.router)
    app.include_router(api.router)
    app.include_router(programme_api.router)
    app.include_router(air_api.router)
    app.include_router(slots_api.router)
    app.include_router(speech_api.router)
    app.include_router(audit_api.router)
    app.include_router(metrics.router)
    app.include_router(pages.router)
    return app
