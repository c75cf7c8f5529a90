"""What a node must remember across restarts: every command it accepted and the last event it sent for it.

A repeated command id is answered from here instead of being executed again, even after a crash or a
reboot, so nothing ever plays twice. Append-only JSON lines (``journal.jsonl``), compacted on start;
the boot counter and volume live in ``state.json`` next to it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from radio.dispatch.messages import BadMessage, Command, Event, EventType

log = logging.getLogger(__name__)
FINAL_EVENTS = frozenset({EventType.FINISHED, EventType.FAILED, EventType.REJECTED, EventType.EXPIRED})


@dataclass
class Record:
    command: Command
    last: Event | None = None
    started: bool = False  # ever reported `started`: such a command never starts again

    @property
    def final(self) -> bool:
        return self.last is not None and self.last.event in FINAL_EVENTS


class Journal:
    def __init__(self, directory: Path | None, keep_s: float = 86400.0) -> None:
        self.directory = directory
        self.keep_s = keep_s
        self.records: dict[str, Record] = {}
        self._file: IO[str] | None = None

    # persistent node state ---------------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        if self.directory is None:
            return {}
        try:
            data = json.loads((self.directory / "state.json").read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def write_state(self, **values: Any) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        data = {**self.read_state(), **values}
        tmp = self.directory / "state.json.part"
        tmp.write_text(json.dumps(data))
        tmp.replace(self.directory / "state.json")

    # commands ----------------------------------------------------------------------------------
    def open(self, now_ts: float) -> None:
        """Load earlier records, drop those long expired, and rewrite the file compactly."""
        if self.directory is None:
            return
        path = self.directory / "journal.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                self._replay(line)
        self.records = {k: r for k, r in self.records.items()
                        if r.command.valid_until.timestamp() + self.keep_s > now_ts}
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("journal.jsonl.part")
        with tmp.open("w", encoding="utf-8") as f:
            for r in self.records.values():
                f.write(_line("cmd", r.command.model_dump(mode="json", exclude_none=True)))
                if r.started:
                    f.write(_line("started", r.command.id))
                if r.last is not None:
                    f.write(_line("evt", r.last.model_dump(mode="json", exclude_none=True)))
        tmp.replace(path)
        self._file = path.open("a", encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def get(self, command_id: str) -> Record | None:
        return self.records.get(command_id)

    def add_command(self, command: Command) -> Record:
        record = self.records[command.id] = Record(command)
        self._write("cmd", command.model_dump(mode="json", exclude_none=True))
        return record

    def add_event(self, event: Event) -> None:
        record = self.records.get(event.command_id)
        if record is None:
            return
        record.last = event
        if event.event is EventType.STARTED:
            record.started = True
            self._write("started", event.command_id)
        self._write("evt", event.model_dump(mode="json", exclude_none=True))

    def prune(self, now_ts: float) -> None:
        """Forget final records long past their validity (the file is compacted on the next start)."""
        for key in [k for k, r in self.records.items()
                    if r.final and r.command.valid_until.timestamp() + self.keep_s < now_ts]:
            del self.records[key]

    def _write(self, kind: str, value: object) -> None:
        if self._file is None:
            return
        self._file.write(_line(kind, value))
        self._file.flush()  # survives a crash of the process; fsync would also survive power loss, at a cost

    def _replay(self, line: str) -> None:
        try:
            item = json.loads(line)
            kind, value = item["k"], item["v"]
            if kind == "cmd":
                command = Command.model_validate(value)
                self.records[command.id] = Record(command)
            elif kind == "started" and value in self.records:
                self.records[value].started = True
            elif kind == "evt":
                event = Event.model_validate(value)
                if event.command_id in self.records:
                    self.records[event.command_id].last = event
                    if event.event is EventType.STARTED:
                        self.records[event.command_id].started = True
        except (ValueError, KeyError, TypeError, BadMessage):
            log.warning("journal: skipped an unreadable line")  # a torn last line after a power cut


def _line(kind: str, value: object) -> str:
    return json.dumps({"k": kind, "v": value}, ensure_ascii=False, separators=(",", ":")) + os.linesep
