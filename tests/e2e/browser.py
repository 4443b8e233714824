"""A real browser for the console's e2e tests: Playwright driving Debian's chromium.

No browser is downloaded: Playwright (PyPI, the test extra) launches /usr/bin/chromium, which
scripts/install-deps.sh installs from Debian when it is missing. Every page opened through
`Browser.page` records console errors, page errors and failed requests, so a test can assert
that there were none; `shot` saves a screenshot under the test run's folder (and, with
THINGHUB_CONSOLE_SCREENSHOTS=DIR, also into DIR: the pictures in docs/console/ come from
such a run).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS_ENV = "THINGHUB_CONSOLE_SCREENSHOTS"
# How long an action or an `expect` waits at most (both poll): generous, since the machine
# running the tests may be busy; a passing check returns as soon as it holds.
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Watched:
    """A page and what went wrong on it."""

    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.errors, "browser errors:\n" + "\n".join(self.errors)

    def assert_offline(self, base: str) -> None:
        """Every request the page made went to the server itself (no CDN, no font service)."""
        assert self.requests
        here = (base + "/", "ws" + base.removeprefix("http") + "/", "data:", "blob:", "about:")
        elsewhere = [url for url in self.requests if not url.startswith(here)]
        assert not elsewhere, f"requests off the server: {elsewhere}"


@contextmanager
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/install-deps.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watch(context: BrowserContext) -> Watched:
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watched = Watched(page)

    def on_console(message: object) -> None:
        kind = getattr(message, "type", "")
        if kind == "error":
            watched.errors.append(f"console {kind}: {getattr(message, 'text', '')}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.errors.append(f"page error: {error}"))

    def on_failed(request: object) -> None:
        failure = str(getattr(request, "failure", ""))
        # A load the next navigation cancelled (net::ERR_ABORTED) is not an error.
        if "ERR_ABORTED" not in failure:
            watched.errors.append(f"request failed: {getattr(request, 'url', '')} {failure}")

    page.on("requestfailed", on_failed)
    page.on("request", lambda request: watched.requests.append(request.url))
    page.on("websocket", lambda socket: watched.requests.append(socket.url))
    return watched


class Shots:
    """Screenshots of a test run: `name.png` in the run's folder (and the env's folder)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.extra = Path(os.environ[SCREENSHOTS_ENV]) if os.environ.get(SCREENSHOTS_ENV) else None
        self.taken: list[Path] = []

    def __call__(self, page: Page, name: str, *, full_page: bool = False) -> Path:
        """Photograph the page, after checking that it does not scroll sideways (at any
        width the console lays itself out to fit)."""
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: {page.url} scrolls sideways by {overflow}px"
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.taken.append(path)
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.extra / path.name)
        return path
