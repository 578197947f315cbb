"""Intake against the real broker and Redis, with the real openai client talking to the
fake OpenAI server: AI replies, the Human Handoff tool, the schedule, contact capture, the
AI's silence while handed off, the offline responder, the DLQ."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaProducer

from services.intake import domain
from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.chatbots import DAYS, ChatbotSettings, HumanHandoffSettings
from shared.events import (
    ChatbotSettingsChanged,
    ContactDetails,
    ConversationStateChanged,
    Envelope,
    OutboundMessage,
    VisitorContactSubmitted,
    VisitorIdentity,
    VisitorMessageReceived,
)
from shared.ids import conversation_id_for, new_id
from tests.fakes.openai_server import Error, FakeOpenAI, Reply, Slow, ToolCall
from tests.harness import run_in_process, settings_from_env
from tests.intake.watch import TopicWatcher

OUT_TOPICS = ("conversation.events", "outbound.messages", "visitor.messages.dlq")


class Visitor:
    """Publishes what channels and the queue would, for one conversation."""

    def __init__(self, producer: AIOKafkaProducer, prefix: str, chatbot_id: str, channel: str = "web") -> None:
        self.producer, self.prefix, self.chatbot_id, self.channel = producer, prefix, chatbot_id, channel
        self.external_id = "v-" + new_id()[:8]
        self.conversation_id = conversation_id_for(chatbot_id, channel, self.external_id)
        self.identity = VisitorIdentity(external_id=self.external_id)

    async def _send(self, topic: str, event: Envelope) -> None:
        await self.producer.send_and_wait(self.prefix + topic, event.model_dump_json().encode(),
                                          key=event.partition_key())

    async def says(self, text: str) -> None:
        await self._send("visitor.messages", VisitorMessageReceived(
            chatbot_id=self.chatbot_id, conversation_id=self.conversation_id, channel=self.channel,
            visitor=self.identity, text=text, channel_message_id=new_id()))

    async def submits_contact(self, **contact: str) -> None:
        await self._send("visitor.messages", VisitorContactSubmitted(
            chatbot_id=self.chatbot_id, conversation_id=self.conversation_id, channel=self.channel,
            visitor=self.identity, contact=ContactDetails(**contact)))

    async def queue_moves(self, transition: str, status: str, previous: str) -> None:
        await self._send("conversation.state", ConversationStateChanged(
            chatbot_id=self.chatbot_id, conversation_id=self.conversation_id, channel=self.channel,
            visitor=self.identity, transition=transition, status=status, previous_status=previous,
            by="agent:a1"))


async def publish_settings(producer: AIOKafkaProducer, prefix: str, *bots: ChatbotSettings) -> None:
    for bot in bots:
        event = ChatbotSettingsChanged(chatbot_id=bot.chatbot_id, settings=bot)
        await producer.send_and_wait(prefix + "chatbot.settings", event.model_dump_json().encode(),
                                     key=event.partition_key())


def _closed_today() -> HumanHandoffSettings:
    """A schedule that is open every day except today: now is always outside it."""
    today = DAYS[datetime.now(UTC).weekday()]
    return HumanHandoffSettings(enabled=True, schedule_enabled=True, timezone="UTC",
                                available_days=[d for d in DAYS if d != today],
                                offline_message="We are closed today, leave a message.")


async def test_llm_mode_end_to_end(isolated):
    prefix = isolated.topic_prefix
    bots = [
        ChatbotSettings(chatbot_id="on", name="On", instructions="You sell bikes at BikeCo.",
                        human_handoff=HumanHandoffSettings(enabled=True, conditions="Hand over any refund.",
                                                           contact_fields=["email", "name"])),
        ChatbotSettings(chatbot_id="off", name="Off", instructions="You sell cars."),
        ChatbotSettings(chatbot_id="sched", name="Sched", human_handoff=_closed_today()),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    try:
        await publish_settings(producer, prefix, *bots)
        async with FakeOpenAI() as fake, TopicWatcher(isolated.infra.kafka_bootstrap, prefix, *OUT_TOPICS) as w:
            fake.when("REFUND-A", ToolCall("request_human_handoff", {"reason": "Topic is a refund"}))
            fake.when("REFUND-B", Reply("Cars have no refunds, sorry."))
            fake.when("REFUND-C", ToolCall("request_human_handoff", {"reason": "Angry visitor"}))
            fake.when("BROKEN-E", Error(500))
            fake.when("SPEAK-AGAIN", Reply("Happy to help again."))
            fake.when("SLOW-F", Slow(30, Reply("too late")))
            settings = settings_from_env(IntakeSettings, isolated.env(
                "intake", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="test-key", OPENAI_MODEL="fake-model",
                OPENAI_MAX_RETRIES="0", OPENAI_TIMEOUT_S="5", OPENAI_TOTAL_TIMEOUT_S="3"))
            async with run_in_process("intake", create_app, settings) as svc:
                async with httpx.AsyncClient(base_url=svc.url) as http:
                    assert (await http.get("/healthz")).json()["ai_mode"] == "llm"
                    ready = (await http.get("/readyz")).json()
                    assert ready["ready"] and ready["ai_mode"] == "llm"

                a = Visitor(producer, prefix, "on")
                b = Visitor(producer, prefix, "off")
                c = Visitor(producer, prefix, "sched")
                d = Visitor(producer, prefix, "on", channel="telegram")
                e = Visitor(producer, prefix, "off")
                f = Visitor(producer, prefix, "off")
                await a.says("I want my money back REFUND-A")
                await b.says("I want my money back REFUND-B")
                await c.says("This is unacceptable REFUND-C")
                await d.says("I want to talk to a human")
                await e.says("Hello BROKEN-E")
                await f.says("Hello SLOW-F")

                # A: the tool call hands off with its reason; the visitor is told and asked
                # for the contact fields through the widget's form.
                [handoff] = await w.wait_for("conversation.events", a.conversation_id,
                                             type="conversation.handoff_requested")
                assert handoff["reason"] == "Topic is a refund" and handoff["source"] == "ai_tool"
                [notice] = await w.wait_for("outbound.messages", a.conversation_id)
                assert notice["text"] == domain.HANDOFF_NOTICE and notice["sender"] == "ai"
                assert notice["request_contact_fields"] == ["email", "name"]
                [request_a] = fake.requests_containing("REFUND-A")
                system = request_a["messages"][0]
                assert system["role"] == "system"
                assert "You sell bikes at BikeCo." in system["content"] and "Hand over any refund." in system["content"]
                assert [t["function"]["name"] for t in request_a["tools"]] == ["request_human_handoff"]
                assert request_a["model"] == "fake-model"
                await a.submits_contact(email="ann@example.com", name="Ann")
                [captured] = await w.wait_for("conversation.events", a.conversation_id,
                                              type="conversation.contact_captured")
                assert captured["contact"] == {"name": "Ann", "email": "ann@example.com", "phone": None}

                # B: tool off: not offered, the model's text is the answer, no handoff.
                [reply_b] = await w.wait_for("outbound.messages", b.conversation_id)
                assert reply_b["text"] == "Cars have no refunds, sorry."
                [request_b] = fake.requests_containing("REFUND-B")
                assert "tools" not in request_b
                assert request_b["messages"][0]["content"] == "You sell cars."

                # C: outside business hours: the offline message, no handoff.
                [reply_c] = await w.wait_for("outbound.messages", c.conversation_id)
                assert reply_c["text"] == "We are closed today, leave a message."

                # D (Telegram): explicit request, detected before the model; a plain contact question.
                [handoff_d] = await w.wait_for("conversation.events", d.conversation_id,
                                               type="conversation.handoff_requested")
                assert handoff_d["reason"] == domain.EXPLICIT_REQUEST_REASON
                assert handoff_d["source"] == "explicit_request"
                assert [r for r in fake.requests if r["messages"][-1]["content"] == "I want to talk to a human"] == []
                told = await w.wait_for("outbound.messages", d.conversation_id, count=2)
                assert [m["text"] for m in told] == [
                    domain.HANDOFF_NOTICE, domain.contact_question(["email", "name"])]
                assert all(m["request_contact_fields"] == [] for m in told)

                # The queue confirms; the visitor answers the question: captured, the AI silent.
                await d.queue_moves("handoff", "handed_off", "active")
                await d.says("sure: dan@example.com")
                await d.says("Dan Brown")
                captured_d = await w.wait_for("conversation.events", d.conversation_id, count=2,
                                              type="conversation.contact_captured")
                assert [c["contact"] for c in captured_d] == [
                    {"name": None, "email": "dan@example.com", "phone": None},
                    {"name": "Dan Brown", "email": None, "phone": None}]
                await w.wait_for("conversation.events", d.conversation_id, count=3,
                                 type="conversation.message_appended", sender="visitor")

                # E: the model fails: the visitor's message is appended, they get an apology.
                await w.wait_for("conversation.events", e.conversation_id, sender="visitor", text="Hello BROKEN-E")
                [reply_e] = await w.wait_for("outbound.messages", e.conversation_id)
                assert reply_e["text"] == domain.LLM_APOLOGY

                # F: the model is too slow: an apology, not silence.
                [reply_f] = await w.wait_for("outbound.messages", f.conversation_id)
                assert reply_f["text"] == domain.LLM_APOLOGY

                # D: an agent replies while handed off; it becomes part of the AI's context.
                await producer.send_and_wait(prefix + "outbound.messages", OutboundMessage(
                    chatbot_id="on", conversation_id=d.conversation_id, message_id="agent-msg-1", channel="telegram",
                    visitor=d.identity, text="Your refund is on its way.", sender="agent", sender_name="Alice",
                ).model_dump_json().encode(), key=d.conversation_id.encode())
                intake = svc.app.state.intake
                await w.wait_until_async(lambda: intake.memory.context(d.conversation_id),
                                         lambda ctx: any("refund is on its way" in m["text"] for m in ctx))

                # D: Return to AI: the AI answers again from the next message, with the context.
                await d.queue_moves("return_to_ai", "active", "handed_off")
                # State and visitor messages travel on different topics: let the state land first,
                # as it does when a visitor writes after the agent clicked Return to AI.
                await w.wait_until_async(lambda: intake.memory.status(d.conversation_id), lambda s: s == "active")
                await d.says("Are you back? SPEAK-AGAIN")
                answers = await w.wait_for("outbound.messages", d.conversation_id, count=3, sender="ai")
                assert answers[-1]["text"] == "Happy to help again."
                assert len(w.of("outbound.messages", d.conversation_id, sender="ai")) == 3  # nothing while handed off
                [request_d] = fake.requests_containing("SPEAK-AGAIN")
                contents = [m["content"] for m in request_d["messages"][1:]]
                assert contents[0] == "I want to talk to a human" and contents[-1] == "Are you back? SPEAK-AGAIN"
                assert "Dan Brown" in contents
                assert "[Reply from Alice, a human team member] Your refund is on its way." in contents

                # Malformed input is parked on the DLQ with the error; the consumer goes on.
                await producer.send_and_wait(prefix + "visitor.messages", b'{"type": "visitor.message_received"}',
                                             key=b"x")
                [parked] = await w.wait_for("visitor.messages.dlq")
                assert parked["error_kind"] == "invalid" and parked["consumer"] == "intake"

                # Every visitor message was appended exactly once, under a deterministic id.
                visitor_msgs = w.of("conversation.events", type="conversation.message_appended", sender="visitor")
                assert len(visitor_msgs) == len({m["message_id"] for m in visitor_msgs}) == 9
    finally:
        await producer.stop()


async def test_offline_mode_detects_explicit_requests_in_several_languages(isolated):
    prefix = isolated.topic_prefix
    bot = ChatbotSettings(chatbot_id="shop", name="Shop", human_handoff=HumanHandoffSettings(enabled=True))
    closed = ChatbotSettings(chatbot_id="closed", name="Closed", human_handoff=_closed_today())
    no_tool = ChatbotSettings(chatbot_id="notool", name="No tool")
    requests = ["Ich möchte mit einem Menschen sprechen", "Je veux parler à un humain",
                "Quiero hablar con una persona", "Vorrei parlare con un operatore",
                "Quero falar com um atendente", "Ik wil met een medewerker praten", "Can I talk to a real person?"]
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    try:
        await publish_settings(producer, prefix, bot, closed, no_tool)
        settings = settings_from_env(IntakeSettings, isolated.env("intake"))
        assert not settings.llm_configured
        async with TopicWatcher(isolated.infra.kafka_bootstrap, prefix, *OUT_TOPICS) as w, \
                run_in_process("intake", create_app, settings) as svc:
            async with httpx.AsyncClient(base_url=svc.url) as http:
                assert (await http.get("/healthz")).json()["ai_mode"] == "offline"
            visitors = [Visitor(producer, prefix, "shop") for _ in requests]
            for v, text in zip(visitors, requests, strict=True):
                await v.says(text)
            plain = Visitor(producer, prefix, "shop")
            await plain.says("What are your opening hours?")
            after_hours = Visitor(producer, prefix, "closed", channel="whatsapp")
            await after_hours.says("I want to talk to a human")
            tool_off = Visitor(producer, prefix, "notool")
            await tool_off.says("I want to talk to a human")

            for v in visitors:
                [h] = await w.wait_for("conversation.events", v.conversation_id, type="conversation.handoff_requested")
                assert h["reason"] == domain.EXPLICIT_REQUEST_REASON and h["source"] == "explicit_request"
            [answer] = await w.wait_for("outbound.messages", plain.conversation_id)
            assert answer["text"] == domain.OFFLINE_RESPONDER_WITH_HANDOFF
            # The same schedule rule as for the AI's tool: outside hours, the offline message.
            [offline] = await w.wait_for("outbound.messages", after_hours.conversation_id)
            assert offline["text"] == "We are closed today, leave a message."
            # With the tool off no handoff ever happens; the responder says so.
            [no] = await w.wait_for("outbound.messages", tool_off.conversation_id)
            assert no["text"] == domain.OFFLINE_RESPONDER_NO_HANDOFF
            for v in (plain, after_hours, tool_off):
                assert w.of("conversation.events", v.conversation_id, type="conversation.handoff_requested") == []
    finally:
        await producer.stop()


async def test_a_slow_model_answer_does_not_hold_up_other_conversations(isolated):
    """Two visitors whose messages share one partition: the first one's model call is slow,
    the second one's answer still goes out first (conversations run side by side, each in order)."""
    prefix = isolated.topic_prefix
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    try:
        await publish_settings(producer, prefix, ChatbotSettings(chatbot_id="par", name="Par"))
        async with FakeOpenAI() as fake, TopicWatcher(isolated.infra.kafka_bootstrap, prefix, *OUT_TOPICS) as w:
            fake.when("SLOW-ONE", Slow(4, Reply("the slow answer")))
            fake.when("FAST-ONE", Reply("the fast answer"))
            settings = settings_from_env(IntakeSettings, isolated.env(
                "intake", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="test-key", OPENAI_MAX_RETRIES="0",
                OPENAI_TIMEOUT_S="10", OPENAI_TOTAL_TIMEOUT_S="10"))
            async with run_in_process("intake", create_app, settings):
                slow, fast = Visitor(producer, prefix, "par"), Visitor(producer, prefix, "par")
                for visitor, text in ((slow, "Hello SLOW-ONE"), (fast, "Hello FAST-ONE")):
                    event = VisitorMessageReceived(
                        chatbot_id="par", conversation_id=visitor.conversation_id, channel="web",
                        visitor=visitor.identity, text=text, channel_message_id=new_id())
                    await producer.send_and_wait(prefix + "visitor.messages", event.model_dump_json().encode(),
                                                 key=event.partition_key(), partition=0)
                [fast_reply] = await w.wait_for("outbound.messages", fast.conversation_id)
                assert fast_reply["text"] == "the fast answer"
                assert w.of("outbound.messages", slow.conversation_id) == []  # still thinking
                [slow_reply] = await w.wait_for("outbound.messages", slow.conversation_id)
                assert slow_reply["text"] == "the slow answer"
    finally:
        await producer.stop()
