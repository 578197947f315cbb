"""`python -m services.queue` serves the queue; subcommands:

- `rebuild-index [--chatbot ID]`: rebuild the Redis index from Mongo (new epoch).
- `seed-chatbot --id demo --name "Demo Shop" [--handoff-on] [--timezone Europe/Berlin]
  [--contact-fields name,email]`: create or update a chatbot and publish its settings.
- `set-channels --chatbot demo [--whatsapp-phone-number-id ID] [--whatsapp-connected |
  --whatsapp-disconnected] [--clear-telegram] [--clear-whatsapp]`: connect a chatbot's
  Telegram bot and WhatsApp number. The secrets come from the environment, never from the
  command line (shell history, `ps`): TELEGRAM_BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET,
  WHATSAPP_ACCESS_TOKEN, WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN; each one set replaces
  the stored value, each one unset keeps it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable

from pydantic import ValidationError

from services.queue.domain import CommandRefused
from services.queue.parts import Queue, build_queue
from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from shared.bus import Bus
from shared.chatbots import ChannelCredentials, ChatbotSettings
from shared.stores import open_mongo, open_redis


class _NoBus:
    """The rebuild-index command publishes nothing: any publisher it reaches fails loudly."""

    def publisher(self, topic) -> _NoBus:  # noqa: ANN001
        return self

    async def publish(self, event) -> None:  # noqa: ANN001
        raise RuntimeError("the rebuild-index command does not publish")


async def _with_queue(settings: QueueSettings, work, *, with_bus: bool):  # noqa: ANN001
    client, db = open_mongo(settings)
    redis = open_redis(settings)
    bus = Bus(settings, client_id="handoff-queue-cli") if with_bus else None
    queue = build_queue(settings, bus or _NoBus(), QueueRecord(db), HandoffIndex(redis, settings.redis_prefix))  # type: ignore[arg-type]
    try:
        if bus:
            await bus.broker.start()
        await queue.record.create_indexes()
        await queue.chatbots.load()
        return await work(queue)
    finally:
        if bus:
            await bus.broker.stop()
        await redis.aclose()
        await client.close()


async def rebuild_index(settings: QueueSettings, chatbot_id: str | None) -> None:
    async def work(queue: Queue) -> None:
        for bot in [chatbot_id] if chatbot_id else await queue.feed.all_chatbot_ids():
            epoch = await queue.feed.rebuild(bot)
            print(f"rebuilt {bot}: epoch {epoch}")

    await _with_queue(settings, work, with_bus=False)


async def seed_chatbot(settings: QueueSettings, args: argparse.Namespace) -> None:
    def edit(existing: ChatbotSettings | None) -> ChatbotSettings:
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
        widget = base.setdefault("widget", {})
        for field in ("messages_per_visitor", "messages_per_ip", "sessions_per_ip"):
            if getattr(args, f"widget_{field}") is not None:
                widget[field] = getattr(args, f"widget_{field}")
        return ChatbotSettings.model_validate(base)

    async def work(queue: Queue) -> None:
        chatbot = await _edit_chatbot(queue, args.id, edit)
        print(f"chatbot {chatbot.chatbot_id} ({chatbot.name}) saved and published")

    await _with_queue(settings, work, with_bus=True)


async def _edit_chatbot(queue: Queue, chatbot_id: str,
                        edit: Callable[[ChatbotSettings | None], ChatbotSettings]) -> ChatbotSettings:
    """Read, edit, save at the version read; an agent's save in between (409) means read
    and edit again, never overwrite it."""
    for _ in range(EDIT_ATTEMPTS):
        try:
            return await queue.chatbots.save(edit(await queue.record.get_chatbot(chatbot_id)))
        except CommandRefused as exc:
            if exc.status_code != 409:
                raise CliError(str(exc)) from None
    raise CliError(f"chatbot {chatbot_id!r} kept changing while this command edited it; try again")


# ChannelCredentials field -> the environment variable its value is read from.
CHANNEL_SECRETS_FROM_ENV = {
    "telegram_bot_token": "TELEGRAM_BOT_TOKEN",
    "telegram_webhook_secret": "TELEGRAM_WEBHOOK_SECRET",
    "whatsapp_access_token": "WHATSAPP_ACCESS_TOKEN",
    "whatsapp_app_secret": "WHATSAPP_APP_SECRET",
    "whatsapp_verify_token": "WHATSAPP_VERIFY_TOKEN",
}


class CliError(Exception):
    """A refusal with a message for the operator (exit code 2)."""


# Read-edit-save rounds before giving up on a chatbot that agents keep changing.
EDIT_ATTEMPTS = 5


def updated_channels(current: ChannelCredentials, args: argparse.Namespace, environ: dict[str, str]) -> ChannelCredentials:
    creds = current.model_dump()
    if args.clear_telegram:
        creds.update(telegram_bot_token=None, telegram_webhook_secret=None)
    if args.clear_whatsapp:
        creds.update(whatsapp_phone_number_id=None, whatsapp_access_token=None, whatsapp_app_secret=None,
                     whatsapp_verify_token=None, whatsapp_connected=False)
    for field, variable in CHANNEL_SECRETS_FROM_ENV.items():
        if environ.get(variable):
            creds[field] = environ[variable]
    if args.whatsapp_phone_number_id:
        creds["whatsapp_phone_number_id"] = args.whatsapp_phone_number_id
    if args.whatsapp_connected is not None:
        creds["whatsapp_connected"] = args.whatsapp_connected
    result = ChannelCredentials.model_validate(creds)
    if result.whatsapp_connected and not (result.whatsapp_phone_number_id and result.whatsapp_access_token
                                          and result.whatsapp_app_secret):
        raise CliError("WhatsApp cannot be connected without --whatsapp-phone-number-id, WHATSAPP_ACCESS_TOKEN "
                       "and WHATSAPP_APP_SECRET (the webhook signature key).")
    return result


async def set_channels(settings: QueueSettings, args: argparse.Namespace, environ: dict[str, str]) -> None:
    def edit(existing: ChatbotSettings | None) -> ChatbotSettings:
        if existing is None:
            raise CliError(f"Unknown chatbot {args.chatbot!r}: create it with seed-chatbot first.")
        return existing.model_copy(update={"channels": updated_channels(existing.channels, args, environ)})

    async def work(queue: Queue) -> None:
        chatbot = await _edit_chatbot(queue, args.chatbot, edit)
        # What is configured, never the secrets themselves.
        print(f"chatbot {chatbot.chatbot_id}: channels saved and published {chatbot.channels.public_view()}")

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
    # The web widget's rate limits, in `limits` notation ("20/minute"); unchanged when omitted.
    p_seed.add_argument("--widget-messages-per-visitor", default=None)
    p_seed.add_argument("--widget-messages-per-ip", default=None)
    p_seed.add_argument("--widget-sessions-per-ip", default=None)
    p_channels = sub.add_parser("set-channels", help="connect a chatbot's Telegram bot and WhatsApp number "
                                                     "(secrets from the environment)")
    p_channels.add_argument("--chatbot", required=True)
    p_channels.add_argument("--whatsapp-phone-number-id", default=None)
    connected = p_channels.add_mutually_exclusive_group()
    connected.add_argument("--whatsapp-connected", dest="whatsapp_connected", action="store_true", default=None)
    connected.add_argument("--whatsapp-disconnected", dest="whatsapp_connected", action="store_false")
    p_channels.add_argument("--clear-telegram", action="store_true")
    p_channels.add_argument("--clear-whatsapp", action="store_true")
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
        elif args.command == "set-channels":
            asyncio.run(set_channels(settings, args, dict(os.environ)))
        else:
            asyncio.run(seed_chatbot(settings, args))
    except ValidationError as exc:
        print(f"invalid chatbot settings: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
