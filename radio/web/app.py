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
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

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


BAD_VALUE_VI = "Dữ liệu gửi lên không hợp lệ: có giá trị quá lớn, ngoài phạm vi hoặc không lưu được."
NUL_VI = "Dữ liệu gửi lên chứa ký tự NUL (\\0), không được phép."
JSON_PREFIXES = ("/api/", "/audio/", "/healthz", "/metrics", "/openapi.json", "/static/")
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)  # an escape \u0000 not itself escaped
_FORM_NUL = re.compile(rb"%00")
TEXT_BODIES = ("application/json", "application/x-www-form-urlencoded")
MAX_SCANNED_BODY = 4 * 1024 * 1024  # larger text bodies are left to the validators and the handlers below


def _wants_page(scope: Scope) -> bool:
    """An HTML console route (answered with an error page) rather than the JSON API."""
    return not str(scope.get("path", "")).startswith(JSON_PREFIXES)


def _unprocessable(request: Request, message: str, loc: list[str]) -> Response:
    """422 for a value the database or the calendar cannot hold: a Vietnamese page for the console, JSON otherwise."""
    if _wants_page(request.scope):
        from radio.web.pages.common import error_page  # the console's own error page (no import cycle at load)

        return error_page(request, 422, message)
    return JSONResponse({"detail": [{"loc": loc, "msg": message, "type": "value_error"}]}, status_code=422)


class RejectNul:
    """Refuse NUL characters in the path, the query or a JSON/form body before any handler or database sees them.

    PostgreSQL cannot store U+0000 in text (the driver raises ``DataError``), SQLite would store it silently
    and a later reader may truncate at it; neither is ever a legitimate input here. Uploaded files (multipart)
    are not scanned (audio bytes contain zeros); their text fields are covered by the DataError handler.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or b""
        if "\x00" in scope.get("path", "") or b"%00" in raw_path or b"\x00" in raw_path:
            await self._refuse(scope, receive, send, ["path"])
            return
        query: bytes = scope.get("query_string", b"")
        if b"%00" in query or b"\x00" in query:
            await self._refuse(scope, receive, send, ["query"])
            return
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE") or ctype not in TEXT_BODIES:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: pass it on as it came
                replay = [message]
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body")) and size <= MAX_SCANNED_BODY
        else:
            replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": size > MAX_SCANNED_BODY
                       and bool(message.get("more_body"))}]
        body = b"".join(chunks)
        if b"\x00" in body or (_JSON_NUL if ctype == "application/json" else _FORM_NUL).search(body):
            await self._refuse(scope, receive, send, ["body"])
            return

        async def replayed() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.app(scope, replayed, send)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, loc: list[str]) -> None:
        log.info("refused a request with a NUL character in its %s: %s %s", loc[0], scope.get("method"),
                 str(scope.get("path", "")).replace("\x00", "\\0")[:200])
        request = Request(scope, receive)
        if _wants_page(scope):
            request.state.principal = None  # the error page is shown without the signed-in menu
        response = _unprocessable(request, NUL_VI, loc)
        await response(scope, receive, send)


DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8",
               "favicon-32x32.png": "image/png"}
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

    # /docs is served below from the swagger-ui-bundle wheel: FastAPI's own pages load Swagger UI and ReDoc from
    # a CDN, which a ward office without Internet never reaches (a blank page).
    app = FastAPI(title="radio — đài truyền thanh thông minh", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
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
        reason = getattr(exc, "reason", exc)
        return JSONResponse({"detail": [{"loc": ["body"], "msg": f"text contains invalid characters ({reason})",
                                         "type": "value_error"}]}, status_code=422)

    @app.exception_handler(DataError)
    async def bad_value(request: Request, exc: DataError) -> Response:
        """A value the database refuses (a NUL in text, a number out of range…) is the caller's error: 422."""
        log.info("refused a value the database cannot store: %s", str(exc.orig).splitlines()[0][:200])
        return _unprocessable(request, BAD_VALUE_VI, ["body"])

    @app.exception_handler(StatementError)
    async def bad_parameter(request: Request, exc: StatementError) -> Response:
        """A parameter that cannot even be sent (too large for SQLite's integers…): 422; anything else stays a 500."""
        if isinstance(exc, DBAPIError) or not isinstance(exc.orig, ValueError | OverflowError | TypeError):
            raise exc
        log.info("refused a value the database cannot take: %s", exc.orig)
        return _unprocessable(request, BAD_VALUE_VI, ["body"])

    @app.exception_handler(OverflowError)
    async def overflow(request: Request, exc: OverflowError) -> Response:
        """A number or date beyond what Python's calendar or the database can hold (year 9999 + 1 week…): 422."""
        log.info("refused an out-of-range value: %s", exc)
        return _unprocessable(request, BAD_VALUE_VI, ["query"])

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
    @app.api_route("/docs", methods=["GET", "HEAD"], include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} — API",
                                   swagger_js_url="/docs/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/assets/swagger-ui.css",
                                   swagger_favicon_url="/docs/assets/favicon-32x32.png")

    @app.api_route("/docs/assets/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    def docs_asset(name: str) -> FileResponse:
        if name not in DOCS_ASSETS:
            raise NotFound("static file", name)
        return FileResponse(swagger_ui_path / name, media_type=DOCS_ASSETS[name],
                            headers={"Cache-Control": "public, max-age=86400"})

    app.include_router(auth_api.router)
    app.include_router(api.router)
    app.include_router(programme_api.router)
    app.include_router(air_api.router)
    app.include_router(slots_api.router)
    app.include_router(speech_api.router)
    app.include_router(audit_api.router)
    app.include_router(metrics.router)
    app.include_router(pages.router)
    app.add_middleware(RejectNul)
    return app
