"""Browser fixtures for the page tests: Debian's Chromium driven by Playwright, headless.

A browser test module marks itself with ``pytestmark = [pytest.mark.browser, ...]`` and
``pytest.mark.usefixtures("chromium_present")`` so it skips (or fails under
``QMS_REQUIRE_SERVICES=1``) before any data is built, then takes ``browser``.
"""

import os
import tempfile
from pathlib import Path

import pytest
from django.db import connections

from tests.conftest import require_service

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, and nothing that reaches for the network this machine does not have.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(tempfile.gettempdir())


@pytest.fixture
def chromium_present():
    require_service(f"Chromium at {CHROMIUM}", CHROMIUM.exists())


@pytest.fixture
def browser(live_server):
    """Headless Chromium, closed before the live server stops: the server's request threads
    (and their database connections) end with the browser's keep-alive connections."""
    # Playwright's sync API runs an event loop in this thread; Django then refuses ORM
    # calls from it unless told that this test thread is not async code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield chromium
            finally:
                chromium.close()
                # ORM calls made while Playwright's loop runs get their own connection
                # (asgiref keys connections by context); close it so none is left open.
                connections.close_all()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
