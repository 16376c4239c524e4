"""The Dagster UI in a real browser: Debian's Chromium, headless, driven by Playwright, opens
initialize_dev, launches a run from the Launchpad and sees it succeed. The screenshot is kept
under test-artifacts/ (git-ignored)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbinit_pipeline_tests.test_operations.conftest import ARTIFACTS, LOCATION, DagsterStack

CHROMIUM = Path("/usr/bin/chromium")
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


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A page of Debian's Chromium with a fresh profile (never a browser downloaded by Playwright)."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def test_launchpad_runs_initialize_dev_to_success(dagster_stack: DagsterStack, browser_page: Any) -> None:
    page = browser_page
    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(f"{dagster_stack.url}/locations/{LOCATION}/jobs/initialize_dev/playground")
    launch = page.get_by_role("button", name="Launch Run")
    launch.wait_for(timeout=60_000)
    page.get_by_text("No errors").wait_for(timeout=30_000)  # the default run config is valid
    launch.click()
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"), timeout=30_000)
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    try:
        page.get_by_text("RUN_SUCCESS").first.wait_for(timeout=120_000)
        # The header's status badge follows the event stream over a websocket and can lag behind
        # it on a busy machine (seen: still "Started" 10 s after RUN_SUCCESS); a reload reads the
        # run's status afresh, as a user pressing F5 would.
        page.reload()
        page.get_by_text("Success", exact=True).first.wait_for(timeout=60_000)
    finally:
        page.screenshot(path=str(ARTIFACTS / "ui-launchpad-initialize_dev.png"), full_page=True)
    run = dagster_stack.run(run_id)
    assert run["jobName"] == "initialize_dev"
    assert run["status"] == "SUCCESS"
    assert {"key": "dbinit/env", "value": "dev"} in run["tags"]
