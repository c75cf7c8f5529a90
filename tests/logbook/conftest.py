"""Shared set-up for the logbook tests: a migrated database holding the sample history."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from radio.db import make_engine, migrate, session_factory, transaction
from radio.logbook import sample


@contextmanager
def seeded(url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on a migrated database at ``url`` with the sample history stored."""
    engine = make_engine(url)
    migrate(engine)
    factory = session_factory(engine)
    with transaction(factory) as s:
        sample.seed(s)
    try:
        yield factory
    finally:
        engine.dispose()
