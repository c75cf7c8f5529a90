"""Node configuration: a small TOML or INI file, then ``RADIO_NODE_*`` environment variables, then CLI flags.

Example ``/etc/radio-node.toml`` (an ``.ini``/``.conf`` file takes the same keys under ``[node]``)::

    [node]
    id = "loa-tdp1-a"
    zone = "tdp-1"
    site = "tho-xuong"
    broker = "mqtt://10.8.0.1:1883"
    cache_dir = "/var/lib/radio-node"
    cache_max_mb = 256
    player = "auto"          # auto | mpv | ffplay | ffmpeg-pulse | ffmpeg-alsa | aplay | paplay | null | simulated
    volume = 80
    heartbeat_s = 30

Every key can be given as ``RADIO_NODE_<KEY>`` (``RADIO_NODE_ID``, ``RADIO_NODE_BROKER``...).
"""

from __future__ import annotations

import configparser
import os
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from radio.dispatch.mqtt import BrokerAddress
from radio.errors import InvalidInput

ENV_PREFIX = "RADIO_NODE_"
PLAYERS = ("auto", "mpv", "ffplay", "ffmpeg-pulse", "ffmpeg-alsa", "aplay", "paplay", "null", "simulated")


@dataclass(kw_only=True)
class NodeConfig:
    """What one node agent runs with (built by :func:`load_node_config`, or directly by the simulator)."""

    node_id: str
    zone_id: str
    site: str
    broker: BrokerAddress
    cache_dir: Path  # audio cache; the journal and boot counter live here too unless state_dir is set
    state_dir: Path | None = None
    session: int = field(default_factory=lambda: int(time.time() * 1000))  # boot counter: grows every start
    cache_max_bytes: int = 256 * 1024 * 1024
    player: str = "simulated"
    volume: int = 80
    heartbeat_s: float = 30.0
    clock_sync_s: float = 300.0  # re-sync period; also on connect and on a `sync` command
    clock_samples: int = 5  # exchanges per sync; the one with the smallest round trip wins
    output_latency_s: float = 0.0  # start the player this much early: its own start-up time
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 15.0
    keepalive_s: int = 30
    journal_keep_s: float = 86400.0  # forget answered commands this long after their valid_until
    clock_skew_s: float = 0.0  # simulation only: this node's clock is this far off the true time

    @property
    def state_path(self) -> Path:
        return self.state_dir or self.cache_dir


class _FileSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    zone: str = Field(min_length=1, max_length=64)
    site: str = Field(default="tho-xuong", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    broker: str = "mqtt://127.0.0.1:1883"
    cache_dir: Path | None = None
    state_dir: Path | None = None
    cache_max_mb: float = Field(default=256, gt=0, le=1_000_000)
    player: str = Field(default="auto", pattern="^(" + "|".join(PLAYERS) + ")$")
    volume: int = Field(default=80, ge=0, le=100)
    heartbeat_s: float = Field(default=30, ge=1, le=3600)
    clock_sync_s: float = Field(default=300, ge=5, le=86400)
    output_latency_ms: float = Field(default=0, ge=0, le=5000)
    reconnect_max_s: float = Field(default=15, ge=1, le=600)


def read_file(path: Path) -> dict[str, Any]:
    """The ``[node]`` table of a TOML file, or the ``[node]`` section of an INI file (top-level keys too for TOML)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read the node configuration: {exc}", where=str(path)) from None
    if path.suffix in (".ini", ".conf", ".cfg"):
        parser = configparser.ConfigParser()
        try:
            parser.read_string(text, source=str(path))
        except configparser.Error as exc:
            raise InvalidInput(str(exc), where=str(path)) from None
        return dict(parser["node"]) if parser.has_section("node") else {}
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(str(exc), where=str(path)) from None
    table = data.pop("node", {})
    return {**data, **table} if isinstance(table, dict) else data


def load_node_config(path: Path | None = None, env: Mapping[str, str] | None = None,
                     **overrides: object) -> NodeConfig:
    """File < environment < explicit overrides (CLI flags; ``None`` values are ignored)."""
    values: dict[str, Any] = read_file(path) if path is not None else {}
    environ = os.environ if env is None else env
    for name in _FileSettings.model_fields:
        if (ENV_PREFIX + name.upper()) in environ:
            values[name] = environ[ENV_PREFIX + name.upper()]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        s = _FileSettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{first['msg']} (env {ENV_PREFIX}{key.upper()})", where=f"node.{key}") from None
    try:
        broker = BrokerAddress.parse(s.broker)
    except ValueError as exc:
        raise InvalidInput(str(exc), where="node.broker") from None
    cache_dir = s.cache_dir or Path("data") / "node-cache" / s.id
    return NodeConfig(node_id=s.id, zone_id=s.zone, site=s.site, broker=broker, cache_dir=cache_dir,
                      state_dir=s.state_dir, cache_max_bytes=int(s.cache_max_mb * 1024 * 1024), player=s.player,
                      volume=s.volume, heartbeat_s=s.heartbeat_s, clock_sync_s=s.clock_sync_s,
                      output_latency_s=s.output_latency_ms / 1000, reconnect_max_s=s.reconnect_max_s)
