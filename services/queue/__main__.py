"""`python -m services.queue` serves the queue; subcommands:

- `rebuild-index [--chatbot ID]`: rebuild the Redis index from Mongo (new epoch).
- `seed-chatbot --id demo --name "Demo Shop" [--handoff-on] [--timezone Europe/Berlin]
  [--contact-fields name,email]`: create or update a chatbot and publish its settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import ValidationError

from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from services.queue.workflow import HandoffQueue
from shared.bus import Bus
from shared.chatbots import ChatbotSettings
from shared.stores import open_mongo, open_redis
from shared.topics import CHATBOT_SETTINGS, CONVERSATION_STATE, DASHBOARD_UPDATES, OUTBOUND_MESSAGES


class _NoPublisher:
    async def publish(self, event) -> None:  # noqa: ANN001 - the CLI's rebuild publishes nothing
        raise RuntimeError("the rebuild-index command does not publish")


async def _with_queue(settings: QueueSettings, work, *, with_bus: bool):  # noqa: ANN001
    client, db = open_mongo(settings)
    redis = open_redis(settings)
    bus = Bus(settings, client_id="handoff-queue-cli") if with_bus else None
    record = QueueRecord(db)
    pubs = {name: (bus.publisher(t) if bus else _NoPublisher()) for name, t in
            (("state_out", CONVERSATION_STATE), ("dashboard_out", DASHBOARD_UPDATES),
             ("outbound_out", OUTBOUND_MESSAGES), ("settings_out", CHATBOT_SETTINGS))}
    queue = HandoffQueue(record, HandoffIndex(redis, settings.redis_prefix), **pubs)
    try:
        if bus:
            await bus.broker.start()
        await record.create_indexes()
        await queue.load_chatbots()
        return await work(queue)
    finally:
        if bus:
            await bus.broker.stop()
        await redis.aclose()
        await client.close()


async def rebuild_index(settings: QueueSettings, chatbot_id: str | None) -> None:
    async def work(queue: HandoffQueue) -> None:
        for bot in [chatbot_id] if chatbot_id else await queue.all_chatbot_ids():
            epoch = await queue.rebuild(bot)
            print(f"rebuilt {bot}: epoch {epoch}")

    await _with_queue(settings, work, with_bus=False)


async def seed_chatbot(settings: QueueSettings, args: argparse.Namespace) -> None:
    async def work(queue: HandoffQueue) -> None:
        existing = await queue.record.get_chatbot(args.id)
        base = existing.model_dump() if existing else {"chatbot_id": args.id, "name": args.name}
        base["name"] = args.name
        if args.timezone:
            base["timezone"] = args.timezone
            base.setdefault("human_handoff", {})["timezone"] = args.timezone
        hh = base.setdefault("human_handoff", {})
        if args.handoff_on:
            hh["enabled"] = True
        if args.contact_fields is not None:
            hh["contact_fields"] = [f.strip() for f in args.contact_fields.split(",") if f.strip()]
        chatbot = ChatbotSettings.model_validate(base)
        await queue.seed_chatbot(chatbot)
        print(f"chatbot {chatbot.chatbot_id} ({chatbot.name}) saved and published")

    await _with_queue(settings, work, with_bus=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.queue")
    sub = parser.add_subparsers(dest="command")
    p_rebuild = sub.add_parser("rebuild-index", help="rebuild the Redis index from Mongo")
    p_rebuild.add_argument("--chatbot", default=None)
    p_seed = sub.add_parser("seed-chatbot", help="create or update a chatbot and publish its settings")
    p_seed.add_argument("--id", required=True)
    p_seed.add_argument("--name", required=True)
    p_seed.add_argument("--handoff-on", action="store_true")
    p_seed.add_argument("--timezone", default=None)
    p_seed.add_argument("--contact-fields", default=None)
    args = parser.parse_args(argv)
    settings = QueueSettings()
    if args.command is None:
        from services.queue.app import create_app
        from shared.service import serve

        serve(create_app, settings)
        return 0
    try:
        if args.command == "rebuild-index":
            asyncio.run(rebuild_index(settings, args.chatbot))
        else:
            asyncio.run(seed_chatbot(settings, args))
    except ValidationError as exc:
        print(f"invalid chatbot settings: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
