"""A running service with simulated loudspeakers and Debian's Chromium (headless), driven by Playwright.

One service and one browser per module (starting them is most of the time); each test gets fresh
browser contexts, so cookies never leak between users. Screenshots go to test-artifacts/screenshots/,
at 1366×768 and at a phone's 390 px width; a page wider than the phone fails the test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from radio.service import Service
from radio.settings import REPO_ROOT, Settings, load_settings
from tests.conftest import Running, free_port, role_headers, run_service, unavailable

CHROMIUM = os.environ.get("RADIO_CHROMIUM", "/usr/bin/chromium")
SHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
PASSWORD = "mat-khau-thu"  # tests.conftest.role_headers gives every r-<role> user this password
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives Debian's Chromium headless with Playwright (mandatory in CI)")


@dataclass
class Console:
    """The service under test and a way to open pages in Chromium as one of the role users."""

    service: Service
    base_url: str
    browser: Any
    contexts: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def page(self, role: str | None = None, *, viewport: dict[str, int] | None = None, javascript: bool = True) -> Any:
        """A new tab in a fresh context, logged in as ``r-<role>`` (or not at all)."""
        context = self.browser.new_context(base_url=self.base_url, viewport=viewport or DESKTOP, locale="vi-VN",
                                           timezone_id=self.service.settings.timezone, accept_downloads=True,
                                           java_script_enabled=javascript)
        context.set_default_timeout(20_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        page.on("console", lambda msg: self._console(page, msg))
        if role:
            login(page, f"r-{role}")
        return page

    def _console(self, page: Any, msg: Any) -> None:
        # A 4xx page (a refused login, a form sent back with errors) is expected; script errors are not.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(f"{page.url}: {msg.text}")

    def close_pages(self) -> None:
        for context in self.contexts:
            context.close()
        self.contexts.clear()


def login(page: Any, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Tên đăng nhập").fill(username)
    page.get_by_label("Mật khẩu").fill(password)
    page.get_by_role("button", name="Đăng nhập").click()
    page.wait_for_url(lambda url: "/login" not in url)


def shot(page: Any, name: str) -> None:
    """Screenshots of the whole page at 1366×768 and at 390 px, and the check that nothing is wider than a phone."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    page.evaluate("document.activeElement && document.activeElement.blur && document.activeElement.blur()")
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(SHOTS / f"{name}-1366.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    page.set_viewport_size(size)
    assert overflow <= 1, f"{name}: the page is {overflow}px wider than a 390px phone screen"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright Python package is not installed (pip install playwright)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from tests.test_end_to_end import _start_demo

    tmp = tmp_path_factory.mktemp("console")
    running: list[Running] = []

    def make_settings(**overrides: object) -> Settings:
        port = free_port()
        values: dict[str, object] = {
            "data_dir": tmp / "data", "http_port": port, "embedded_mqtt_port": free_port(),
            "public_base_url": f"http://127.0.0.1:{port}", "command_lead_s": 1.0, "broadcast_timeout_s": 20.0,
            "schedule_sync_s": 2.0,
        }
        return load_settings(**{**values, **overrides})

    def start(service: Service) -> Running:
        running.append(run_service(service))
        return running[-1]

    service = _start_demo(make_settings, start)
    role_headers(service)  # users r-admin, r-officer, r-approver, r-auditor (password mat-khau-thu)
    pw = sync_playwright().start()
    try:
        # Vietnamese browser UI (date and time inputs as dd/mm/yyyy and 24 h) when Debian's chromium-l10n is there.
        env: dict[str, str | float | bool] = {**os.environ, "LANG": "vi_VN.UTF-8", "LANGUAGE": "vi"}
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True, env=env)
        try:
            yield Console(service, f"http://127.0.0.1:{service.settings.http_port}", browser)
        finally:
            browser.close()
    finally:
        pw.stop()
        for r in reversed(running):
            r.stop()


@pytest.fixture
def ui(console: Console) -> Iterator[Console]:
    """The console, with every tab closed after the test and no JavaScript error allowed during it."""
    console.errors.clear()
    yield console
    console.close_pages()
    assert not console.errors, "JavaScript errors in the console:\n" + "\n".join(console.errors)


Shot = Callable[[Any, str], None]
