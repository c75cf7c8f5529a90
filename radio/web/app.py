"""The FastAPI app factory: the service starts and stops with the app's lifespan."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import text

from radio.auth import LoginThrottle
from radio.errors import Conflict, InvalidInput, NotFound, RadioError, ServiceUnavailable
from radio.service import Service
from radio.sound.store import AudioStore
from radio.web import api, audit_api, auth_api, pages, programme_api, slots_api, speech_api
from radio.web.deps import ServiceDep
from radio.web.schemas import Health

SHA256 = re.compile(r"^[0-9a-f]{64}$")
STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422, ServiceUnavailable: 503}


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
        if isinstance(exc, InvalidInput) and exc.where:
            body["field"] = exc.where
        problems = getattr(exc, "problems", None)
        if problems:
            body["problems"] = [p.model_dump() if hasattr(p, "model_dump") else p for p in problems]
        return JSONResponse(body, status_code=status)

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

    @app.get("/audio/{name}", tags=["nodes"], response_class=FileResponse)
    def audio(name: str) -> FileResponse:
        """Audio by content hash, for nodes: ``/audio/<sha256>.mp3``."""
        sha = name.removesuffix(".mp3")
        if not SHA256.match(sha) or not store.exists(sha):
            raise NotFound("audio", name)
        path: Path = store.path_for(sha)
        return FileResponse(path, media_type="audio/mpeg", headers={"Cache-Control": "public, max-age=31536000, immutable"})

    app.include_router(auth_api.router)
    app.include_router(api.router)
    app.include_router(programme_api.router)
    app.include_router(slots_api.router)
    app.include_router(speech_api.router)
    app.include_router(audit_api.router)
    app.include_router(pages.router)
    return app
