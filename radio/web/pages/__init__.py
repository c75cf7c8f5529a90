"""The officers' and the office's web console: server-rendered Vietnamese pages (Jinja2).

Pages read and change data through the same functions as the JSON API, work without JavaScript, and
load one small stylesheet and one small script from ``/static`` (no CDN: the ward office may have no
internet). See docs/web.md.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from radio.errors import NotFound
from radio.web.pages import bulletins, home, logbook, login, onair, schedule
from radio.web.pages.common import STATIC, templates

__all__ = ["router", "templates"]

STATIC_TYPES = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}

router = APIRouter(include_in_schema=False)


@router.get("/static/{name}", response_class=FileResponse)
def static(name: str) -> FileResponse:
    """The console's stylesheet and script; URLs carry a content hash (``?v=``), so they are cached for long."""
    if name not in STATIC_TYPES:
        raise NotFound("static file", name)
    return FileResponse(STATIC / name, media_type=STATIC_TYPES[name],
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})


for module in (login, home, bulletins, schedule, onair, logbook):
    router.include_router(module.router)
