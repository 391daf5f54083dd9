"""Browser-test helpers: the live server, a guarded Chromium context, axe, screenshots, the keyboard.

Import as `from tests.browser.support import ...`; the fixtures in tests/browser/conftest.py are
thin wrappers around these, so a test can also build a second guarded context of its own.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    ElementHandle,
    Error,
    Locator,
    Page,
    Playwright,
    Request,
    Response,
    Route,
    WebError,
)

from kamiyo import create_app
from kamiyo.config import DEFAULTS
from kamiyo.extensions import db
from tests.support import TEST_SECRETS, closed_port_url

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"

# Debian's build (scripts/install-system-deps.sh). playwright's own download, `playwright install`,
# needs hosts this network does not reach, so the Python package only drives this binary.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    # Without these Chromium keeps calling Google's hosts (updates, field trials, sync, QUIC
    # probes): on this closed network every call fails, and each one is traffic off the machine.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # What the context's route cannot see (the browser's own requests, WebSockets, service
    # workers) still never leaves the machine: any host but loopback goes to a proxy on a
    # closed port. Chromium never proxies loopback, so the live server is reached directly.
    "--proxy-server=127.0.0.1:9",
]
# The only host a page may reach: the live server's.
LOOPBACK = "127.0.0.1"
VIEWPORT = {"width": 1280, "height": 800}
# Loopback answers in milliseconds; a test that waits longer than this is stuck, and should say so
# well before pytest's own patience runs out. Generous for a loaded 2-core machine.
ACTION_TIMEOUT_MS = 10_000
NAVIGATION_TIMEOUT_MS = 15_000

# axe-core is vendored (tests/browser/vendor/, scripts/update-axe.sh refreshes it): pinned here so a
# changed or truncated file (its MPL-2.0 header included) fails loudly instead of checking less.
AXE_VERSION = "4.14.1"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
AXE_PATH = Path(__file__).with_name("vendor") / "axe.min.js"
# What fails a page: axe's two worst impacts. "moderate" and "minor" are in the returned results.
BLOCKING_IMPACTS = ("serious", "critical")


class BrowserProblems(AssertionError):
    """A console error, page error, failed request, unexpected HTTP status or blocked request."""


class AccessibilityViolations(AssertionError):
    """axe found violations of a blocking impact."""


class KeyboardUnreachable(AssertionError):
    """Tab presses never focused the element."""


# --- the live server ---------------------------------------------------------------------------


@dataclass
class LiveServer:
    """The real app over HTTP on loopback. `url` has no trailing slash; `app` is for seeding data
    (`with live_server.app.app_context(): ...`)."""

    app: Any
    url: str


def live_app_config(template_db: Path, folder: Path) -> dict[str, Any]:
    """The test mapping of tests/conftest.py's app_config, on a copy of the migrated SQLite template."""
    db_path = folder / "kamiyo.db"
    shutil.copy(template_db, db_path)
    return {
        "TESTING": True,
        **TEST_SECRETS,
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{db_path}",
        # Unreachable: no page calls Stripe by accident.
        "STRIPE_API_BASE": closed_port_url(),
    }


@contextmanager
def serve_live(config: dict[str, Any], instance: Path) -> Iterator[LiveServer]:
    """create_app(config) served by werkzeug on a free loopback port in a daemon thread."""
    from werkzeug.serving import make_server

    # The autouse isolated_environment fixture is per test, and this app outlives tests: keep the
    # developer's shell settings and instance/config.py out of it the same way, while it is built
    # (configuration is read in create_app only).
    with pytest.MonkeyPatch.context() as env:
        for name in DEFAULTS:
            env.delenv(name, raising=False)
            env.delenv(f"KAMIYO_{name}", raising=False)
        env.setenv("KAMIYO_INSTANCE_PATH", str(instance))
        app = create_app(config)
    server = make_server(LOOPBACK, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(app=app, url=f"http://{LOOPBACK}:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        with app.app_context():
            db.engine.dispose()


# --- Chromium ----------------------------------------------------------------------------------


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless. playwright gives each launch a new, empty --user-data-dir
    (and removes it on close); each test then gets its own incognito-like context in it."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test` (it installs the Debian package chromium)", pytrace=False)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


@dataclass
class BrowserGuard:
    """Collects what went wrong in one browser context; `check()` raises BrowserProblems.

    Counted: console errors, uncaught page errors, failed requests, responses with a status
    >= 400 not declared with `expect_status`, and any request to a host other than 127.0.0.1
    (aborted before it leaves the browser).
    """

    context: BrowserContext
    problems: list[str] = field(default_factory=list)
    _expected: list[tuple[int, str | None]] = field(default_factory=list)
    # "Failed to load resource" console lines repeat what the network listeners report with more
    # detail (and know whether the status was expected): kept aside until check() sorts them out.
    _load_errors: list[tuple[str, str]] = field(default_factory=list)
    _seen_by_network: set[str] = field(default_factory=set)

    @classmethod
    def attach(cls, context: BrowserContext) -> BrowserGuard:
        guard = cls(context)
        context.route("**/*", guard._route)
        context.on("console", guard._on_console)
        context.on("weberror", guard._on_page_error)
        context.on("requestfailed", guard._on_request_failed)
        context.on("response", guard._on_response)
        return guard

    def expect_status(self, status: int, path: str | None = None) -> None:
        """Declare a response status >= 400 as expected, for one URL path (`"/nope"`) or any."""
        self._expected.append((status, path))

    def clear(self) -> None:
        self.problems.clear()
        self._load_errors.clear()

    def flush(self) -> None:
        """Let events already sent by the browser arrive: one round trip to each open page."""
        for page in self.context.pages:
            try:
                page.evaluate("0")
            except Error:  # closed or navigating: whatever it sent is in by now
                pass

    def found(self) -> list[str]:
        self.flush()
        unexplained = [text for url, text in self._load_errors if url not in self._seen_by_network]
        return [*self.problems, *(f"console error: {text}" for text in unexplained)]

    def check(self) -> None:
        problems = self.found()
        if problems:
            raise BrowserProblems("the browser reported problems:\n  " + "\n  ".join(problems))

    # The listeners run on playwright's dispatcher: they only record.

    def _route(self, route: Route) -> None:
        request = route.request
        if urlsplit(request.url).hostname == LOOPBACK:
            route.fallback()
            return
        self._seen_by_network.add(request.url)
        self.problems.append(f"blocked (not {LOOPBACK}): {request.method} {request.url}")
        route.abort("blockedbyclient")

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url") or ""
        if message.text.startswith("Failed to load resource:"):
            self._load_errors.append((where, message.text))
            return
        self.problems.append(f"console error: {message.text}" + (f" ({where})" if where else ""))

    def _on_page_error(self, error: WebError) -> None:
        self.problems.append(f"page error: {error.error.message}")

    def _on_request_failed(self, request: Request) -> None:
        if request.url in self._seen_by_network:  # blocked by us, already counted
            return
        self._seen_by_network.add(request.url)
        self.problems.append(f"request failed: {request.method} {request.url} ({request.failure})")

    def _on_response(self, response: Response) -> None:
        self._seen_by_network.add(response.url)
        if response.status < 400:
            return
        path = urlsplit(response.url).path
        if any(status == response.status and want in (None, path) for status, want in self._expected):
            return
        self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")


def new_guarded_context(browser: Browser, base_url: str | None = None, **options: Any) -> BrowserGuard:
    """A fresh context (its own cookies and storage) with a BrowserGuard attached; the context is
    `guard.context`. Fixed viewport, locale, time zone and motion, so screenshots compare.
    `options` go to playwright's new_context (java_script_enabled=False, say)."""
    context = browser.new_context(
        **options,
        base_url=base_url,
        viewport=VIEWPORT,
        locale="en-GB",
        timezone_id="UTC",
        color_scheme="light",
        reduced_motion="reduce",
    )
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    return BrowserGuard.attach(context)


# --- accessibility -----------------------------------------------------------------------------


@cache
def axe_source() -> str:
    data = AXE_PATH.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != AXE_SHA256:
        raise AssertionError(
            f"{AXE_PATH} is not axe-core {AXE_VERSION} (sha256 {digest}); refresh it with "
            "scripts/update-axe.sh and update AXE_VERSION and AXE_SHA256"
        )
    return data.decode()


def check_accessibility(
    page: Page,
    *,
    within: str | None = None,
    disable: tuple[str, ...] = (),
    impacts: tuple[str, ...] = BLOCKING_IMPACTS,
) -> dict[str, Any]:
    """Run axe on the page (or on the `within` CSS selector); fail on violations of `impacts`.

    axe is injected through the DevTools protocol, not a <script> tag, so a page's
    Content-Security-Policy neither blocks it nor reports it. `disable` turns rules off by id,
    for a reason the test states. Returns axe's results (every violation, of any impact).
    """
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    options: dict[str, Any] = {"resultTypes": ["violations"]}
    if disable:
        options["rules"] = {rule: {"enabled": False} for rule in disable}
    results = page.evaluate(
        "([within, options]) => axe.run(within ? document.querySelector(within) : document, options)",
        [within, options],
    )
    blocking = [v for v in results["violations"] if v.get("impact") in impacts]
    if blocking:
        lines = [
            f"axe {results['testEngine']['version']}: {len(blocking)} {'/'.join(impacts)} violation(s) on {page.url}"
        ]
        for violation in blocking:
            lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}  {violation['helpUrl']}")
            for node in violation["nodes"]:
                summary = (node.get("failureSummary") or "").replace("\n", " ")
                lines.append(f"    {' '.join(map(str, node['target']))}: {summary}")
        raise AccessibilityViolations("\n".join(lines))
    return results


# --- screenshots -------------------------------------------------------------------------------


def screenshot(page: Page, name: str, *, folder: Path = SCREENSHOTS) -> Path:
    """Save a full-page PNG as artifacts/screenshots/<name>.png (git-ignored); its path."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "page"
    if not safe.endswith(".png"):
        safe += ".png"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / safe
    page.screenshot(path=str(path), full_page=True, animations="disabled", caret="hide")
    return path


# --- the keyboard ------------------------------------------------------------------------------

# Numbers each element the first time it is focused, so a second visit (Tab order wrapped round)
# is known even between two elements that look alike.
_FOCUS_JS = """
(reset) => {
  if (reset || !window.__kamiyoFocusSeen) window.__kamiyoFocusSeen = new Map();
  const seen = window.__kamiyoFocusSeen;
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return {id: -1, label: "(page)"};
  let id = seen.get(el), again = id !== undefined;
  if (!again) { id = seen.size; seen.set(el, id); }
  const label = el.labels && el.labels.length ? el.labels[0].innerText : "";
  const name = (el.getAttribute("aria-label") || label || el.innerText || el.value || el.getAttribute("name") || "")
    .trim().replace(/\\s+/g, " ").slice(0, 40);
  return {id, again, label: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (name ? ` "${name}"` : "")};
}
"""


def describe_focus(page: Page) -> str:
    """The focused element, as `tag#id "accessible text"`, or "(page)" when nothing is."""
    return page.evaluate(_FOCUS_JS, False)["label"]


def tab_to(page: Page, target: str | Locator, *, max_presses: int = 40, backwards: bool = False) -> int:
    """Press Tab (Shift+Tab with backwards=True) from the current focus until `target` is focused;
    the number of presses. Fails, listing the Tab order seen, when the order wraps round or
    max_presses run out first. Then `page.keyboard.press("Enter")` acts on it."""
    locator = page.locator(target) if isinstance(target, str) else target
    element = locator.element_handle()  # waits for it, and refuses a selector matching several
    key = "Shift+Tab" if backwards else "Tab"
    page.evaluate(_FOCUS_JS, True)
    order: list[str] = []
    for presses in range(1, max_presses + 1):
        page.keyboard.press(key)
        if element.evaluate("el => el === document.activeElement"):
            return presses
        focus = page.evaluate(_FOCUS_JS, False)
        order.append(focus["label"])
        if focus.get("again") or (focus["id"] == -1 and order.count("(page)") > 1):
            break
    raise KeyboardUnreachable(
        f"{key} never focused {target!r} ({describe_element(element)}); focus went: " + " → ".join(order)
    )


def describe_element(element: ElementHandle) -> str:
    return element.evaluate(
        "el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + "
        "(el.tabIndex < 0 ? ' tabindex=' + el.tabIndex : '') + (el.disabled ? ' disabled' : '')"
    )
