"""Intake's handlers on the in-memory broker (TestKafkaBroker) with the real Redis: a
replayed visitor message yields the same ids (so the queue and channels drop the copy),
and a contact form becomes ContactCaptured. The real-broker flows are in test_integration."""

from __future__ import annotations


from faststream.kafka import TestKafkaBroker

from services.intake.handlers import Intake
from services.intake.store import ChatbotTable
from shared.bus import Bus
from shared.events import (
    CONVERSATION_EVENT,
    OUTBOUND_EVENT,
    VISITOR_EVENT,
    ContactDetails,
    VisitorContactSubmitted,
    VisitorIdentity,
    VisitorMessageReceived,
)
from shared.settings import ServiceSettings
from shared.topics import CONVERSATION_EVENTS, OUTBOUND_MESSAGES, VISITOR_MESSAGES


async def test_replay_gives_the_same_ids_and_contact_form_is_captured(memory_stores):
    bus = Bus(ServiceSettings(), client_id="intake-test")
    intake = Intake(memory=memory_stores.memory(),
                    chatbots=ChatbotTable(), conversation_events=bus.publisher(CONVERSATION_EVENTS),
                    outbound=bus.publisher(OUTBOUND_MESSAGES), responder=None)
    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, intake.on_visitor_event, group_id="intake", dedupe=False)
    appended: list = []
    sent: list = []

    async def on_appended(event) -> None:
        appended.append(event)

    async def on_sent(event) -> None:
        sent.append(event)

    bus.consume(CONVERSATION_EVENTS, CONVERSATION_EVENT, on_appended, group_id="t1", dedupe=False)
    bus.consume(OUTBOUND_MESSAGES, OUTBOUND_EVENT, on_sent, group_id="t2", dedupe=False)
    visitor_pub = bus.publisher(VISITOR_MESSAGES)
    message = VisitorMessageReceived(chatbot_id="b", conversation_id="cv_x", channel="web",
                                     visitor=VisitorIdentity(external_id="v"), text="hello", channel_message_id="c1")
    async with TestKafkaBroker(bus.broker):
        await visitor_pub.publish(message)
        await visitor_pub.publish(message)  # redelivered
        await visitor_pub.publish(VisitorContactSubmitted(
            chatbot_id="b", conversation_id="cv_x", channel="web", visitor=VisitorIdentity(external_id="v"),
            contact=ContactDetails(phone="+1 555 0100")))

    visitor_msgs = [e for e in appended if e.type == "conversation.message_appended" and e.sender == "visitor"]
    ai_msgs = [e for e in appended if e.type == "conversation.message_appended" and e.sender == "ai"]
    assert len(visitor_msgs) == 2 and visitor_msgs[0].message_id == visitor_msgs[1].message_id
    assert visitor_msgs[0].event_id == visitor_msgs[1].event_id
    assert len(ai_msgs) == 2 and ai_msgs[0].message_id == ai_msgs[1].message_id
    assert [s.message_id for s in sent] == [ai_msgs[0].message_id] * 2
    [captured] = [e for e in appended if e.type == "conversation.contact_captured"]
    assert captured.contact.phone == "+1 555 0100"


class FlakyPublisher:
    """Fails the first publish, then passes through: a broker hiccup mid-handler."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.failures_left = 1

    async def publish(self, event) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("broker hiccup")
        await self.inner.publish(event)


async def test_a_handoff_interrupted_mid_way_is_finished_by_the_retry(memory_stores):
    """The handler marks the conversation handed off, publishes HandoffRequested, then fails
    to send the notice. The bus retries it: the retry must finish the handoff (notice, contact
    question) rather than stay silent because the conversation is now handed off."""
    from shared.chatbots import ChatbotSettings, HumanHandoffSettings

    settings = ServiceSettings(kafka_retry_backoff_s=0.01)
    bus = Bus(settings, client_id="intake-test")
    chatbots = ChatbotTable()
    chatbots.apply(ChatbotSettings(chatbot_id="b", name="B", human_handoff=HumanHandoffSettings(
        enabled=True, contact_fields=["phone"])))
    intake = Intake(memory=memory_stores.memory(),
                    chatbots=chatbots, conversation_events=bus.publisher(CONVERSATION_EVENTS),
                    outbound=FlakyPublisher(bus.publisher(OUTBOUND_MESSAGES)), responder=None)
    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, intake.on_visitor_event, group_id="intake", dedupe=False)
    appended: list = []
    sent: list = []

    async def on_appended(event) -> None:
        appended.append(event)

    async def on_sent(event) -> None:
        sent.append(event)

    bus.consume(CONVERSATION_EVENTS, CONVERSATION_EVENT, on_appended, group_id="t1", dedupe=False)
    bus.consume(OUTBOUND_MESSAGES, OUTBOUND_EVENT, on_sent, group_id="t2", dedupe=False)
    async with TestKafkaBroker(bus.broker):
        await bus.publisher(VISITOR_MESSAGES).publish(VisitorMessageReceived(
            chatbot_id="b", conversation_id="cv_y", channel="telegram", visitor=VisitorIdentity(external_id="7"),
            text="Can I talk to a real person?", channel_message_id="u1"))

    handoffs = [e for e in appended if e.type == "conversation.handoff_requested"]
    assert len(handoffs) == 2 and len({h.event_id for h in handoffs}) == 1  # the retry republished the same one
    assert [s.text for s in sent] == [
        "I'm connecting you with a member of our team. Someone will reply here shortly.",
        "So our team can follow up, please share your phone number."]
