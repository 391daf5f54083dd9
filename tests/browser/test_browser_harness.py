"""The browser harness itself: it runs against the pages that exist (the HTML error page), and
each of its guards fails when it should."""

from __future__ import annotations

import struct

import pytest

from tests.browser.support import (
    AXE_VERSION,
    VIEWPORT,
    AccessibilityViolations,
    BrowserProblems,
    KeyboardUnreachable,
    check_accessibility,
    describe_focus,
    new_guarded_context,
    screenshot,
    tab_to,
)
from tests.support import free_port

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>harness</title>{head}</head>
<body><main><h1>Harness</h1>{body}</main></body></html>"""


def serve_html(target, url: str, body: str = "", *, head: str = "", headers: dict | None = None) -> str:
    """Answer `url` with a small page (from the live server's origin, so it is a loopback URL)."""
    target.route(
        url,
        lambda route: route.fulfill(
            status=200, content_type="text/html", headers=headers or {}, body=PAGE.format(head=head, body=body)
        ),
    )
    return url


@pytest.fixture
def spare(browser, live_server):
    """A second guarded context, checked by hand: the test's own guard stays clean."""
    other = new_guarded_context(browser, base_url=live_server.url)
    yield other
    other.context.close()


# --- what exists today: the HTML error page ----------------------------------------------------


def test_the_404_page_renders_accessibly(page, guard):
    guard.expect_status(404, "/no-such-page")

    response = page.goto("/no-such-page")

    assert response.status == 404
    assert page.title() == "404 · Kamiyo Payments"
    assert page.locator("h1").inner_text() == "404"
    assert page.get_by_text("Nothing was found at this address.").is_visible()
    # base.html's stylesheet arrived and was parsed (a missing one would also fail the guard).
    assert page.evaluate("[...document.styleSheets].map(sheet => sheet.cssRules.length > 0)") == [True]
    check_accessibility(page)
    path = screenshot(page, "error-404")
    width, height = png_size(path.read_bytes())
    assert width == VIEWPORT["width"] and height >= VIEWPORT["height"]


def test_axe_in_the_page_is_the_pinned_version(page, guard):
    guard.expect_status(404)
    page.goto("/no-such-page")
    check_accessibility(page)

    assert page.evaluate("axe.version") == AXE_VERSION


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


# --- the guard ---------------------------------------------------------------------------------


def test_the_guard_passes_a_clean_page(spare, live_server):
    page = spare.context.new_page()
    page.goto(serve_html(page, live_server.url + "/__harness/clean", "<p>all fine</p>"))

    spare.check()


def test_the_guard_fails_on_a_console_error(spare):
    page = spare.context.new_page()
    page.goto("data:text/html,<script>console.error('boom')</script>")

    with pytest.raises(BrowserProblems, match="console error: boom"):
        spare.check()


def test_the_guard_ignores_console_output_that_is_no_error(spare):
    page = spare.context.new_page()
    page.goto("data:text/html,<script>console.log('a'); console.warn('b'); console.info('c')</script>")

    spare.check()


def test_the_guard_fails_on_an_uncaught_page_error(spare):
    page = spare.context.new_page()
    page.goto("data:text/html,<script>throw new Error('kaboom')</script>")

    with pytest.raises(BrowserProblems, match="page error: kaboom"):
        spare.check()


def test_the_guard_fails_on_a_failed_request(spare, live_server):
    page = spare.context.new_page()
    dead = f"http://127.0.0.1:{free_port()}/logo.png"  # loopback, nobody listening

    page.goto(serve_html(page, live_server.url + "/__harness/img", f'<img src="{dead}" alt="logo">'))

    assert spare.found() == [f"request failed: GET {dead} (net::ERR_CONNECTION_REFUSED)"]
    with pytest.raises(BrowserProblems):
        spare.check()


def test_the_guard_fails_on_an_undeclared_error_status(spare, live_server):
    page = spare.context.new_page()

    page.goto("/no-such-page")

    # Chromium's own "Failed to load resource" console line is the same failure: counted once.
    assert spare.found() == [f"HTTP 404: GET {live_server.url}/no-such-page"]
    with pytest.raises(BrowserProblems):
        spare.check()


def test_a_declared_status_covers_its_path_and_status_only(spare, live_server):
    page = spare.context.new_page()
    spare.expect_status(404, "/declared")
    spare.expect_status(500, "/no-such-page")

    page.goto("/declared")
    spare.check()
    page.goto("/no-such-page")

    assert spare.found() == [f"HTTP 404: GET {live_server.url}/no-such-page"]


def test_the_guard_blocks_every_host_but_127_0_0_1(spare, live_server):
    page = spare.context.new_page()
    elsewhere = "http://kamiyo.invalid/track.png"
    localhost = f"http://localhost:{free_port()}/logo.png"  # loopback, but not the live server's host
    body = f'<img src="{elsewhere}" alt="a"><img src="{localhost}" alt="b">'

    page.goto(serve_html(page, live_server.url + "/__harness/blocked", body))

    assert sorted(spare.found()) == sorted(
        [f"blocked (not 127.0.0.1): GET {elsewhere}", f"blocked (not 127.0.0.1): GET {localhost}"]
    )


@pytest.mark.xfail(raises=BrowserProblems, strict=True, reason="the page fixture must fail this test")
def test_the_page_fixture_fails_a_test_whose_page_logs_an_error(page):
    """Strict: were the hook not to fail it, this test would XPASS, which fails the run."""
    page.goto("data:text/html,<script>console.error('from a test')</script>")


# --- accessibility -----------------------------------------------------------------------------


def test_accessibility_fails_on_serious_and_critical_violations(page, live_server):
    pixel = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
    body = f'<img src="{pixel}" id="chart"><p id="faint" style="color:#ccc;background:#fff">faint</p>'
    page.goto(serve_html(page, live_server.url + "/__harness/inaccessible", body))

    with pytest.raises(AccessibilityViolations) as failure:
        check_accessibility(page)

    message = str(failure.value)
    assert "image-alt (critical): Images must have alternative text" in message
    assert "#chart" in message
    assert "color-contrast (serious)" in message
    assert "#faint" in message


def test_accessibility_passes_moderate_violations_and_returns_them(page, live_server):
    # A page with no <main> landmark and no <h1>: both rules are of moderate impact.
    page.route(
        live_server.url + "/__harness/moderate",
        lambda route: route.fulfill(
            content_type="text/html",
            body='<!doctype html><html lang="en"><head><title>t</title></head><body><p>text</p></body></html>',
        ),
    )
    page.goto(live_server.url + "/__harness/moderate")

    results = check_accessibility(page)

    assert {"landmark-one-main", "page-has-heading-one"} <= {v["id"] for v in results["violations"]}
    with pytest.raises(AccessibilityViolations, match="landmark-one-main"):
        check_accessibility(page, impacts=("moderate",))


def test_accessibility_runs_under_a_strict_content_security_policy(page, guard, live_server):
    csp = {"Content-Security-Policy": "default-src 'self'; script-src 'none'"}
    page.goto(serve_html(page, live_server.url + "/__harness/csp", "<p>locked</p>", headers=csp))
    # The policy holds: a <script> tag, the usual way to inject axe, is refused (and reported).
    refused = page.evaluate("""() => new Promise(resolve => {
        document.addEventListener("securitypolicyviolation", event => resolve(event.violatedDirective));
        const script = document.createElement("script");
        script.textContent = "window.injected = true";
        document.body.append(script);
    })""")
    assert refused == "script-src-elem"
    assert any("Content Security Policy" in problem for problem in guard.found())
    guard.clear()

    check_accessibility(page)  # and the guard, checked after the test, sees no new CSP report


# --- the keyboard ------------------------------------------------------------------------------

KEYBOARD = """
<a href="#top" id="home">Home</a>
<button id="hidden-from-tab" tabindex="-1">Mouse only</button>
<a href="#x" id="invisible" style="display:none">Invisible</a>
<label>Amount <input id="amount" name="amount"></label>
<button id="save" onclick="document.getElementById('status').textContent = 'saved'">Save</button>
<p id="status" role="status"></p>
"""


def test_tab_to_counts_presses_and_enter_acts(page, live_server):
    page.goto(serve_html(page, live_server.url + "/__harness/keyboard", KEYBOARD))

    assert tab_to(page, "#amount") == 2
    page.keyboard.type("12.50")
    assert tab_to(page, "#save") == 1
    assert describe_focus(page) == 'button#save "Save"'
    page.keyboard.press("Enter")

    assert page.locator("#status").inner_text() == "saved"
    assert page.locator("#amount").input_value() == "12.50"
    assert tab_to(page, "#home", backwards=True) == 2


def test_tab_to_fails_on_an_element_tab_never_reaches(page, live_server):
    page.goto(serve_html(page, live_server.url + "/__harness/keyboard", KEYBOARD))

    with pytest.raises(KeyboardUnreachable) as failure:
        tab_to(page, "#hidden-from-tab")

    message = str(failure.value)
    assert "button#hidden-from-tab tabindex=-1" in message
    # Round once, then stopped: the order is the page's whole Tab order.
    assert message.endswith(
        'focus went: a#home "Home" → input#amount "Amount" → button#save "Save" → (page) → a#home "Home"'
    )
