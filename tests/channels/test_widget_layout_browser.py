"""The widget's bubbles keep what they show inside them: a long unbroken word (a link, a
tracking number) wraps within its bubble instead of running out of it and the panel."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.browser

WORD = "x" * 300
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


async def test_a_long_unbroken_word_stays_inside_its_bubble(stack, browser):
    bot = await stack.add_chatbot()
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    try:
        await page.goto(f"{stack.url}/widget/test?chatbot={bot.chatbot_id}")
        await expect(page.locator("#handoff-widget")).to_have_attribute("data-ready", "1", timeout=15000)
        await page.locator(".hf-bubble").click()
        await page.locator(".hf-input").fill(WORD)
        await page.locator(".hf-input").press("Enter")
        text = page.locator(".hf-msg.visitor .hf-text").last
        await expect(text).to_have_text(WORD)
        # The word's own box (its text node's), the bubble's and the panel's.
        word, bubble, panel = await text.evaluate("""(el) => {
            const range = document.createRange();
            range.selectNodeContents(el);
            const box = (r) => ({ left: r.left, right: r.right });
            return [box(range.getBoundingClientRect()), box(el.getBoundingClientRect()),
                    box(el.closest('.hf-panel').getBoundingClientRect())];
        }""")
        assert bubble["left"] - 0.5 <= word["left"] and word["right"] <= bubble["right"] + 0.5, (word, bubble)
        assert panel["left"] <= bubble["left"] and bubble["right"] <= panel["right"], (bubble, panel)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "widget-long-word.png"))
        # The test page has an icon: no 404 for /favicon.ico (nor anything else).
        icon = await page.request.get(f"{stack.url}/favicon.ico")
        assert icon.status == 200 and icon.headers["content-type"].startswith("image/")
        assert not missing, missing
    finally:
        await context.close()
