"""The gateway's bus handlers on the in-memory broker: updates and command results reach
the hub and the waiting REST calls; settings land in the directory and on sockets."""

from __future__ import annotations

import asyncio

from faststream.kafka import TestKafkaBroker

from services.gateway.domain import ChatbotDirectory, PendingCommands
from services.gateway.handlers import GatewayHandlers
from services.gateway.live import LiveClient, LiveHub
from shared.bus import Bus
from shared.chatbots import ChatbotSettings, HumanHandoffSettings
from shared.events import DASHBOARD_EVENT, SETTINGS_EVENT, ChatbotSettingsChanged, CommandResult
from shared.settings import ServiceSettings
from shared.topics import CHATBOT_SETTINGS, DASHBOARD_UPDATES
from tests.gateway.conftest import update
from tests.gateway.test_live import FakeSocket


async def test_handlers_on_in_memory_broker():
    hub, pending, directory = LiveHub(), PendingCommands(), ChatbotDirectory()
    handlers = GatewayHandlers(hub, pending, directory)
    ws = FakeSocket()
    client = LiveClient(ws, "a", {"demo"}, queue_size=50)
    hub.add(client)
    hub.subscribe(client, "demo")

    bus = Bus(ServiceSettings(), client_id="gw-mem")
    bus.consume(DASHBOARD_UPDATES, DASHBOARD_EVENT, handlers.on_dashboard_event, group_id=None, from_beginning=False)
    bus.consume(CHATBOT_SETTINGS, SETTINGS_EVENT, handlers.on_settings_changed, group_id=None)
    dash, settings_pub = bus.publisher(DASHBOARD_UPDATES), bus.publisher(CHATBOT_SETTINGS)
    async with TestKafkaBroker(bus.broker):
        waiting = pending.expect("cmd-123456789")
        await dash.publish(update("demo", 3))
        await dash.publish(update("other", 1))
        await dash.publish(CommandResult(chatbot_id="demo", command_id="cmd-123456789", ok=False, status_code=409,
                                         error="Can only reply to handed-off conversations."))
        s = ChatbotSettings(chatbot_id="demo", name="Demo", human_handoff=HumanHandoffSettings(enabled=True))
        await settings_pub.publish(ChatbotSettingsChanged(chatbot_id="demo", settings=s))

    result = await asyncio.wait_for(waiting, 1)
    assert result.status_code == 409
    await asyncio.wait_for(client.drained(), 1)
    frames = ws.sent
    assert [f["type"] for f in frames] == ["update", "command_result", "settings"]
    assert (frames[0]["epoch"], frames[0]["seq"]) == ("e1", 3)
    assert frames[1]["result"]["error"] == "Can only reply to handed-off conversations."
    assert frames[2] == {"type": "settings", "chatbot_id": "demo", "handoff_enabled": True, "name": "Demo",
                         "settings_version": 0}
    assert handlers.positions == {"demo": ("e1", 3), "other": ("e1", 1)}
    assert directory.describe("demo")["handoff_enabled"] is True
