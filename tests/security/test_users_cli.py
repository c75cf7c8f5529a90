"""`radio user add/passwd/disable` through the real CLI (a subprocess, as an administrator runs it).

Each run gets its own data directory (RADIO_DATA_DIR, so its own SQLite database) and reads the password
from standard input, as a script would. Mistakes end with exit status 2 and one Vietnamese line, no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from radio.logbook import audit
from radio.models import User
from radio.service import Service
from radio.settings import load_settings
from radio.web.app import create_app

PASSWORD = "mat-khau-dai-du"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def radio(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RADIO_DATA_DIR": str(data_dir)}
    env.pop("RADIO_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "radio.cli", *args], input=stdin, env=env, capture_output=True,
                          text=True, timeout=120)


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, a message starting with "Lỗi:" that names the problem, and no Python traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("Lỗi"), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def service(data_dir: Path) -> Service:
    return Service(load_settings(data_dir=data_dir))


def test_add_creates_a_user_who_can_log_in(data_dir: Path) -> None:
    result = radio(data_dir, "user", "add", "can-bo", "--role", "officer", "--name", "Cán bộ", stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    assert "Đã tạo tài khoản can-bo (officer)" in result.stdout
    svc = service(data_dir)
    with svc.factory() as session:
        user = session.scalars(select(User).where(User.username == "can-bo")).one()
        assert (user.role, user.full_name, user.disabled) == ("officer", "Cán bộ", False)
        assert PASSWORD not in user.password_hash
        _total, rows = audit.entries(session, action=audit.USER_CREATED, limit=10)
        assert [r.entity_id for r in rows] == ["can-bo"] and rows[0].actor == audit.ACTOR_CLI
    with TestClient(create_app(svc, manage=False)) as client:
        r = client.post("/api/v1/login", json={"username": "can-bo", "password": PASSWORD})
        assert r.status_code == 200 and r.json()["role"] == "officer"
    svc.engine.dispose()


def test_a_duplicate_user_is_refused(data_dir: Path) -> None:
    assert radio(data_dir, "user", "add", "can-bo", "--role", "officer", stdin=PASSWORD + "\n").returncode == 0
    refused(radio(data_dir, "user", "add", "can-bo", "--role", "auditor", stdin=PASSWORD + "\n"), "can-bo", "đã có")
    svc = service(data_dir)
    with svc.factory() as session:
        assert session.scalars(select(User.role).where(User.username == "can-bo")).all() == ["officer"]
    svc.engine.dispose()


def test_a_short_password_is_refused(data_dir: Path) -> None:
    refused(radio(data_dir, "user", "add", "can-bo", "--role", "officer", stdin="ngan\n"), "mật khẩu", "ít nhất 8")
    assert radio(data_dir, "user", "add", "can-bo", "--role", "officer", stdin=PASSWORD + "\n").returncode == 0
    refused(radio(data_dir, "user", "passwd", "can-bo", stdin="ngan\n"), "ít nhất 8")


@pytest.mark.parametrize("command", ["passwd", "disable", "enable", "token"])
def test_an_unknown_user_is_refused(data_dir: Path, command: str) -> None:
    refused(radio(data_dir, "user", command, "khong-co-ai", stdin=PASSWORD + "\n"),
            "không tìm thấy người dùng «khong-co-ai»")


def test_an_invalid_user_name_is_refused(data_dir: Path) -> None:
    refused(radio(data_dir, "user", "add", "tên có dấu", "--role", "officer", stdin=PASSWORD + "\n"), "tên đăng nhập")


def test_passwd_replaces_the_password_and_ends_sessions(data_dir: Path) -> None:
    assert radio(data_dir, "user", "add", "can-bo", "--role", "officer", stdin=PASSWORD + "\n").returncode == 0
    svc = service(data_dir)
    with TestClient(create_app(svc, manage=False)) as client:
        assert client.post("/api/v1/login", json={"username": "can-bo", "password": PASSWORD}).status_code == 200
        assert client.get("/api/v1/me").status_code == 200
        result = radio(data_dir, "user", "passwd", "can-bo", stdin="mat-khau-moi-hon\n")
        assert result.returncode == 0 and "Đã đổi mật khẩu của can-bo" in result.stdout
        assert client.get("/api/v1/me").status_code == 401  # the open session ended
        client.cookies.clear()
        assert client.post("/api/v1/login", json={"username": "can-bo", "password": PASSWORD}).status_code == 401
        assert client.post("/api/v1/login",
                           json={"username": "can-bo", "password": "mat-khau-moi-hon"}).status_code == 200
    svc.engine.dispose()


def test_disable_blocks_login_and_tokens_and_enable_restores(data_dir: Path) -> None:
    assert radio(data_dir, "user", "add", "can-bo", "--role", "officer", stdin=PASSWORD + "\n").returncode == 0
    token = radio(data_dir, "user", "token", "can-bo").stdout.strip()
    assert token.startswith("rt_")
    svc = service(data_dir)
    with TestClient(create_app(svc, manage=False)) as client:
        bearer = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/me", headers=bearer).status_code == 200
        result = radio(data_dir, "user", "disable", "can-bo")
        assert result.returncode == 0 and "Đã khóa tài khoản can-bo" in result.stdout
        r = client.post("/api/v1/login", json={"username": "can-bo", "password": PASSWORD})
        assert r.status_code == 401 and "không đúng" in r.json()["detail"]  # says nothing about the account
        assert client.get("/api/v1/me", headers=bearer).status_code == 401
        with svc.factory() as session:
            _total, rows = audit.entries(session, action=audit.USER_LOGIN_FAILED, limit=10)
            assert rows[0].entity_id == "can-bo" and (rows[0].after or {}).get("reason") == "disabled"
        assert radio(data_dir, "user", "enable", "can-bo").returncode == 0
        assert client.post("/api/v1/login", json={"username": "can-bo", "password": PASSWORD}).status_code == 200
    svc.engine.dispose()
