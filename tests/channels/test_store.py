"""The channels' stores against the real Redis and Mongo-wire server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from services.channels.settings import ChannelsSettings
from services.channels.store import DeliveryRecords, InboundDedupe, WebOutbox, WhatsAppWindowStore
from shared.stores import open_mongo, open_redis
from tests.harness import settings_from_env


async def test_inbound_dedupe_claim_done_release(isolated):
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    redis = open_redis(settings)
    try:
        dedupe = InboundDedupe(redis, settings.redis_prefix, ttl_s=60)
        assert await dedupe.claim("k1") == "new"
        assert await dedupe.claim("k1") == "pending"  # being published right now
        await dedupe.release("k1")  # publishing failed: the retry must be accepted
        assert await dedupe.claim("k1") == "new"
        await dedupe.done("k1")
        assert await dedupe.claim("k1") == "done"
        assert 0 < await redis.ttl(f"{settings.redis_prefix}:inbound:k1") <= 60
    finally:
        await redis.aclose()


async def test_window_keeps_latest_inbound_and_outbox_history(isolated):
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    redis = open_redis(settings)
    try:
        window = WhatsAppWindowStore(redis, settings.redis_prefix)
        now = datetime.now(UTC).replace(microsecond=0)
        assert await window.last_inbound("b", "cv1") is None
        await window.record_inbound("b", "cv1", now)
        await window.record_inbound("b", "cv1", now - timedelta(hours=3))  # late, older delivery
        assert await window.last_inbound("b", "cv1") == now
        assert await window.last_inbound("other-bot", "cv1") is None

        outbox = WebOutbox(redis, settings.redis_prefix, limit=3, ttl_s=60)
        for i in range(5):
            await outbox.store("b", "v_1", {"message_id": f"m{i}"})
        assert [e["message_id"] for e in await outbox.history("b", "v_1")] == ["m2", "m3", "m4"]
        # The same entry again (a reply sent again after a crash) is kept once; the TTL still holds.
        entry = {"message_id": "m4", "text": "again?"}
        assert await outbox.store("b", "v_2", entry) is True
        assert await outbox.store("b", "v_2", entry) is False
        assert await outbox.history("b", "v_2") == [entry]
        assert 0 < await redis.ttl(f"{settings.redis_prefix}:web:history:b:v_2") <= 60
        assert await outbox.mark_delivered_once("m4") is True
        assert await outbox.mark_delivered_once("m4") is False
    finally:
        await redis.aclose()


async def test_a_visitors_own_message_is_kept_and_announced_in_one_round_trip(isolated):
    """Every widget POST appends the visitor's message to its history and tells every channels
    instance (the one holding the visitor's socket shows it): one script, not two commands."""
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    redis = open_redis(settings)
    listener = redis.pubsub()
    try:
        outbox = WebOutbox(redis, settings.redis_prefix, limit=3, ttl_s=60)
        await listener.subscribe(outbox.live_channel)
        await listener.get_message(timeout=5)  # the subscription's confirmation
        await outbox.store("b", "v_0", {"message_id": "m0"})  # Redis now knows the script (no NOSCRIPT retry below)
        sent = 0
        execute = redis.execute_command

        async def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            nonlocal sent
            sent += 1
            return await execute(*args, **kwargs)

        redis.execute_command = counted  # type: ignore[method-assign]
        entry = {"message_id": "m1", "text": "hi"}
        await outbox.append("b", "v_1", entry)
        assert sent == 1
        assert await outbox.history("b", "v_1") == [entry]
        live = await listener.get_message(ignore_subscribe_messages=True, timeout=5)
        assert live is not None and json.loads(live["data"]) == {"chatbot_id": "b", "visitor_id": "v_1", "entry": entry}
        await outbox.append("b", "v_1", entry)  # a repeat: kept once, announced again as before
        assert await outbox.history("b", "v_1") == [entry]
        assert await listener.get_message(ignore_subscribe_messages=True, timeout=5) is not None
        assert 0 < await redis.ttl(f"{settings.redis_prefix}:web:history:b:v_1") <= 60
    finally:
        await listener.aclose()
        await redis.aclose()


async def test_delivery_claimed_once(isolated):
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    try:
        records = DeliveryRecords(db)
        assert await records.claim("msg-1", "b", "cv", "telegram") is None
        again = await records.claim("msg-1", "b", "cv", "telegram")
        assert again is not None and again["state"] == "sending"
        await records.finish("msg-1", "sent", "555", None)
        await records.remember_wamid("wamid.Z", "msg-1", "b", "cv")
        done = await records.claim("msg-1", "b", "cv", "telegram")
        assert done["state"] == "sent" and done["channel_message_id"] == "555" and done["status_published"] is False
        assert (await records.message_for_wamid("wamid.Z"))["message_id"] == "msg-1"
        assert await records.message_for_wamid("wamid.unknown") is None
    finally:
        await client.close()


async def test_concurrent_deliveries_share_round_trips_and_keep_their_own_outcomes(isolated):
    """Claims, outcomes and 'status published' marks of concurrent deliveries go to Mongo as
    one bulk write per kind; each caller still learns its own outcome, also when some claims
    in the batch were settled by a sweep meanwhile (their outcome is not recorded)."""
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    try:
        records = DeliveryRecords(db)
        ids = [f"batch-{i}" for i in range(20)]
        claims = await asyncio.gather(*(records.claim(i, "b", f"cv-{i}", "web") for i in ids),
                                      records.claim("batch-0", "b", "cv-0", "web"))
        assert claims[:20] == [None] * 20 and claims[20]["state"] == "sending"
        assert records._claims.batches < 5  # noqa: SLF001 - the point of the test
        # A sweep settles two claims as expired before their senders finish.
        later = datetime.now(UTC) + timedelta(days=1)
        await db["deliveries"].update_many({"_id": {"$in": ["batch-3", "batch-7"]}}, {"$set": {"lease_until": later - timedelta(hours=1)}})
        assert await records.settle_expired("batch-3", later, "unknown") and await records.settle_expired("batch-7", later, "unknown")
        finished = await asyncio.gather(*(records.finish(i, "sent", i, None) for i in ids))
        assert finished == [i not in ("batch-3", "batch-7") for i in ids]
        assert records._finishes.batches < 5  # noqa: SLF001
        await asyncio.gather(*(records.status_published(i) for i in ids))
        docs = {d["_id"]: d async for d in db["deliveries"].find({"_id": {"$in": ids}})}
        assert all(d["status_published"] for d in docs.values())
        assert docs["batch-3"]["state"] == "failed" and docs["batch-4"]["state"] == "sent"
    finally:
        await client.close()
