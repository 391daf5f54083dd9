"""Browser tests: the real app on loopback, driven by headless Chromium (tests/browser/support.py).

Fixtures: live_server (one app and database per module; override live_app_config in a module to
change its configuration), browser (one Chromium per session), guard, browser_context and page
(new for each test). A test that used `guard` (so also `page`) fails on anything the guard
counted; a failed test leaves a screenshot under artifacts/screenshots/failed/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Error, sync_playwright

from tests.browser.support import SCREENSHOTS, launch_chromium, new_guarded_context, screenshot, serve_live
from tests.browser.support import live_app_config as make_live_app_config

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    """Every test in this folder is a browser test: `-m "not browser"` leaves them out."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After the test body, the guard's findings fail the test (in its call phase, as a failure,
    not as an error in teardown). When the body failed first, they are shown beside its error."""
    guard = item.funcargs.get("guard")
    try:
        result = yield
    except BaseException:
        if guard is not None and (found := guard.found()):
            item.add_report_section("call", "browser problems", "\n".join(found))
        raise
    if guard is not None:
        guard.check()
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    page = item.funcargs.get("page")
    if report.when == "call" and report.failed and page is not None and not page.is_closed():
        try:
            path = screenshot(page, item.nodeid, folder=SCREENSHOTS / "failed")
        except Error as exc:  # a crashed page: the failure itself says more
            report.sections.append(("browser", f"no screenshot: {exc}"))
        else:
            report.sections.append(("browser", f"screenshot: {path}"))
    return report


@pytest.fixture(scope="module")
def live_app_config(migrated_template, tmp_path_factory) -> dict:
    """The live server's create_app mapping; a module overrides it to change the configuration:

    @pytest.fixture(scope="module")
    def live_app_config(live_app_config):
        return {**live_app_config, "SOME_SETTING": "value"}
    """
    return make_live_app_config(migrated_template, tmp_path_factory.mktemp("live-db"))


@pytest.fixture(scope="module")
def live_server(live_app_config, tmp_path_factory):
    """The real app served on http://127.0.0.1:<free port>, for the module; stops by itself."""
    with serve_live(live_app_config, tmp_path_factory.mktemp("live-instance")) as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session (starting one costs about a second)."""
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def guard(browser, live_server):
    """The BrowserGuard of this test's context: `guard.expect_status(404, "/path")` declares an
    expected error response; everything else it counts fails the test."""
    found = new_guarded_context(browser, base_url=live_server.url)
    yield found
    found.context.close()


@pytest.fixture
def browser_context(guard):
    """A fresh context (cookies, storage) whose base URL is the live server's."""
    return guard.context


@pytest.fixture
def page(browser_context):
    """A page in the test's context: `page.goto("/dashboard/")` opens the live server's page."""
    return browser_context.new_page()
