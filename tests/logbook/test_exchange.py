"""The JSON exchange export: its shape, its digest, and that docs/exchange.md documents every key it writes."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from radio.cli import main
from radio.db import make_engine, migrate, session_factory, transaction
from radio.logbook import exchange, sample
from radio.logbook.asrun import Period
from radio.settings import REPO_ROOT, Settings
from tests.logbook.conftest import seeded

DOC = REPO_ROOT / "docs" / "exchange.md"


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    with seeded(db_url) as factory:
        yield factory


@pytest.fixture
def doc(factory: sessionmaker[Session], tmp_path: Path) -> dict[str, object]:
    with factory() as s:
        return exchange.build(s, Settings(data_dir=tmp_path), Period(sample.FIRST, sample.LAST, sample.TZ),
                              now=sample.NOW)


def test_document_shape(doc: dict) -> None:  # type: ignore[type-arg]
    """Station, zones, clusters, schedule with RRULE, bulletins and as-run per broadcast and cluster."""
    assert doc["schema"] == "radio.exchange/1" and doc["schema_version"] == 1
    assert doc["generated_at"] == "2024-09-13T05:00:00Z" and doc["timezone"] == "Asia/Ho_Chi_Minh"
    assert doc["period"] == {"from": "2024-09-02", "to": "2024-09-15", "timezone": "Asia/Ho_Chi_Minh"}
    assert doc["station"] == {"id": "tho-xuong", "name": "Phường Thọ Xương", "level": "commune",
                              "kind": "đài truyền thanh thông minh"}
    assert [z["id"] for z in doc["zones"]] == ["tdp-1", "tdp-2", "tdp-3", "tdp-4"]
    assert len(doc["clusters"]) == 6 and doc["clusters"][0]["zone_id"] == "tdp-1"
    slots = {s["id"]: s for s in doc["schedule"]}
    assert slots["sang-ngay-thuong"]["recurrence"]["rrule"] == "FREQ=WEEKLY;INTERVAL=1;BYDAY=MO,TU,WE,TH,FR;WKST=MO"
    assert slots["sang-ngay-thuong"]["whole_ward"] and slots["sang-ngay-thuong"]["recurrence"]["holidays"] == "skip"
    assert slots["chieu-t3-t5"]["zone_ids"] == ["tdp-1", "tdp-2"] and slots["chieu-t3-t5"]["start_time"] == "17:00:00"
    assert slots["chieu-t3-t5"]["items"][0]["bulletin_id"] == "doan-thanh-nien-mot-cua"
    assert {b["status"] for b in doc["bulletins"]} == {"approved", "submitted"}
    assert len(doc["as_run"]) == 13
    last = doc["as_run"][-1]
    assert last["scheduled_at"] == "2024-09-12T23:30:00Z" and last["status"] == "partial"
    assert last["coverage"] == {"targeted": 6, "played_fully": 5, "ratio": 0.8333}
    lost = next(d for d in last["deliveries"] if d["cluster_id"] == "loa-tdp4-a" and d["part"] == 1)
    assert (lost["state"], lost["played_s"], lost["played_fully"]) == ("failed", 12.0, False)
    assert doc["audit"]["head_id"] == 8 and doc["audit"]["chain_ok"] is True


def test_digest_covers_the_whole_document(doc: dict) -> None:  # type: ignore[type-arg]
    """The digest is SHA-256 of the canonical JSON without it, survives a JSON round trip, and changes with any edit."""
    again = json.loads(exchange.dumps(doc))
    body = {k: v for k, v in again.items() if k != "digest"}
    text = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(text.encode()).hexdigest() == doc["digest"] == exchange.digest(again)
    again["as_run"][0]["status"] = "completed" if again["as_run"][0]["status"] != "completed" else "failed"
    assert exchange.digest(again) != doc["digest"]
    assert "\\u" not in exchange.dumps(doc)  # Vietnamese written as UTF-8, not escaped


def test_every_written_key_is_documented(doc: dict) -> None:  # type: ignore[type-arg]
    """docs/exchange.md names every key the export writes (top level, nested objects, arrays of objects)."""
    documented = set(re.findall(r"`([a-z_0-9]+)`", DOC.read_text(encoding="utf-8")))
    written: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                written.add(key)
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(doc)
    assert written - documented == set()


def test_without_a_period_the_whole_history_is_exported(factory: sessionmaker[Session], tmp_path: Path) -> None:
    """No dates: every broadcast ever, oldest first; period is null."""
    with factory() as s:
        doc = exchange.build(s, Settings(data_dir=tmp_path), None, now=sample.NOW)
    assert doc["period"] is None and len(doc["as_run"]) == 13
    times = [b["scheduled_at"] for b in doc["as_run"]]
    assert times == sorted(times)


def test_cli_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """'radio export-exchange -o FILE' writes the UTF-8 JSON and says how much it holds."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("RADIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RADIO_DATABASE_URL", url)
    engine = make_engine(url)
    migrate(engine)
    with transaction(session_factory(engine)) as s:
        sample.seed(s)
    engine.dispose()
    out = tmp_path / "trao-doi.json"
    assert main(["export-exchange", "-o", str(out), "--from", "2024-09-09", "--to", "2024-09-15"]) == 0
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["period"]["from"] == "2024-09-09" and len(doc["as_run"]) == 7
    assert "Đã xuất" in capsys.readouterr().out
