"""A real hub with the console, and Debian's Chromium driven by Playwright.

One server serves both the demo model (deprecated in this test catalog, so its badge shows)
and the tiny random Mistral Small (images and tools), with auth on: the bootstrap key is a
tenant's, and an admin token opens the admin API.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from modelhub.settings import default_catalog_dir
from tests.api.test_platform_http import cli
from tests.conftest import DEMO_MODEL, MISTRAL, make_settings
from tests.servers import RunningServer, start_server

CHROMIUM = "/usr/bin/chromium"
SUNSET = (datetime.now(UTC) + timedelta(days=60)).date()


def deprecated_demo_catalog(directory: Path) -> Path:
    """The shipped catalog, with the demo model deprecated: sunset in 60 days, Mistral next."""
    directory.mkdir()
    for card in default_catalog_dir().glob("*.toml"):
        shutil.copy(card, directory / card.name)
    demo = directory / "gemma-3-270m-demo.toml"
    text = demo.read_text()
    assert "\n[lifecycle]\n" in text
    demo.write_text(
        text.replace(
            "\n[lifecycle]\n",
            f'\n[lifecycle]\nend_of_life = {SUNSET.isoformat()}\nsuccessor = "{MISTRAL}"\n',
        )
    )
    return directory


def create_admin_token(data_dir: Path) -> str:
    """An admin token, made as an operator makes one: ``modelhub admin-tokens create``."""
    out = cli(data_dir, "admin-tokens", "create", "console-tests")
    return next(word for word in out.split() if word.startswith("mha-"))


class Hub:
    def __init__(self, server: RunningServer, tenant_key: str, admin_token: str):
        self.server = server
        self.tenant_key = tenant_key
        self.admin_token = admin_token

    @property
    def console_url(self) -> str:
        return self.server.base_url + "/console/"


@pytest.fixture(scope="package")
def hub(tmp_path_factory, tiny_mistral) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("console")
    gguf, mmproj, tekken = tiny_mistral
    settings = make_settings(
        tmp,
        auth=True,
        catalog_dir=deprecated_demo_catalog(tmp / "catalog"),
        backends={MISTRAL: {"gguf": str(gguf), "mmproj": str(mmproj), "tokenizer": str(tekken)}},
        engine_slots=4,
        engine_context=8192,
        ledger_flush_interval_s=0.05,
        auth_cache_ttl_s=0,
    )
    first_keys: list[str] = []
    server = start_server(settings, on_first_key=first_keys.append)
    try:
        yield Hub(server, first_keys[0], create_admin_token(settings.data_dir))
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Playwright's sync API runs an event loop in this thread while it is open: it must
    close with the browser tests, or every asyncio test after them finds a running loop."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, hub, tmp_path) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage) on the console; a screenshot of where it ended
    is left in the test's tmp dir. The console works offline: every request it made went to
    the hub itself, and no script failed."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=hub.server.base_url)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    elsewhere: list[str] = []
    tab.on(
        "request",
        lambda r: (
            r.url.startswith((hub.server.base_url + "/", "data:", "blob:"))
            or elsewhere.append(r.url)
        ),
    )
    tab.goto(hub.console_url)
    try:
        yield tab
    finally:
        tab.screenshot(path=tmp_path / "end.png", full_page=True)
        context.close()
    assert not errors, errors
    assert not elsewhere, elsewhere


def sign_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".topbar")).to_be_visible()


__all__ = ["DEMO_MODEL", "MISTRAL", "SUNSET", "Hub", "sign_in"]
