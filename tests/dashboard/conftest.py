"""Fixtures for the dashboard tests: a plain static server for the page's modules (the
session's headless Chromium is `browser` in tests/conftest.py)."""

from __future__ import annotations

import types
import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from playwright.async_api import expect

from tests.conftest import Isolated
from tests.harness import run_in_process

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "services" / "gateway" / "static"
# The machine is shared and small: give live updates room before an expectation fails
# (an expectation that holds returns as soon as it does; this is not a timed assertion).
expect.set_options(timeout=10_000)

def _static_app(_settings) -> FastAPI:
    app = FastAPI()
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/blank")
    async def blank() -> HTMLResponse:
        return HTMLResponse("<!doctype html><html><head><title>modules</title></head><body></body></html>")

    return app


@pytest.fixture(scope="session")
async def static_server():
    """The dashboard's files alone (no API): for testing the JS modules in the browser."""
    async with run_in_process("static", _static_app, types.SimpleNamespace(http_port=0)) as running:
        yield running


@pytest.fixture
async def module_page(browser, static_server):
    """A blank page on the static server's origin, ready to import the dashboard modules."""
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(static_server.url + "/blank")
    yield page
    await context.close()
    assert not errors, errors


@pytest.fixture(scope="session")
async def stack(infra):
    """The real queue and gateway, started once for the dashboard tests, on their own topics,
    databases and consumer group. Each test seeds its own chatbot and agents, so tests do not
    see each other's data."""
    from tests.dashboard.stack import running_stack

    async with running_stack(Isolated(infra, uuid.uuid4().hex[:8])) as running:
        yield running


@pytest.fixture(autouse=True)
def no_csp_violations():
    """No test's signed-in page (tests/dashboard/pages.sign_in) trips the gateway's
    Content-Security-Policy; a test that provokes one on purpose takes it out of the list."""
    from tests.dashboard.pages import CSP_VIOLATIONS

    CSP_VIOLATIONS.clear()
    yield
    assert not CSP_VIOLATIONS, CSP_VIOLATIONS
