"""One typed settings object, read from ``RADIO_*`` environment variables.

Built by whoever needs it (the CLI, the app factory, a test) via :func:`load_settings`; never at
import time, so tests can build their own with overrides.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
AUDIO_ASSETS = REPO_ROOT / "audio"


class Settings(BaseSettings):
    """Everything an operator can configure; each field is ``RADIO_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RADIO_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="SQLite file and audio store live here")
    database_url: str | None = Field(default=None, description="default: sqlite:///<data_dir>/radio.db")
    mqtt_url: str | None = Field(default=None, description="mqtt://user:pass@host:port; unset = embedded broker")
    mqtt_secure: bool = Field(default=False, description=(
        "require MQTT accounts: the embedded broker enforces the topic ACL; with RADIO_MQTT_URL the service "
        "logs in as radio-service unless the URL names a user"))
    mqtt_service_password: str | None = Field(default=None, min_length=16,
                                              description="MQTT service account password; default: generated into "
                                                          "<data_dir>/mqtt-service.password")
    embedded_mqtt_host: str = "127.0.0.1"
    embedded_mqtt_port: int = Field(default=1884, ge=1, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    public_base_url: str | None = Field(default=None, description="URL nodes use to fetch audio")
    instance_id: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9._-]{1,64}$",
                             description="names this service instance (MQTT client id); unique per instance")
    role: Literal["all", "api"] = Field(default="all", description=(
        "all: schedule, record node events and serve the API; api: serve the API only (no slot fires, no "
        "recording), for instances behind a reverse proxy so API load never delays a fire (docs/deploy.md)"))
    site_id: str = Field(default="tho-xuong", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    timezone: str = "Asia/Ho_Chi_Minh"

    # Speech and sound
    tts_engine: Literal["espeak", "gtts", "piper"] = "espeak"
    tts_voice: str = "vi"
    tts_rate: int = Field(default=150, ge=80, le=400, description="words per minute (espeak)")
    espeak_pitch: int = Field(default=50, ge=0, le=100, description="espeak-ng pitch")
    piper_model: Path | None = Field(default=None, description="Piper voice model (.onnx; its .onnx.json beside it)")
    piper_binary: str | None = Field(default=None, description="run this piper program instead of in-process piper-tts")
    gtts_timeout_s: float = Field(default=8.0, gt=0, le=120)
    loudness_target_dbfs: float = Field(default=-16.0, ge=-40, le=-3)
    sample_rate: int = Field(default=22050, ge=8000, le=48000)
    mp3_bitrate: str = "64k"
    chime_file: Path = AUDIO_ASSETS / "chime.wav"
    sentence_pause_ms: int = Field(default=400, ge=0, le=5000)
    paragraph_pause_ms: int = Field(default=800, ge=0, le=10000)
    max_bulletin_chars: int = Field(default=20000, ge=100, le=200000)

    # Scheduling and delivery
    schedule_sync_s: float = Field(default=20.0, ge=0.2, le=3600,
                                   description="how often the scheduler re-reads slots changed in the database")
    misfire_grace_s: int = Field(default=300, ge=1, le=86400)
    command_lead_s: float = Field(default=3.0, ge=0, le=120, description="start_at = publish + lead")
    command_validity_s: int = Field(default=600, ge=10, le=86400)
    broadcast_timeout_s: float = Field(default=60.0, ge=1, le=3600,
                                       description="extra wait after the audio's end before open deliveries count as lost")
    outbox_resend_s: float = Field(default=5.0, gt=0, le=3600, description="resend an unanswered command after")
    outbox_tick_s: float = Field(default=1.0, gt=0, le=60, description="how often the outbox looks for work")
    node_silent_after_s: float = Field(default=90.0, gt=0, le=86400, description="flag an online node silent after")
    mqtt_connect_timeout_s: float = Field(default=10.0, gt=0, le=120)

    # Programme rules (non-emergency slots must respect them)
    quiet_hours: str = Field(default="21:30-06:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$",
                             description="no non-emergency broadcast in this local window (HH:MM-HH:MM)")
    session_max_minutes: float = Field(default=30, gt=0, le=240, description="longest allowed session")
    sessions_per_day: int = Field(default=6, ge=1, le=48, description="most sessions per zone per local day")
    max_upload_mb: float = Field(default=50, gt=0, le=1024, description="largest accepted audio upload")
    cap_zone_map: dict[str, list[str]] = Field(
        default_factory=dict,
        description='CAP geocode value -> zone ids, JSON, e.g. {"VN-BG-TX": ["all"], "TX-TDP1": ["tdp-1"]}')
    cap_test_zone: str | None = Field(default=None, description="the only zone CAP Exercise/Test alerts may reach")
    site_name: str = Field(default="Phường Thọ Xương", max_length=200)

    # Security
    secret_key: str | None = Field(default=None, min_length=32,
                                   description="signs web sessions; default: generated into <data_dir>/secret.key")
    admin_password: str | None = Field(default=None, min_length=8,
                                       description="password of the first 'admin' user, created on first start")
    session_hours: float = Field(default=12, gt=0, le=24 * 30)

    # Demo
    demo_delay_s: float = Field(default=15.0, ge=1, le=600, description="demo broadcast fires this long after start")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("must start with mqtt:// or mqtts://")
        return value or None

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'radio.db').resolve()}"
        if not self.public_base_url:
            self.public_base_url = f"http://{self.http_host}:{self.http_port}"
        self.public_base_url = self.public_base_url.rstrip("/")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"

    @property
    def db_url(self) -> str:
        assert self.database_url is not None  # filled by _defaults
        return self.database_url


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides winning."""
    return Settings(**overrides)  # type: ignore[arg-type]
