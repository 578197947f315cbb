"""The queue's view of WhatsApp's 24-hour window (what the pane and the row show, what an
agent's reply is checked against) and channels' (what delivery enforces) come from the same
fact, through real webhooks: channels' service with the fake Graph API, the real queue."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from services.channels.domain import OUTSIDE_WINDOW_ERROR
from services.queue.app import create_app as create_queue
from services.queue.settings import QueueSettings
from shared.chatbots import ChannelCredentials, ChatbotSettings
from shared.ids import conversation_id_for, new_id
from tests.channels.test_whatsapp import PHONE_NUMBER_ID, _creds, _message_payload, _outbound, _post_signed
from tests.harness import run_in_process, settings_from_env
from tests.support import eventually


async def test_a_25_hour_old_whatsapp_message_is_closed_for_both_and_a_late_older_one_moves_neither(stack):
    iso = stack.iso
    queue_settings = settings_from_env(QueueSettings, iso.env("queue", QUEUE_CONSUMER_GROUP=f"queue-{iso.tag}"))
    async with run_in_process("queue", create_queue, queue_settings) as queue:
        creds = _creds()
        bot = f"bot_{new_id()[:10]}"
        # The queue's own seeding path: Mongo, then `chatbot.settings`, which channels reads.
        await queue.app.state.queue.chatbots.save(ChatbotSettings(
            chatbot_id=bot, name="Window Shop", channels=ChannelCredentials(**creds)))
        await eventually(lambda: _known(stack, bot), timeout=20)
        token = queue_settings.queue_api_token.get_secret_value()
        url = f"{stack.url}/whatsapp/{bot}/webhook"

        async def queue_view(wa_id: str, messages: int) -> dict:
            cid = conversation_id_for(bot, "whatsapp", wa_id)
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as client:
                async def read() -> dict | None:
                    r = await client.get(f"{queue.url}/internal/chatbots/{bot}/conversations/{cid}")
                    view = r.json()["conversation"] if r.status_code == 200 else None
                    return view if view and view["message_count"] >= messages else None
                return await eventually(read, timeout=20)

        now = int(time.time())
        async with httpx.AsyncClient() as client:
            # 1. The visitor's only message is stamped 25 h ago by WhatsApp (it reached us now).
            old_visitor = "15557770001"
            r = await _post_signed(client, url, _message_payload(old_visitor, "wamid.OLD1", "yesterday",
                                                                 ts=now - 25 * 3600), creds["whatsapp_app_secret"])
            assert r.status_code == 200
            view = await queue_view(old_visitor, 1)
            ends = datetime.fromisoformat(view["reply_window_ends_at"])
            assert ends < datetime.now(UTC), "the queue must count from WhatsApp's stamp, not from receipt"
            channels = await stack.window(bot, view["conversation_id"])
            assert channels["open"] is False
            assert datetime.fromisoformat(channels["ends_at"]) == ends
            refused = _outbound(bot, old_visitor, "Sorry for the wait")
            await stack.outbound(refused)
            [failed] = await stack.delivery_status.wait_for(lambda r: r["message_id"] == refused.message_id)
            assert failed["status"] == "failed" and failed["error"] == OUTSIDE_WINDOW_ERROR
            assert stack.graph.sent_to(old_visitor) == []

            # 2. A visitor wrote an hour ago; then Meta delivers an older message of theirs late
            # (it retries for days): the window stays an hour-old message's, for both.
            visitor = "15557770002"
            await _post_signed(client, url, _message_payload(visitor, "wamid.NEW2", "still there?", ts=now - 3600),
                               creds["whatsapp_app_secret"])
            await _post_signed(client, url, _message_payload(visitor, "wamid.OLD2", "first try", ts=now - 25 * 3600),
                               creds["whatsapp_app_secret"])
            view = await queue_view(visitor, 2)
            channels = await stack.window(bot, view["conversation_id"])
            assert channels["open"] is True
            assert view["reply_window_ends_at"] is not None
            assert datetime.fromisoformat(view["reply_window_ends_at"]) == datetime.fromisoformat(channels["ends_at"])
            assert abs(datetime.fromisoformat(channels["ends_at"]) - datetime.fromtimestamp(now + 23 * 3600, UTC)) \
                < timedelta(seconds=1)
            sent = _outbound(bot, visitor, "Sorry for the wait")
            await stack.outbound(sent)
            [ok] = await stack.delivery_status.wait_for(lambda r: r["message_id"] == sent.message_id)
            assert ok["status"] == "sent"


def _known(stack, chatbot_id: str):
    chatbot = stack.handlers.chatbots.get(chatbot_id)
    return asyncio.sleep(0, result=chatbot is not None and chatbot.channels.whatsapp_phone_number_id == PHONE_NUMBER_ID)

