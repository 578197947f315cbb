"""A team on the Handoff tab (issue #14, presence and claims): two agents in two browser
contexts, each on its own gateway instance (their own socket hub and bus consumer; presence
crosses over Redis and `agent.presence`, claims over the queue). One walk: presence appears on
the other agent's row and pane and vanishes when the page is closed; the typing indicator;
Take shows the assignee to both; the other agent who starts typing is stopped with "Alex is
handling this" and takes over, which leaves a system line in both transcripts; the list's
All / Unassigned / Mine filter; a Reopen gives the claim back only to an agent still on the team. (The claim race is tested at the queue: tests/queue/test_assignment.py.)"""

from __future__ import annotations

import types

import pytest
from playwright.async_api import expect

from services.gateway.app import create_app as create_gateway
from services.gateway.claims import previous_assignee_on_team
from services.queue.assignment import took_over_line
from tests.dashboard.pages import row, shot, sign_in
from tests.harness import run_in_process

pytestmark = pytest.mark.browser


async def test_two_agents_see_each_other_and_claim_a_conversation(browser, stack):
    bot, alex_email = await stack.team("Team Shop", "alex", "Alex")
    dana_email = f"dana-{bot}@example.com"
    await stack.create_agent(dana_email, "Dana", [bot])
    v = await stack.handed_off(bot, "Vera", text="My order never came", reason="User asked for a person")
    cid = v.conversation_id

    second = stack.gateway.app.state.gateway.settings.model_copy()
    async with run_in_process("gateway-2", create_gateway, second) as gateway_2:
        alex_ctx, alex = await sign_in(browser, stack, alex_email)
        dana_ctx, dana = await sign_in(browser, types.SimpleNamespace(url=gateway_2.url), dana_email)
        try:
            await expect(row(alex, cid)).to_have_count(1)
            await expect(row(dana, cid)).to_have_count(1)

            # Alex opens the conversation: Dana's row says so, live, from the other gateway.
            await row(alex, cid).click()
            await expect(row(dana, cid).locator(".row-presence")).to_have_text("AAlex is viewing")
            await expect(row(dana, cid).locator(".row-presence .avatar")).to_have_text("A")
            # Dana opens it too: each pane shows the other.
            await row(dana, cid).click()
            await expect(dana.locator(".pane-presence")).to_contain_text("Alex is viewing")
            await expect(alex.locator(".pane-presence")).to_contain_text("Dana is viewing")

            # Alex types: Dana sees it; Alex's own presence is never shown to Alex.
            await alex.locator("textarea.reply-input").press_sequentially("Hi Vera")
            await expect(dana.locator(".pane-presence")).to_contain_text("Alex is typing…")
            await expect(row(dana, cid).locator(".row-presence")).to_contain_text("Alex is typing…")
            await expect(alex.locator(".pane-presence")).not_to_contain_text("Alex")

            # Alex takes it: both see who handles it, on the row and in the pane.
            await alex.locator('[data-action="take"]').click()
            await expect(alex.locator(".pane-claim")).to_have_text("AYou're handling this")
            await expect(dana.locator(".pane-claim")).to_have_text("AAlex is handling this")
            await expect(row(dana, cid).locator(".row-assignee")).to_have_text("AAlex")
            await expect(row(alex, cid).locator(".row-assignee")).to_have_text("AYou")

            # The filter: Alex's "Mine" has it, Dana's has not; "Unassigned" neither; All both.
            await dana.locator('.claim-filter [data-filter="mine"]').click()
            await expect(row(dana, cid)).to_have_count(0)
            await expect(dana.locator(".list-filtered")).to_have_text("None of the open handoffs is yours.")
            await alex.locator('.claim-filter [data-filter="mine"]').click()
            await expect(row(alex, cid)).to_have_count(1)
            await alex.locator('.claim-filter [data-filter="unassigned"]').click()
            await expect(row(alex, cid)).to_have_count(0)
            await alex.locator('.claim-filter [data-filter="all"]').click()
            await dana.locator('.claim-filter [data-filter="all"]').click()
            await expect(row(alex, cid)).to_have_count(1)

            # Dana starts typing: stopped by the guard, Send held until she chooses.
            box = dana.locator("textarea.reply-input")
            await box.press_sequentially("I can help")
            guard = dana.locator(".claim-guard")
            await expect(guard).to_be_visible()
            await expect(guard).to_contain_text("Alex is handling this.")
            await expect(dana.locator('[data-action="send"]')).to_be_disabled()
            await box.press("Enter")  # not sent either
            await expect(dana.locator(".msg-agent")).to_have_count(0)
            await shot(dana, "team-guard")
            await guard.get_by_role("button", name="Take over").click()

            # Taken over: both panes say Dana handles it, and both transcripts have the line.
            line = took_over_line("Dana", "Alex")
            for page in (alex, dana):
                await expect(page.locator(".msg-system")).to_contain_text(line)
            await expect(alex.locator(".pane-claim")).to_have_text("DDana is handling this")
            await expect(dana.locator(".pane-claim")).to_have_text("DYou're handling this")
            await expect(dana.locator(".claim-guard")).to_be_hidden()
            await expect(dana.locator('[data-action="send"]')).to_be_enabled()  # her draft is kept

            # Close, then Reopen by Alex: the claim comes back to Dana, still on the team.
            await dana.locator('.pane-actions [data-action="close"]').click()
            await alex.locator('.pane-actions [data-action="reopen"]').click()
            await expect(alex.locator(".pane-claim")).to_have_text("DDana is handling this")
            await expect(row(dana, cid).locator(".row-assignee")).to_have_text("DYou")

            # Alex closes the page: his presence leaves Dana's pane and row at once (his socket closed).
            await expect(dana.locator(".pane-presence")).to_contain_text("Alex")
            await alex_ctx.close()
            await expect(dana.locator(".pane-presence")).to_be_hidden()
            await expect(row(dana, cid).locator(".row-presence")).to_have_count(0)

            # Closed again: a Reopen keeps the claim only while that agent is still a member (the
            # gateway, owner of agents, decides what the reopen command says).
            await dana.locator('.pane-actions [data-action="close"]').click()
            await expect(dana.locator('.pane-actions [data-action="reopen"]')).to_be_visible()
            gateway_1 = stack.gateway.app.state.gateway
            assert await previous_assignee_on_team(gateway_1, bot, cid)
            dana_agent, _ = await stack.agents.find_login(dana_email)
            await stack.agents.set_memberships(dana_agent.agent_id, [])
            assert not await previous_assignee_on_team(gateway_1, bot, cid)
            assert not dana.errors, dana.errors
        finally:
            await dana_ctx.close()
            await alex_ctx.close()
