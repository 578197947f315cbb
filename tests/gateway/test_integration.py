"""The gateway next to the real queue service (in-process), on the real broker, Redis and
Mongo-wire server: a handoff shows up on the agent's websocket, a reply to it is applied
(200, an outbound message for the visitor), a reply to an active conversation is refused
with the queue's 409, and settings changes round-trip."""

from __future__ import annotations

import uuid
from unittest.mock import ANY

import httpx

from services.gateway.deps import SESSION_COOKIE
from shared.bus import Bus
from shared.chatbots import ChatbotSettings, HumanHandoffSettings
from shared.events import AiTurnCompleted, HandoffAsked, VisitorIdentity, VisitorMessageReceived
from shared.ids import conversation_id_for
from shared.settings import ServiceSettings
from shared.topics import AI_TURNS, CONVERSATION_EVENTS, OUTBOUND_MESSAGES, VISITOR_MESSAGES
from tests.gateway.conftest import add_agent, login
from tests.gateway.test_live_ws import open_ws, recv_until, subscribe
from tests.harness import run_in_process, settings_from_env
from tests.support import eventually, read_topic


async def test_command_round_trip_with_the_real_queue(isolated):
    from services.queue.app import create_app as create_queue
    from services.queue.settings import QueueSettings

    from services.gateway.app import create_app as create_gateway
    from services.gateway.settings import GatewaySettings

    qsettings = settings_from_env(QueueSettings, isolated.env("queue"))
    async with run_in_process("queue", create_queue, qsettings) as queue:
        await queue.app.state.queue.chatbots.save(ChatbotSettings(
            chatbot_id="demo", name="Demo Shop", human_handoff=HumanHandoffSettings(enabled=True)))
        # Plain http to 127.0.0.1: the explicit opt-out of Secure cookies.
        gsettings = settings_from_env(GatewaySettings, isolated.env("gateway", QUEUE_URL=queue.url,
                                                                    COMMAND_TIMEOUT_S="10", COOKIE_SECURE="false"))
        await add_agent(gsettings, "dana@example.com", ["demo"], first_name="Dana")
        async with run_in_process("gateway", create_gateway, gsettings) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=20) as client:
            csrf = await login(client, "dana@example.com")
            h = {"X-CSRF-Token": csrf}

            async def knows_demo():
                me = (await client.get("/api/me")).json()
                return me["chatbots"] == [{"chatbot_id": "demo", "name": "Demo Shop", "handoff_enabled": True,
                                           "settings_version": ANY}]

            await eventually(knows_demo, timeout=20)

            # Two visitors, as channels report them; intake hands one off, the other stays with the AI.
            bus = Bus(settings_from_env(ServiceSettings, isolated.env("intake-fake")), client_id="intake-fake")
            visitors, events = bus.publisher(VISITOR_MESSAGES), bus.publisher(CONVERSATION_EVENTS)
            await bus.broker.start()
            handed = conversation_id_for("demo", "web", "v-handed")
            active = conversation_id_for("demo", "web", "v-active")
            async with open_ws(gw, client.cookies[SESSION_COOKIE]) as ws:
                subscribed = await subscribe(ws, "demo")
                assert subscribed["type"] == "subscribed"
                try:
                    for conv, visitor in ((handed, "v-handed"), (active, "v-active")):
                        await visitors.publish(VisitorMessageReceived(
                            chatbot_id="demo", conversation_id=conv, text="I want a refund", channel="web",
                            visitor=VisitorIdentity(external_id=visitor, name="Ada"), channel_message_id=visitor))
                    turns = await read_topic(isolated.infra.kafka_bootstrap, isolated.topic_prefix + AI_TURNS.name,
                                             2, timeout=20)
                    [turn] = [t for t in turns if t["conversation_id"] == handed]
                    await events.publish(AiTurnCompleted(
                        chatbot_id="demo", conversation_id=handed, turn_id=turn["turn_id"], version=turn["version"],
                        handoff=HandoffAsked(reason="Topic is a refund", source="ai_tool")))
                finally:
                    await bus.broker.stop()

                # The handoff arrives live, sequenced.
                frame, _ = await recv_until(ws, lambda f: f["type"] == "update"
                                            and (f["update"].get("row_upserted") or {}).get("conversation_id") == handed,
                                            timeout=30)
                assert frame["update"]["stats"]["open"] == 1
                assert frame["seq"] > subscribed["seq"] or frame["epoch"] != subscribed["epoch"]

                # Reads go through to the queue.
                rows = (await client.get("/api/chatbots/demo/handoffs")).json()["items"]
                assert [r["conversation_id"] for r in rows] == [handed]
                await eventually(lambda: _status(client, active, "active"), timeout=20)

                command_id = "cmd-" + uuid.uuid4().hex
                r = await client.post(f"/api/chatbots/demo/conversations/{handed}/reply", headers=h,
                                      json={"command_id": command_id, "text": "Hi Ada, I can help with that."})
                assert r.status_code == 200, r.text
                assert r.json()["ok"] is True and r.json()["command_id"] == command_id
                # Every subscriber of the chatbot gets the result too.
                result_frame, _ = await recv_until(ws, lambda f: f["type"] == "command_result"
                                                   and f["result"]["command_id"] == command_id)
                assert result_frame["chatbot_id"] == "demo"

                outbound = await read_topic(isolated.infra.kafka_bootstrap,
                                            isolated.topic_prefix + OUTBOUND_MESSAGES.name, 1, timeout=20)
                agent_msgs = [m for m in outbound if m["sender"] == "agent"]
                assert agent_msgs and agent_msgs[0]["text"] == "Hi Ada, I can help with that."
                assert agent_msgs[0]["sender_name"] == "Dana" and agent_msgs[0]["conversation_id"] == handed

                r = await client.post(f"/api/chatbots/demo/conversations/{active}/reply", headers=h,
                                      json={"command_id": "cmd-" + uuid.uuid4().hex, "text": "hello?"})
                assert r.status_code == 409
                assert r.json() == {"detail": "Can only reply to handed-off conversations."}

                # Settings round-trip through the queue; the tool switch reaches /api/me and the socket.
                version = (await client.get("/api/chatbots/demo/settings")).json()["version"]
                r = await client.put("/api/chatbots/demo/settings/human-handoff", headers=h,
                                     json={"version": version, "enabled": False, "contact_fields": ["email"]})
                assert r.status_code == 200, r.text
                assert r.json()["human_handoff"]["enabled"] is False
                settings_frame, _ = await recv_until(ws, lambda f: f["type"] == "settings"
                                                     and f["handoff_enabled"] is False, timeout=20)
                assert settings_frame["name"] == "Demo Shop"
                got = (await client.get("/api/chatbots/demo/settings")).json()
                assert got["human_handoff"]["contact_fields"] == ["email"]


async def _status(client: httpx.AsyncClient, conversation_id: str, status: str) -> bool:
    r = await client.get(f"/api/chatbots/demo/conversations/{conversation_id}")
    return r.status_code == 200 and r.json()["conversation"]["status"] == status
