"""e2e fixtures: one real `aieval serve` (API + worker, SQLite, fresh temp data dir, port 18000-18999) and
Debian's Chromium driven by Playwright, for the whole session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import launch_chromium, prepare_shared_demo_model, running_server  # noqa: E402

DESKTOP = {"width": 1440, "height": 900}

# A loaded 2-core CI box has needed more than Playwright's default 5 s for a save plus a list reload.
from playwright.sync_api import expect  # noqa: E402

expect.set_options(timeout=20_000)


def pytest_collection_modifyitems(session, config, items):
    if any("e2e" in Path(str(item.fspath)).parts for item in items):
        prepare_shared_demo_model()


@pytest.fixture(scope="session")
def server(tiny_model_dir):
    with running_server(model_roots=(tiny_model_dir,)) as running:  # the wizard registers the tiny model
        yield running
        if running.process.poll() is not None:
            pytest.fail(f"aieval serve died during the e2e run:\n{running.log_tail()}")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """An English desktop page; uncaught script errors fail the test (a blank page usually starts as one)."""
    context = browser.new_context(viewport=DESKTOP, locale="en-US", base_url=server.url, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
