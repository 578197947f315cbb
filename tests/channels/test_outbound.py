"""OutboundDelivery with the real Redis and Mongo-wire stores: a status that could not be
published is published on the bus's retry, and the message is still not sent twice."""

from __future__ import annotations

import asyncio

from services.channels.chatbots import ChatbotTable
from services.channels.outbound import OutboundDelivery
from services.channels.platforms import TelegramClient, WhatsAppClient
from services.channels.settings import ChannelsSettings
from services.channels.store import DeliveryRecords, WebOutbox, WhatsAppWindowStore
from shared.events import OutboundMessage, VisitorIdentity
from shared.ids import conversation_id_for, new_id, new_visitor_id
from shared.stores import open_mongo, open_redis
from tests.harness import settings_from_env


class FlakyStatuses:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list = []

    async def publish(self, event) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        self.published.append(event)


async def test_status_publish_failure_is_repaired_on_retry_without_resending(isolated):
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    redis = open_redis(settings)
    telegram = TelegramClient("http://127.0.0.1:9/bot", 1.0)  # never called for web
    whatsapp = WhatsAppClient("http://127.0.0.1:9", "v21.0", 1.0)
    statuses = FlakyStatuses(failures=1)
    outbox = WebOutbox(redis, settings.redis_prefix, 50, 60)
    delivery = OutboundDelivery(chatbots=ChatbotTable(), records=DeliveryRecords(db), statuses=statuses,
                                telegram=telegram, whatsapp=whatsapp, window=WhatsAppWindowStore(redis, settings.redis_prefix),
                                outbox=outbox, attempts=2, backoff_s=0.01, max_backoff_s=0.01)
    visitor = new_visitor_id()
    event = OutboundMessage(chatbot_id="b", conversation_id=conversation_id_for("b", "web", visitor), message_id=new_id(),
                            channel="web", visitor=VisitorIdentity(external_id=visitor), text="hello", sender="ai")
    try:
        try:
            await delivery.deliver(event)
            raise AssertionError("the failed publish must surface so the bus retries")
        except ConnectionError:
            pass
        await delivery.deliver(event)  # the bus's retry
        await delivery.deliver(event)  # a later duplicate (e.g. after a rebalance)
        # The same status event each time (downstream applies it once), the reply kept once.
        assert {(s.event_id, s.message_id, s.status) for s in statuses.published} == {
            (statuses.published[0].event_id, event.message_id, "sent")}
        assert [e["text"] for e in await outbox.history("b", visitor)] == ["hello"]  # stored once
        # A web reply takes no claim: no delivery record, no Mongo write.
        assert await db.deliveries.count_documents({}) == 0
    finally:
        await telegram.close()
        await whatsapp.close()
        await redis.aclose()
        await client.close()


class FailingWindow:
    """A WhatsApp window store whose Redis is briefly unreachable."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    async def last_inbound(self, chatbot_id, conversation_id):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis unreachable")
        from datetime import UTC, datetime
        return datetime.now(UTC)


class RecordingWhatsApp:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_text(self, phone_number_id, access_token, to, text) -> str:
        self.sent.append(text)
        return f"wamid.{len(self.sent)}"


def _whatsapp_delivery(db, statuses, window, whatsapp, attempts=3):
    from shared.chatbots import ChannelCredentials, ChatbotSettings
    chatbots = ChatbotTable()
    chatbots.put(ChatbotSettings(chatbot_id="wb", name="WB", channels=ChannelCredentials(
        whatsapp_connected=True, whatsapp_access_token="EAAG-secret-token", whatsapp_phone_number_id="1555")))
    return OutboundDelivery(chatbots=chatbots, records=DeliveryRecords(db), statuses=statuses,
                            telegram=None, whatsapp=whatsapp, window=window, outbox=None,  # type: ignore[arg-type]
                            attempts=attempts, backoff_s=0.01, max_backoff_s=0.01)


def _whatsapp_event(text="hi") -> OutboundMessage:
    return OutboundMessage(chatbot_id="wb", conversation_id=conversation_id_for("wb", "whatsapp", "4915"),
                           message_id=new_id(), channel="whatsapp", visitor=VisitorIdentity(external_id="4915"),
                           text=text, sender="agent")


async def test_unexpected_error_while_sending_is_retried_never_left_unreported(isolated):
    """An error that is neither transient nor permanent (here the window lookup's Redis) used
    to escape deliver() after the claim: the bus's retry then found the claim, and the message
    was neither sent nor reported. It is retried like a transient error, then reported."""
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    try:
        statuses, whatsapp = FlakyStatuses(failures=0), RecordingWhatsApp()
        delivery = _whatsapp_delivery(db, statuses, FailingWindow(failures=1), whatsapp)
        event = _whatsapp_event()
        await delivery.deliver(event)
        assert whatsapp.sent == ["hi"]
        assert [(s.message_id, s.status) for s in statuses.published] == [(event.message_id, "sent")]

        statuses2 = FlakyStatuses(failures=0)
        always_down = _whatsapp_delivery(db, statuses2, FailingWindow(failures=99), RecordingWhatsApp(), attempts=2)
        event2 = _whatsapp_event("again")
        await always_down.deliver(event2)
        [status] = statuses2.published
        assert (status.message_id, status.status, status.permanent) == (event2.message_id, "failed", True)
        assert "ConnectionError" in status.error and "redis unreachable" not in status.error
    finally:
        await client.close()


async def test_claim_of_a_crashed_sender_is_reported_failed_never_sent_again(isolated):
    """A crash between claiming a message and recording its outcome used to leave it with no
    delivery status for ever. Once the claim's lease has run out, a sweep (or the bus's
    redelivery) reports it failed, permanent, "outcome unknown" — and nothing is sent again."""
    from datetime import UTC, datetime, timedelta

    from services.channels.domain import UNKNOWN_OUTCOME_ERROR
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    try:
        records = DeliveryRecords(db)
        await records.create_indexes()
        await records.create_indexes()  # again at every start: harmless
        assert {"state_1_lease_until_1", "status_published_1_finished_at_1"} <= set(
            await db["deliveries"].index_information())
        statuses, whatsapp = FlakyStatuses(failures=0), RecordingWhatsApp()
        survivor = _whatsapp_delivery(db, statuses, FailingWindow(failures=0), whatsapp)
        crashed, redelivered, live = _whatsapp_event("crashed"), _whatsapp_event("redelivered"), _whatsapp_event("live")
        # Three instances called WhatsApp and died (or are still working) before recording anything.
        for event in (crashed, redelivered, live):
            assert await records.claim(event.message_id, "wb", event.conversation_id, "whatsapp", "dead-owner",
                                       lease_s=60, message=event.model_dump(mode="json")) is None
            assert await records.platform_call_started(event.message_id, "dead-owner", lease_s=60) is True
        later = datetime.now(UTC) + timedelta(seconds=61)

        # Within the lease the claim belongs to its (maybe live) owner: not touched.
        assert await survivor.sweep() == 0
        await survivor.deliver(redelivered)
        assert statuses.published == [] and whatsapp.sent == []

        # Past it: the sweep settles the crashed one, once, across sweeps.
        await db["deliveries"].update_one({"_id": live.message_id}, {"$set": {"lease_until": later + timedelta(hours=1)}})
        assert await survivor.sweep(later) == 2
        assert await survivor.sweep(later) == 0
        by_id = {s.message_id: s for s in statuses.published}
        assert set(by_id) == {crashed.message_id, redelivered.message_id}
        for s in by_id.values():
            assert (s.status, s.permanent, s.error) == ("failed", True, UNKNOWN_OUTCOME_ERROR)
        # A redelivery afterwards sends nothing and reports nothing new.
        await survivor.deliver(crashed)
        assert whatsapp.sent == [] and len(statuses.published) == 2
        assert (await records.claim(live.message_id, "wb", None, "whatsapp"))["state"] == "sending"
    finally:
        await client.close()


async def test_redelivery_after_the_lease_settles_the_claim_itself(isolated):
    from datetime import UTC, datetime, timedelta

    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    try:
        statuses, whatsapp = FlakyStatuses(failures=0), RecordingWhatsApp()
        delivery = _whatsapp_delivery(db, statuses, FailingWindow(failures=0), whatsapp)
        event = _whatsapp_event()
        records = DeliveryRecords(db)
        await records.claim(event.message_id, "wb", event.conversation_id, "whatsapp", "dead", lease_s=60)
        await records.platform_call_started(event.message_id, "dead", lease_s=60)  # died during the call
        await db["deliveries"].update_one({"_id": event.message_id},
                                          {"$set": {"lease_until": datetime.now(UTC) - timedelta(seconds=1)}})
        await delivery.deliver(event)
        assert whatsapp.sent == []
        assert [(s.status, s.permanent) for s in statuses.published] == [("failed", True)]
    finally:
        await client.close()


async def test_sweep_publishes_a_recorded_outcome_whose_status_never_left(isolated):
    """A crash after recording 'sent' but before publishing: a redelivery within a minute
    leaves it to the (dead) instance; the sweep publishes it."""
    from datetime import UTC, datetime, timedelta

    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    try:
        records = DeliveryRecords(db)
        statuses = FlakyStatuses(failures=0)
        delivery = _whatsapp_delivery(db, statuses, FailingWindow(failures=0), RecordingWhatsApp())
        event = _whatsapp_event()
        await records.claim(event.message_id, "wb", event.conversation_id, "whatsapp", "dead")
        assert await records.finish(event.message_id, "sent", "wamid.X", None) is True
        await delivery.deliver(event)  # redelivered at once: the other instance may still publish
        assert statuses.published == []
        assert await delivery.sweep(datetime.now(UTC) + timedelta(seconds=61)) == 1
        assert [(s.message_id, s.status, s.channel_message_id) for s in statuses.published] == [
            (event.message_id, "sent", "wamid.X")]
        assert await delivery.sweep(datetime.now(UTC) + timedelta(seconds=61)) == 0
    finally:
        await client.close()


async def test_stopped_between_attempts_gives_the_claim_back(isolated):
    """Cancelled (shutdown) while waiting to retry, nothing is on its way to the platform: the
    claim is released, so the redelivery after the restart sends the message instead of
    finding a claim that is later reported as of unknown outcome."""
    import asyncio

    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    try:
        statuses, whatsapp = FlakyStatuses(failures=0), RecordingWhatsApp()
        waiting = asyncio.Event()

        async def sleep_forever(_delay: float) -> None:
            waiting.set()
            await asyncio.Event().wait()

        stopping = _whatsapp_delivery(db, statuses, FailingWindow(failures=1), whatsapp)
        stopping.sleep = sleep_forever
        event = _whatsapp_event()
        task = asyncio.create_task(stopping.deliver(event))
        await asyncio.wait_for(waiting.wait(), 5)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert await db["deliveries"].find_one({"_id": event.message_id}) is None

        restarted = _whatsapp_delivery(db, statuses, FailingWindow(failures=0), whatsapp)
        await restarted.deliver(event)
        assert whatsapp.sent == ["hi"]
        assert [(s.message_id, s.status) for s in statuses.published] == [(event.message_id, "sent")]
    finally:
        await client.close()


class HangingWindow:
    """The window lookup never returns: the instance dies here, before calling WhatsApp."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()

    async def last_inbound(self, chatbot_id, conversation_id):
        self.reached.set()
        await asyncio.Event().wait()


async def _die_at(task, reached) -> None:
    """Stop a delivery where it hangs, as a kill would: nothing after that point runs (a
    cancellation there gives nothing back: only the wait between attempts does)."""
    await asyncio.wait_for(reached.wait(), 5)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def _lease_runs_out(db, message_id: str) -> None:
    from datetime import UTC, datetime, timedelta
    await db["deliveries"].update_one({"_id": message_id},
                                      {"$set": {"lease_until": datetime.now(UTC) - timedelta(seconds=1)}})


async def test_died_before_calling_the_platform_is_sent_after_the_restart(isolated):
    """A sender that died before its WhatsApp call (here in the window lookup) cannot have
    reached the visitor: after the restart the message is sent, once — by the redelivery, or by
    the sweep from the copy the claim keeps — instead of 'failed (outcome unknown)'."""
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    try:
        statuses, whatsapp = FlakyStatuses(failures=0), RecordingWhatsApp()
        redelivered, swept = _whatsapp_event("redelivered"), _whatsapp_event("swept")
        for event in (redelivered, swept):
            window = HangingWindow()
            dying = _whatsapp_delivery(db, statuses, window, whatsapp)
            await _die_at(asyncio.create_task(dying.deliver(event)), window.reached)
            await _lease_runs_out(db, event.message_id)

        restarted = _whatsapp_delivery(db, statuses, FailingWindow(failures=0), whatsapp)
        await restarted.deliver(redelivered)
        assert await restarted.sweep() == 1
        assert await restarted.sweep() == 0
        assert sorted(whatsapp.sent) == ["redelivered", "swept"]
        assert sorted((s.message_id, s.status) for s in statuses.published) == sorted(
            [(redelivered.message_id, "sent"), (swept.message_id, "sent")])
        assert (await db["deliveries"].find_one({"_id": swept.message_id})).get("message") is None  # not kept once sent
    finally:
        await client.close()


class HangingWhatsApp(RecordingWhatsApp):
    """The Graph API call never returns: the instance dies during it."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()

    async def send_text(self, phone_number_id, access_token, to, text) -> str:
        self.sent.append(text)
        self.reached.set()
        await asyncio.Event().wait()


async def test_died_during_the_platform_call_is_reported_unknown_never_sent_twice(isolated):
    from services.channels.domain import UNKNOWN_OUTCOME_ERROR
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    try:
        statuses, whatsapp = FlakyStatuses(failures=0), HangingWhatsApp()
        event = _whatsapp_event("maybe sent")
        dying = _whatsapp_delivery(db, statuses, FailingWindow(failures=0), whatsapp)
        await _die_at(asyncio.create_task(dying.deliver(event)), whatsapp.reached)
        await _lease_runs_out(db, event.message_id)

        restarted_whatsapp = RecordingWhatsApp()
        restarted = _whatsapp_delivery(db, statuses, FailingWindow(failures=0), restarted_whatsapp)
        await restarted.deliver(event)
        assert await restarted.sweep() == 0
        assert whatsapp.sent == ["maybe sent"] and restarted_whatsapp.sent == []
        assert [(s.status, s.permanent, s.error) for s in statuses.published] == [("failed", True, UNKNOWN_OUTCOME_ERROR)]
    finally:
        await client.close()


class StatusesDyingAtThePublish(FlakyStatuses):
    """The instance dies after the reply was stored for the widget, before its status is sent."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.reached = asyncio.Event()

    async def publish(self, event) -> None:
        self.reached.set()
        await asyncio.Event().wait()


async def test_web_reply_of_a_dead_sender_is_sent_again_by_the_redelivery_and_kept_once(isolated):
    """No claim to wait out or sweep: the bus redelivers the uncommitted event to whichever
    instance takes the partition, and the repeat is harmless."""
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    redis = open_redis(settings)
    try:
        outbox = WebOutbox(redis, settings.redis_prefix, 50, 60)

        def web_delivery(statuses: FlakyStatuses) -> OutboundDelivery:
            return OutboundDelivery(chatbots=ChatbotTable(), records=DeliveryRecords(db), statuses=statuses,
                                    telegram=None, whatsapp=None, window=None, outbox=outbox,  # type: ignore[arg-type]
                                    attempts=2, backoff_s=0.01, max_backoff_s=0.01)

        visitor = new_visitor_id()
        event = OutboundMessage(chatbot_id="b", conversation_id=conversation_id_for("b", "web", visitor),
                                message_id=new_id(), channel="web", visitor=VisitorIdentity(external_id=visitor),
                                text="Your order shipped", sender="ai")
        dying = StatusesDyingAtThePublish()
        await _die_at(asyncio.create_task(web_delivery(dying).deliver(event)), dying.reached)
        assert dying.published == []

        statuses = FlakyStatuses(failures=0)
        await web_delivery(statuses).deliver(event)  # the redelivery, at once: nothing to wait out
        assert [(s.message_id, s.status) for s in statuses.published] == [(event.message_id, "sent")]
        assert [e["text"] for e in await outbox.history("b", visitor)] == ["Your order shipped"]
        assert await db.deliveries.count_documents({}) == 0
    finally:
        await redis.aclose()
        await client.close()
