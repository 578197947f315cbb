"""Telegram groups, edits and channel posts, on updates built with python-telegram-bot's own
classes and serialised as Telegram sends them (`Update.to_json`). Decided (domain.py,
parse_telegram_update): in a group only messages addressed to the bot are taken, and the
group is one conversation named after it, each message saying who wrote it; an edit is a new
message "(edited) …"; channel posts are dropped; private chats are as before."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from telegram import Chat, Message, MessageEntity, Update, User

from services.channels.domain import TelegramBot, parse_telegram_update, telegram_from_group
from shared.ids import conversation_id_for

BOT = TelegramBot("42", "shop_bot")
BOT_USER = User(id=42, first_name="Shop", is_bot=True, username="shop_bot")
ANA = User(id=1001, first_name="Ana", last_name="Lima", is_bot=False)
BO = User(id=1002, first_name="Bo", is_bot=False, username="bo")
GROUP = Chat(id=-1001234567890, type=Chat.SUPERGROUP, title="Bike Club")
PRIVATE = Chat(id=1001, type=Chat.PRIVATE, first_name="Ana")
AT = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
LATER = datetime(2026, 11, 25, 14, 32, tzinfo=UTC)
UPDATE_IDS = iter(range(700, 10_000))


def _entities(text: str) -> tuple[MessageEntity, ...]:
    """What Telegram marks in a text: @mentions and a leading /command (ASCII texts here)."""
    found = [MessageEntity(MessageEntity.MENTION, m.start(), len(m.group())) for m in re.finditer(r"@\w+", text)
             if not text.startswith("/") or m.start() > 0]
    command = re.match(r"/\w+(@\w+)?", text)
    if command:
        found.insert(0, MessageEntity(MessageEntity.BOT_COMMAND, 0, len(command.group())))
    return tuple(found)


def _message(text: str, chat: Chat = GROUP, user: User | None = ANA, message_id: int = 1, **kw) -> Message:
    return Message(message_id=message_id, date=AT, chat=chat, from_user=user, text=text, entities=_entities(text), **kw)


def _update(message: Message, kind: str = "message") -> dict:
    return json.loads(Update(update_id=next(UPDATE_IDS), **{kind: message}).to_json())


def _parse(update: dict, bot: TelegramBot | None = BOT):
    return parse_telegram_update("shop", update, bot)


def test_group_messages_not_addressed_to_the_bot_are_dropped():
    for text in ("anyone riding on sunday?", "@bo can you bring the pump", "/help@other_bot", "mail me: x@shop_bot.io"):
        assert _parse(_update(_message(text))) is None, text
    # A reply to another member is not a reply to the bot.
    bos = _message("see you there", user=BO, message_id=1)
    assert _parse(_update(_message("great", reply_to_message=bos, message_id=2))) is None


def test_a_group_is_one_conversation_named_after_it_and_each_message_says_who_wrote_it():
    mention = _parse(_update(_message("@shop_bot where is my order?")))
    bots_message = _message("Your order ships today.", user=BOT_USER, message_id=3)
    reply = _parse(_update(_message("thanks! and the tracking number?", user=BO, message_id=4,
                                    reply_to_message=bots_message)))
    command = _parse(_update(_message("/help@shop_bot", user=BO, message_id=5)))
    bare_command = _parse(_update(_message("/start", message_id=6)))
    upper = _parse(_update(_message("hey @Shop_Bot, are you open?", message_id=7)))
    first = _parse(_update(_message("@shop_bot, @bo and I need two helmets", message_id=8)))

    group = conversation_id_for("shop", "telegram", str(GROUP.id))
    for event in (mention, reply, command, bare_command, upper, first):
        assert event is not None
        assert event.conversation_id == group and event.visitor.external_id == str(GROUP.id)
        assert event.visitor.name == "Bike Club"
    assert mention.text == "Ana Lima: where is my order?"
    assert reply.text == "Bo: thanks! and the tracking number?"
    assert command.text == "Bo: /help"
    assert bare_command.text == "Ana Lima: /start"
    assert upper.text == "Ana Lima: hey, are you open?"
    assert first.text == "Ana Lima: @bo and I need two helmets"


def test_a_mention_of_the_bot_as_a_user_and_a_captioned_photo_count():
    text_mention = Message(message_id=8, date=AT, chat=GROUP, from_user=ANA, text="Shop, what does it cost?",
                           entities=(MessageEntity(MessageEntity.TEXT_MENTION, 0, 4, user=BOT_USER),))
    event = _parse(_update(text_mention))
    assert event is not None and event.text == "Ana Lima: Shop, what does it cost?"
    photo = Message(message_id=9, date=AT, chat=GROUP, from_user=ANA, caption="@shop_bot is this scratch covered?",
                    caption_entities=(MessageEntity(MessageEntity.MENTION, 0, 9),), photo=())
    photo_update = _update(photo)
    photo_update["message"]["photo"] = [{"file_id": "p", "file_unique_id": "u", "width": 9, "height": 9}]
    event = _parse(photo_update)
    assert event is not None and event.text == "Ana Lima: [Photo] is this scratch covered?"


def test_an_anonymous_admin_speaks_as_the_group():
    anonymous = User(id=1087968824, first_name="Group", is_bot=True, username="GroupAnonymousBot")
    event = _parse(_update(_message("@shop_bot please call me", user=anonymous, sender_chat=GROUP)))
    assert event is not None and event.text == "Bike Club: please call me"


def test_without_the_bots_identity_no_group_message_is_taken():
    assert _parse(_update(_message("@shop_bot where is my order?")), bot=None) is None
    # Known by id only (getMe refused): a reply to the bot still counts.
    bots_message = _message("Hi!", user=BOT_USER, message_id=3)
    event = _parse(_update(_message("hello", reply_to_message=bots_message, message_id=4)), bot=TelegramBot("42"))
    assert event is not None and event.text == "Ana Lima: hello"


def test_edits_are_new_messages_marked_edited_in_the_same_conversation():
    original = _update(_message("My order is 1234", chat=PRIVATE, message_id=11))
    edit = _update(_message("My order is 1243", chat=PRIVATE, message_id=11, edit_date=LATER), "edited_message")
    first, second = _parse(original), _parse(edit)
    assert first is not None and second is not None
    assert second.text == "(edited) My order is 1243" and second.visitor.name == "Ana Lima"
    assert second.conversation_id == first.conversation_id
    assert second.event_id != first.event_id and second.channel_message_id == str(edit["update_id"])
    assert second.occurred_at == LATER  # when it was edited

    group_edit = _update(_message("@shop_bot my order is 1243", message_id=12, edit_date=LATER), "edited_message")
    event = _parse(group_edit)
    assert event is not None and event.text == "Ana Lima: (edited) my order is 1243"
    assert _parse(_update(_message("sunday then", message_id=13, edit_date=LATER), "edited_message")) is None


def test_channel_posts_are_dropped_and_private_chats_are_unchanged():
    channel = Chat(id=-1009876, type=Chat.CHANNEL, title="Shop news")
    for kind in ("channel_post", "edited_channel_post"):
        post = Message(message_id=1, date=AT, chat=channel, text="@shop_bot new bikes in stock", sender_chat=channel)
        assert _parse(_update(post, kind)) is None
    private = _parse(_update(_message("@shop_bot hello", chat=PRIVATE)), bot=None)
    assert private is not None
    assert private.text == "@shop_bot hello" and private.visitor.name == "Ana Lima"
    assert private.visitor.external_id == str(PRIVATE.id)


def test_group_updates_are_told_apart():
    assert telegram_from_group(_update(_message("hi")))
    assert telegram_from_group(_update(_message("hi", edit_date=LATER), "edited_message"))
    assert not telegram_from_group(_update(_message("hi", chat=PRIVATE)))
    assert not telegram_from_group({"update_id": 1, "message": "x"})


def test_the_bot_id_comes_from_the_token():
    assert TelegramBot.from_token("7000123:AAsecret") == TelegramBot("7000123")
    assert TelegramBot.from_token("not-a-token") is None
