"""The AI path end to end on the real broker, Redis and Mongo-wire server: the queue routes
each visitor message by the status it owns and asks intake for an AI turn; intake (the real
openai client against the fake OpenAI server, or the offline responder) answers; the queue
applies the outcome. AI replies, the Human Handoff tool, the schedule, contact capture, the
AI's silence while handed off, Return to AI with the agent's words in the model's context,
intake stopped and started again, the DLQ."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from services.intake import domain
from shared.chatbots import DAYS, ChatbotSettings, HumanHandoffSettings
from tests.fakes.openai_server import Error, FakeOpenAI, Reply, Slow, ToolCall
from tests.intake.pipeline import pipeline


def _closed_today() -> HumanHandoffSettings:
    """A schedule that is open every day except today: now is always outside it."""
    today = DAYS[datetime.now(UTC).weekday()]
    return HumanHandoffSettings(enabled=True, schedule_enabled=True, timezone="UTC",
                                available_days=[d for d in DAYS if d != today],
                                offline_message="We are closed today, leave a message.")


def _llm(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "test-key", "OPENAI_MODEL": "fake-model",
            "OPENAI_MAX_RETRIES": "0", "OPENAI_TIMEOUT_S": "5", "OPENAI_TOTAL_TIMEOUT_S": "3", **extra}


async def test_llm_mode_end_to_end(isolated):
    async with FakeOpenAI() as fake, pipeline(isolated, **_llm(fake)) as p:
        await p.chatbot(ChatbotSettings(
            chatbot_id="on", name="On", instructions="You sell bikes at BikeCo.",
            human_handoff=HumanHandoffSettings(enabled=True, conditions="Hand over any refund.",
                                               contact_fields=["email", "name"])))
        await p.chatbot(ChatbotSettings(chatbot_id="off", name="Off", instructions="You sell cars."))
        await p.chatbot(ChatbotSettings(chatbot_id="sched", name="Sched", human_handoff=_closed_today()))
        fake.when("REFUND-A", ToolCall("request_human_handoff", {"reason": "Topic is a refund"}))
        fake.when("REFUND-B", Reply("Cars have no refunds, sorry."))
        fake.when("REFUND-C", ToolCall("request_human_handoff", {"reason": "Angry visitor"}))
        fake.when("BROKEN-E", Error(500))
        fake.when("SPEAK-AGAIN", Reply("Happy to help again."))
        fake.when("SLOW-F", Slow(30, Reply("too late")))
        async with p.intake() as svc:
            async with httpx.AsyncClient(base_url=svc.url) as http:
                assert (await http.get("/healthz")).json()["ai_mode"] == "llm"
                ready = (await http.get("/readyz")).json()
                # Stateless: ready when the broker and its topics answer; it has no store to check.
                assert ready["ready"] and ready["ai_mode"] == "llm" and ready["checks"] == {"broker": True, "topics": True, "consumers": True}

            a, b, c = p.visitor("on"), p.visitor("off"), p.visitor("sched")
            d, e, f = p.visitor("on", channel="telegram"), p.visitor("off"), p.visitor("off")
            await a.says("I want my money back REFUND-A")
            await b.says("I want my money back REFUND-B")
            await c.says("This is unacceptable REFUND-C")
            await d.says("I want to talk to a human")
            await e.says("Hello BROKEN-E")
            await f.says("Hello SLOW-F")

            # A: the tool call hands off with its reason; the visitor is told and asked for the
            # contact fields through the widget's form.
            handoff = await a.state("handoff")
            assert handoff["reason"] == "Topic is a refund" and handoff["by"] == "ai"
            [notice] = await a.told()
            assert notice["text"] == domain.HANDOFF_NOTICE and notice["sender"] == "ai"
            assert notice["request_contact_fields"] == ["email", "name"]
            [request_a] = fake.requests_containing("REFUND-A")
            system = request_a["messages"][0]
            assert system["role"] == "system"
            assert "You sell bikes at BikeCo." in system["content"] and "Hand over any refund." in system["content"]
            assert [t["function"]["name"] for t in request_a["tools"]] == ["request_human_handoff"]
            assert request_a["model"] == "fake-model"
            await a.submits_contact(email="ann@example.com", name="Ann")
            await p.watch.wait_until_async(lambda: p.queue.record.get_conversation(a.conversation_id),
                                           lambda conv: conv.contact.email == "ann@example.com")
            conv_a = await p.queue.record.get_conversation(a.conversation_id)
            assert (conv_a.contact.name, conv_a.display_name, conv_a.contact_wanted) == ("Ann", "Ann", [])

            # B: tool off: not offered, the model's text is the answer, no handoff.
            [reply_b] = await b.told()
            assert reply_b["text"] == "Cars have no refunds, sorry."
            [request_b] = fake.requests_containing("REFUND-B")
            assert "tools" not in request_b
            assert request_b["messages"][0]["content"] == "You sell cars."

            # C: outside business hours: the offline message, no handoff.
            [reply_c] = await c.told()
            assert reply_c["text"] == "We are closed today, leave a message."

            # D (Telegram): explicit request, detected before the model; a plain contact question.
            handoff_d = await d.state("handoff")
            assert handoff_d["reason"] == domain.EXPLICIT_REQUEST_REASON and handoff_d["by"] == "visitor"
            assert [r for r in fake.requests if r["messages"][-1]["content"] == "I want to talk to a human"] == []
            told = await d.told(count=2)
            # The queue appends the place in line (1 or 2: A's handoff may come first; no history yet).
            assert told[0]["text"] in [domain.HANDOFF_NOTICE + f"\n\nYou're number {n} in line." for n in (1, 2)]
            assert told[1]["text"] == domain.contact_question(["email", "name"])
            assert all(m["request_contact_fields"] == [] for m in told)

            # The visitor answers the question while handed off: captured by the queue, the AI silent.
            await d.says("sure: dan@example.com")
            await d.says("Dan Brown")
            await p.watch.wait_until_async(lambda: p.queue.record.get_conversation(d.conversation_id),
                                           lambda conv: conv.contact.name == "Dan Brown")
            conv_d = await p.queue.record.get_conversation(d.conversation_id)
            assert (conv_d.contact.email, conv_d.contact_wanted, conv_d.message_count) == ("dan@example.com", [], 5)

            # E: the model fails: the visitor gets an apology.
            [reply_e] = await e.told()
            assert reply_e["text"] == domain.LLM_APOLOGY
            # F: the model is too slow: an apology, not silence.
            [reply_f] = await f.told()
            assert reply_f["text"] == domain.LLM_APOLOGY

            # D: an agent replies while handed off, then returns the conversation to the AI: the
            # AI answers the next message with the whole story in its context.
            assert (await d.agent("reply", "Your refund is on its way.", name="Alice"))["ok"]
            assert (await d.agent("return_to_ai"))["ok"]
            await d.says("Are you back? SPEAK-AGAIN")
            answers = await d.told(count=3, sender="ai")
            assert answers[-1]["text"] == "Happy to help again."
            assert len(d.sent(sender="ai")) == 3  # notice, question, nothing while handed off, the answer
            [request_d] = fake.requests_containing("SPEAK-AGAIN")
            contents = [m["content"] for m in request_d["messages"][1:]]
            assert contents[0] == "I want to talk to a human" and contents[-1] == "Are you back? SPEAK-AGAIN"
            assert "Dan Brown" in contents
            assert "[Reply from Alice, a human team member] Your refund is on its way." in contents

            # Malformed input is parked on the DLQ with the error; the consumer goes on.
            await p.producer.send_and_wait(isolated.topic_prefix + "ai.turns", b'{"type": "ai.turn_requested"}',
                                           key=b"x")
            [parked] = await p.watch.wait_for("ai.turns.dlq")
            assert parked["error_kind"] == "invalid" and parked["consumer"] == "intake"

            # One AI turn per message the AI was to answer, one outcome per turn.
            turns = [t for t in p.watch.of("ai.turns") if "turn_id" in t]  # not the malformed one
            outcomes = p.watch.of("conversation.events")
            assert len(turns) == len({t["turn_id"] for t in turns}) == 7
            assert sorted(o["turn_id"] for o in outcomes) == sorted(t["turn_id"] for t in turns)


async def test_offline_mode_detects_explicit_requests_in_several_languages(isolated):
    requests = ["Ich möchte mit einem Menschen sprechen", "Je veux parler à un humain",
                "Quiero hablar con una persona", "Vorrei parlare con un operatore",
                "Quero falar com um atendente", "Ik wil met een medewerker praten", "Can I talk to a real person?",
                "أريد التحدث مع إنسان", "转人工", "मुझे किसी इंसान से बात करनी है"]
    async with pipeline(isolated) as p:
        assert not p.intake_settings.llm_configured
        await p.chatbot(ChatbotSettings(chatbot_id="shop", name="Shop", human_handoff=HumanHandoffSettings(enabled=True)))
        await p.chatbot(ChatbotSettings(chatbot_id="closed", name="Closed", human_handoff=_closed_today()))
        await p.chatbot(ChatbotSettings(chatbot_id="notool", name="No tool"))
        async with p.intake() as svc:
            async with httpx.AsyncClient(base_url=svc.url) as http:
                assert (await http.get("/healthz")).json()["ai_mode"] == "offline"
            visitors = [p.visitor("shop") for _ in requests]
            for v, text in zip(visitors, requests, strict=True):
                await v.says(text)
            plain = p.visitor("shop")
            await plain.says("What are your opening hours?")
            after_hours = p.visitor("closed", channel="whatsapp")
            await after_hours.says("I want to talk to a human")
            tool_off = p.visitor("notool")
            await tool_off.says("I want to talk to a human")

            for v in visitors:
                handoff = await v.state("handoff")
                assert handoff["reason"] == domain.EXPLICIT_REQUEST_REASON and handoff["by"] == "visitor"
            [answer] = await plain.told()
            assert answer["text"] == domain.OFFLINE_RESPONDER_WITH_HANDOFF
            # The same schedule rule as for the AI's tool: outside hours, the offline message.
            [offline] = await after_hours.told()
            assert offline["text"] == "We are closed today, leave a message."
            # With the tool off no handoff ever happens; the responder says so.
            [no] = await tool_off.told()
            assert no["text"] == domain.OFFLINE_RESPONDER_NO_HANDOFF
            for v in (plain, after_hours, tool_off):
                assert p.watch.of("conversation.state", v.conversation_id) == []


async def test_with_intake_stopped_messages_reach_the_dashboard_and_are_answered_once_it_is_back(isolated):
    """The queue records and shows every visitor message by itself: with intake down the
    dashboard still sees each one live, and the AI turns wait on the bus; once intake is back
    each message is answered exactly once, in order."""
    async with pipeline(isolated) as p:
        await p.chatbot(ChatbotSettings(chatbot_id="down", name="Down", human_handoff=HumanHandoffSettings(enabled=True)))
        async with p.intake():
            first = p.visitor("down")
            await first.says("Hello while intake runs")
            [hello] = await first.told()
            assert hello["text"] == domain.OFFLINE_RESPONDER_WITH_HANDOFF
        # intake stopped
        waiting = [p.visitor("down") for _ in range(5)]
        for n, v in enumerate(waiting):
            await v.says(f"Written while intake is down {n}")
        for n, v in enumerate(waiting):
            [shown] = await p.watch.wait_for("dashboard.updates", v.conversation_id)
            assert shown["message"]["text"] == f"Written while intake is down {n}"
        await waiting[0].says("I want to talk to a human")  # in order after its first
        await p.watch.wait_for("ai.turns", count=7)  # every turn is asked for
        await asyncio.sleep(1.0)
        assert [v.sent() for v in waiting] == [[]] * 5  # but nobody answered yet

        async with p.intake():
            for v in waiting[1:]:
                [answer] = await v.told()
                assert answer["text"] == domain.OFFLINE_RESPONDER_WITH_HANDOFF
            # The first of them answered its first message, then handed off on its second.
            told = await waiting[0].told(count=2)
            assert [m["text"] for m in told] == [domain.OFFLINE_RESPONDER_WITH_HANDOFF, domain.HANDOFF_NOTICE]
            await waiting[0].state("handoff")
            await asyncio.sleep(1.0)  # a second answer to anything would be out by now
        assert [len(v.sent()) for v in waiting] == [2, 1, 1, 1, 1]
        assert len(first.sent()) == 1


async def test_a_slow_model_answer_does_not_hold_up_other_conversations(isolated):
    """Two visitors whose turns share one partition: the first one's model call is slow, the
    second one's answer still goes out first (conversations run side by side, each in order)."""
    async with FakeOpenAI() as fake, pipeline(isolated, **_llm(fake, OPENAI_TIMEOUT_S="10",
                                                                   OPENAI_TOTAL_TIMEOUT_S="10")) as p:
        await p.chatbot(ChatbotSettings(chatbot_id="par", name="Par"))
        fake.when("SLOW-ONE", Slow(4, Reply("the slow answer")))
        fake.when("FAST-ONE", Reply("the fast answer"))
        slow, fast = p.visitor("par"), p.visitor("par")
        # Two conversations whose keys land on the same ai.turns partition.
        from aiokafka.partitioner import DefaultPartitioner

        partition = DefaultPartitioner()
        while partition(fast.conversation_id.encode(), list(range(6)), list(range(6))) != \
                partition(slow.conversation_id.encode(), list(range(6)), list(range(6))):
            fast = p.visitor("par")
        async with p.intake():
            await slow.says("Hello SLOW-ONE")
            await p.watch.wait_for("ai.turns", slow.conversation_id)
            await fast.says("Hello FAST-ONE")
            [fast_reply] = await fast.told()
            assert fast_reply["text"] == "the fast answer"
            assert slow.sent() == []  # still thinking
            [slow_reply] = await slow.told()
            assert slow_reply["text"] == "the slow answer"
