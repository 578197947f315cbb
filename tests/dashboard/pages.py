"""What the browser tests do as an agent: sign in, find stats and rows, take screenshots."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from playwright.async_api import Page, expect

from tests.dashboard.stack import PASSWORD, Stack

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

XSS = "<img src=x onerror=alert(1)>"

# Records desktop notifications and beeps (WebAudio oscillators) the page makes.
RECORD_ALERTS = """
  window.__notifications = [];
  window.__notificationObjects = [];  // to click them as the agent would
  window.__beeps = 0;
  const RealNotification = window.Notification;
  class RecordingNotification extends RealNotification {
    constructor(title, options) {
      super(title, options);
      window.__notifications.push({ title, body: options && options.body });
      window.__notificationObjects.push(this);
    }
  }
  Object.defineProperty(RecordingNotification, 'permission', { get: () => RealNotification.permission });
  window.__permissionRequests = 0;
  RecordingNotification.requestPermission = (...a) => { window.__permissionRequests += 1; return RealNotification.requestPermission(...a); };
  window.Notification = RecordingNotification;
  const realOsc = AudioContext.prototype.createOscillator;
  AudioContext.prototype.createOscillator = function () { window.__beeps += 1; return realOsc.call(this); };
"""


# Every Content-Security-Policy violation on a signed-in page (tests/dashboard/conftest.py
# fails a test that caused one): the dashboard must work under the gateway's policy.
CSP_VIOLATIONS: list[str] = []
REPORT_CSP = """
  document.addEventListener('securitypolicyviolation', (e) =>
    console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`));
"""


def watch_csp(context) -> None:
    """Record CSP violations on the context's pages: Chromium's own "Refused to ..." console
    messages and the pages' `securitypolicyviolation` events."""
    def on_console(msg) -> None:
        text = msg.text
        if text.startswith("Refused to") or text.startswith("CSP violation") or "Content Security Policy" in text:
            CSP_VIOLATIONS.append(text)

    context.on("console", on_console)


async def wait_until(page: Page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JS expression until it is truthy. (Playwright's `wait_for_function` polls with
    a string `eval` in the page, which the dashboard's CSP refuses; `evaluate` is not page
    script and is not subject to it.)"""
    from tests.support import eventually

    async def check():
        return await page.evaluate(expression)

    await eventually(check, timeout=timeout)


def bot_id() -> str:
    return f"shop{uuid.uuid4().hex[:6]}"


async def sign_in(browser, stack: Stack, email: str, *, notifications: bool = True, viewport=None, ws_route=None,
                  timezone_id: str | None = None):
    """`timezone_id`: the agent's browser's zone (Playwright's; default: the machine's)."""
    zone = {"timezone_id": timezone_id} if timezone_id else {}
    context = await browser.new_context(viewport=viewport or {"width": 1366, "height": 860}, base_url=stack.url, **zone)
    if ws_route is not None:
        await context.route_web_socket(re.compile(r"/ws$"), ws_route)
    if notifications:
        await context.grant_permissions(["notifications"], origin=stack.url)
    await context.add_init_script(RECORD_ALERTS)
    await context.add_init_script(REPORT_CSP)
    watch_csp(context)
    page = await context.new_page()
    page.dialogs = []
    page.errors = []
    async def on_dialog(dialog) -> None:
        page.dialogs.append(dialog.message)
        await dialog.dismiss()  # awaited: an alert left open would block the page

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#agent-name")).not_to_be_empty()
    return context, page


def stat(page: Page, key: str):
    return page.locator(f'[data-stat="{key}"] .stat-value')


def row(page: Page, cid: str):
    return page.locator(f'.handoff-row[data-cid="{cid}"]')


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)
