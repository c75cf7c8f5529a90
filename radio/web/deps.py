"""FastAPI dependencies as Annotated aliases: settings, a session per request, the running service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from radio.service import Service
from radio.settings import Settings


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.service.settings
    return settings


def get_session(service: Annotated[Service, Depends(get_service)]) -> Iterator[Session]:
    with service.factory() as session:
        yield session


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
