"""The channels' rules, without I/O: webhook authentication, parsing platform payloads into
our events, the WhatsApp customer-service window, delivery retry decisions."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from shared import reply_window
from shared.events import DeliveryStatusChanged, VisitorIdentity, VisitorMessageReceived
from shared.ids import conversation_id_for, derived_id

OUTSIDE_WINDOW_ERROR = (
    "Outside WhatsApp's 24-hour customer service window: the visitor has to write first."
)
UNKNOWN_OUTCOME_ERROR = (
    "Delivery outcome unknown: the channels service stopped while sending this message. "
    "It is not sent again, so it may not have reached the visitor."
)
MAX_TEXT = 4096


# ---------------------------------------------------------------- identifiers
# Event ids are derived from the platform's ids (shared.ids.derived_id): the same platform
# event always gets the same event id, so a duplicate that slips past the edge dedupe is
# still skipped by the consumers' processed-events check.
def inbound_dedupe_key(chatbot_id: str, channel: str, channel_message_id: str) -> str:
    return f"{chatbot_id}:{channel}:{channel_message_id}"


# ---------------------------------------------------------------- authentication
def telegram_webhook_secret(chatbot_id: str, bot_token: str | None, configured: str | None) -> str | None:
    """The secret_token given to setWebhook and checked on every update: the configured one,
    or (when the chatbot has a token but no secret) one derived from the token, so a webhook
    is never left unauthenticated. Telegram allows 1-256 characters of A-Z a-z 0-9 _ -."""
    if configured:
        return configured
    if not bot_token:
        return None
    return hmac.new(bot_token.encode(), f"handoff-telegram-webhook:{chatbot_id}".encode(), hashlib.sha256).hexdigest()


def valid_telegram_secret(expected: str | None, given: str | None) -> bool:
    """Telegram echoes the webhook's secret_token in X-Telegram-Bot-Api-Secret-Token."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def valid_whatsapp_signature(app_secret: str | None, raw_body: bytes, header: str | None) -> bool:
    """Meta signs the raw body: X-Hub-Signature-256: sha256=<hex HMAC-SHA256 with the app secret>."""
    if not app_secret or not header or not header.startswith("sha256="):
        return False
    given = "sha256=" + header[len("sha256="):].strip().lower()
    return hmac.compare_digest(whatsapp_signature(app_secret, raw_body).encode(), given.encode())


def whatsapp_signature(app_secret: str, raw_body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()


def valid_whatsapp_verification(verify_token: str | None, mode: str | None, given: str | None) -> bool:
    if mode != "subscribe" or not verify_token or given is None:
        return False
    return hmac.compare_digest(verify_token.encode(), given.encode())


# ---------------------------------------------------------------- inbound parsing
def visitor_message(
    chatbot_id: str, channel: Literal["web", "telegram", "whatsapp"], external_id: str, name: str | None,
    text: str, channel_message_id: str, occurred_at: datetime | None = None,
) -> VisitorMessageReceived:
    extra: dict[str, Any] = {"occurred_at": occurred_at} if occurred_at else {}
    # JSON may escape a lone UTF-16 surrogate ("\ud800"), which no UTF-8 event can carry.
    external_id, text, channel_message_id = map(_encodable, (external_id, text, channel_message_id))
    name = _encodable(name) if name else None
    return VisitorMessageReceived(
        # The visitor is part of the key: a widget's client message id is only unique per visitor.
        event_id=derived_id("", chatbot_id, channel, external_id, "message", channel_message_id),
        chatbot_id=chatbot_id,
        conversation_id=conversation_id_for(chatbot_id, channel, external_id),
        channel=channel,
        visitor=VisitorIdentity(external_id=external_id, name=(name or None) and name[:200]),
        text=text[:MAX_TEXT],
        channel_message_id=channel_message_id,
        sent_at=occurred_at,  # the platform's stamp (None from the widget): the reply window's fact
        **extra,
    )


# ---------------------------------------------------------------- what the visitor sent
# Media and other messages without typed words still reach the transcript, as words: an
# agent must see that a photo came in (and ask about it) rather than a visitor being
# ignored; the AI and search read the same words. The media itself is not fetched.
TELEGRAM_MEDIA = {  # checked in this order: an animation also carries a "document"
    "animation": "GIF", "photo": "Photo", "video": "Video", "video_note": "Video message",
    "voice": "Voice message", "audio": "Audio", "document": "Document", "sticker": "Sticker",
}
WHATSAPP_MEDIA = {"image": "Photo", "video": "Video", "audio": "Audio", "document": "Document", "sticker": "Sticker"}


def _encodable(text: str) -> str:
    """`text` with lone surrogates replaced ("?"): what UTF-8 can encode."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _words(value: Any) -> str | None:
    return _encodable(value.strip()) if isinstance(value, str) and value.strip() else None


def described(label: str, detail: str | None = None, caption: str | None = None) -> str:
    """"[Photo]", "[Document: invoice.pdf] Here it is", "[Location: 52.52, 13.405]"."""
    tag = f"[{label}: {detail}]" if detail else f"[{label}]"
    return f"{tag} {caption}" if caption else tag


def _joined(*parts: Any) -> str | None:
    return " ".join(w for w in (_words(p) for p in parts) if w) or None


def _place(part: dict[str, Any]) -> str | None:
    named = ", ".join(w for w in (_words(part.get("name") or part.get("title")), _words(part.get("address"))) if w)
    lat, lon = part.get("latitude"), part.get("longitude")
    point = f"{lat}, {lon}" if isinstance(lat, int | float) and isinstance(lon, int | float) else None
    return named or point


def _telegram_detail(key: str, part: dict[str, Any]) -> str | None:
    if key == "sticker":
        return _words(part.get("emoji"))
    if key == "audio":
        return _joined(part.get("performer"), part.get("title")) or _words(part.get("file_name"))
    if key == "document":
        return _words(part.get("file_name"))
    return None


def telegram_text(message: dict[str, Any]) -> str | None:
    """What a Telegram message says, as words; None when it carries nothing we can show."""
    text = _words(message.get("text"))
    if text:
        return message["text"]
    caption = _words(message.get("caption"))
    for key, label in TELEGRAM_MEDIA.items():
        if message.get(key) is None:
            continue
        part = message[key] if isinstance(message[key], dict) else {}  # a photo is a list of sizes
        return described(label, _telegram_detail(key, part), caption)
    for key in ("venue", "location"):  # a venue also carries its location
        part = message.get(key)
        if isinstance(part, dict) and _place(part):
            return described("Location", _place(part))
    contact = message.get("contact")
    if isinstance(contact, dict):
        detail = _joined(contact.get("first_name"), contact.get("last_name"), contact.get("phone_number"))
        if detail:
            return described("Contact", detail)
    poll = message.get("poll")
    if isinstance(poll, dict) and _words(poll.get("question")):
        return described("Poll", _words(poll["question"]))
    dice = message.get("dice")
    if isinstance(dice, dict) and _words(dice.get("emoji")):
        return described("Dice", f"{dice['emoji']} {dice.get('value', '')}".strip())
    return None


WHATSAPP_UNSUPPORTED = "[A message WhatsApp cannot show]"


def whatsapp_text(message: dict[str, Any]) -> str | None:
    """What a WhatsApp message says, as words; None when it carries nothing we can show
    (a system message, a shape we do not know)."""
    kind = message.get("type")
    part = message.get(kind) if isinstance(kind, str) else None
    if kind == "unsupported":  # a message type the Cloud API cannot deliver (a poll, a view-once photo)
        return WHATSAPP_UNSUPPORTED
    if kind == "reaction" and isinstance(part, dict):  # an empty emoji: the reaction was taken back
        emoji = _words(part.get("emoji"))
        return described(f"Reacted {emoji} to a message") if emoji else described("Removed a reaction")
    if kind == "contacts" and isinstance(part, list) and part and isinstance(part[0], dict):
        first = part[0]
        name = first.get("name") if isinstance(first.get("name"), dict) else {}
        phones = [p.get("phone") for p in _list(first.get("phones")) if isinstance(p, dict)]
        detail = _joined(name.get("formatted_name"), phones[0] if phones else None)
        return described("Contact", detail) if detail else None
    if not isinstance(part, dict):
        return None
    if kind == "text":
        return part["body"] if _words(part.get("body")) else None
    if kind == "button":  # a tap on a quick-reply button: its words
        return _words(part.get("text"))
    if kind == "interactive":  # a tap on a reply button or a list row: its title
        reply = part.get("button_reply") or part.get("list_reply")
        return _words(reply.get("title")) if isinstance(reply, dict) else None
    if kind in WHATSAPP_MEDIA:
        label = "Voice message" if kind == "audio" and part.get("voice") else WHATSAPP_MEDIA[kind]
        return described(label, _words(part.get("filename")) if kind == "document" else None, _words(part.get("caption")))
    if kind == "location":
        return described("Location", _place(part)) if _place(part) else None
    return None


def telegram_display_name(user: dict[str, Any] | None) -> str | None:
    if not user:
        return None
    return _joined(user.get("first_name"), user.get("last_name")) or _words(user.get("username"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _platform_id(value: Any) -> str | None:
    """A platform's id (chat, update, wa_id, wamid): a number or a short string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = _encodable(str(value).strip())  # it becomes a Mongo key and part of hashed ids
    return text if 0 < len(text) <= 256 else None


def platform_time(value: Any, now: datetime | None = None) -> datetime | None:
    """A platform's Unix timestamp (a number, or digits in a string): None when it is none
    or out of range. One in the future is taken as now: it must not hold the WhatsApp
    window open, or sort a message after ones still to come."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    try:
        at = datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    now = now or datetime.now(UTC)
    return min(at, now)


# What setWebhook asks Telegram for (edits included, so they reach the conversation).
TELEGRAM_UPDATES: tuple[str, ...] = ("message", "edited_message")
TELEGRAM_GROUP_CHATS = ("group", "supergroup")
EDITED_PREFIX = "(edited) "


@dataclass(frozen=True)
class TelegramBot:
    """The chatbot's Telegram bot, to tell whether a group message addresses it: its user id
    (getMe, or the bot token's first part) and its @username (getMe; None when unknown)."""

    id: str
    username: str | None = None

    @classmethod
    def from_token(cls, token: str) -> TelegramBot | None:
        """A bot token is "<bot user id>:<secret>": the id without asking Telegram."""
        head = token.split(":", 1)[0]
        return cls(head) if head.isdigit() else None


def _telegram_message(update: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """The update's message and whether it is an edit; (None, False) for other kinds
    (channel posts, callbacks, member changes ...)."""
    for kind, edited in (("message", False), ("edited_message", True)):
        if isinstance(update.get(kind), dict):
            return update[kind], edited
    return None, False


def telegram_from_group(update: dict[str, Any]) -> bool:
    """Whether the update is a group's message (reading it needs the bot's identity)."""
    message, _ = _telegram_message(update)
    return message is not None and _dict(message.get("chat")).get("type") in TELEGRAM_GROUP_CHATS


def _mention(username: str) -> re.Pattern[str]:
    # "@shop_bot" as a word of its own (usernames are ASCII letters, digits and "_"), not
    # "@shop_bot2" or an e-mail address.
    return re.compile(rf"(?<![\w@])@{re.escape(username)}(?!\w)", re.IGNORECASE)


_COMMAND = re.compile(r"^/(\w+)(?:@(\w+))?")


def telegram_addresses_bot(message: dict[str, Any], bot: TelegramBot) -> bool:
    """A group message is the bot's when it replies to the bot's message, mentions the bot
    (@username, or a mention of its user), or is a command for it ("/help@shop_bot", or a
    bare "/help", which Telegram means for every bot in the group)."""
    replied = _dict(message.get("reply_to_message"))
    if _platform_id(_dict(replied.get("from")).get("id")) == bot.id:
        return True
    text = message.get("text") if isinstance(message.get("text"), str) else message.get("caption")
    text = text if isinstance(text, str) else ""
    for entity in _list(message.get("entities")) + _list(message.get("caption_entities")):
        entity = _dict(entity)
        if entity.get("type") == "text_mention" and _platform_id(_dict(entity.get("user")).get("id")) == bot.id:
            return True
    if bot.username and _mention(bot.username).search(text):
        return True
    command = _COMMAND.match(text)
    if command:
        to = command.group(2)
        return to is None or (bot.username is not None and to.lower() == bot.username.lower())
    return False


def _without_mention(text: str, bot: TelegramBot) -> str:
    """"@shop_bot where is my order?" -> "where is my order?", "/help@shop_bot" -> "/help"
    (the rest of the group does not need the address; the AI and the agent neither)."""
    if not bot.username:
        return text
    cleaned = re.sub(rf"^(/\w+)@{re.escape(bot.username)}\b", r"\1", text, flags=re.IGNORECASE)
    # "hey @shop_bot, open?" -> "hey, open?"; "@shop_bot, where…" -> "where…"
    cleaned = re.sub(r"\s*" + _mention(bot.username).pattern, "", cleaned, flags=re.IGNORECASE)
    cleaned = " ".join(cleaned.split()).lstrip(",:;-–— ")
    return cleaned or text


def parse_telegram_update(
    chatbot_id: str, update: dict[str, Any], bot: TelegramBot | None = None,
) -> VisitorMessageReceived | None:
    """A Telegram update -> a visitor message, or None for what we do not handle.
    channel_message_id is the update id (Telegram's retry key).

    Decided:
    - The message is what the visitor wrote, or a description of what they sent
      (`telegram_text`: "[Photo] Is this broken?", "[Sticker: 👍]", "[Location: …]").
    - An edit (`edited_message`) is a new message in the same conversation, "(edited) …":
      the AI and the agent see what changed, and what they already answered stays as it was.
    - Groups and supergroups: only messages addressed to the bot (`telegram_addresses_bot`;
      `bot` None: none) are taken — the AI must not answer every message people send each
      other there. The group is one conversation (the group's chat id, named after the
      group's title); each message says who wrote it: "Ana Lima: where is my order?" (the
      bot's @mention taken out). Replies go to the group.
    - Channel posts, service messages and other kinds are acknowledged and dropped."""
    update_id = _platform_id(update.get("update_id"))
    message, edited = _telegram_message(update)
    if update_id is None or message is None:
        return None
    text = telegram_text(message)
    chat = _dict(message.get("chat"))
    chat_id = _platform_id(chat.get("id"))
    if text is None or chat_id is None or chat.get("type") == "channel":
        return None
    sender = message.get("from")
    speaker = telegram_display_name(sender if isinstance(sender, dict) else None)
    name = speaker
    if edited:
        text = EDITED_PREFIX + text
    if chat.get("type") in TELEGRAM_GROUP_CHATS:
        if bot is None or not telegram_addresses_bot(message, bot):
            return None
        # An anonymous admin writes as the group itself (`sender_chat`).
        speaker = _words(_dict(message.get("sender_chat")).get("title")) or speaker
        name = _words(chat.get("title")) or speaker
        text = _without_mention(text, bot)
        text = f"{speaker}: {text}" if speaker else text
    at = platform_time(message.get("edit_date")) if edited else None
    return visitor_message(chatbot_id, "telegram", chat_id, name, text, update_id,
                           at or platform_time(message.get("date")))


@dataclass(frozen=True)
class WhatsAppInbound:
    wamid: str
    wa_id: str
    sent_at: datetime
    message: VisitorMessageReceived | None  # None: not a text message (still opens the window)


@dataclass(frozen=True)
class WhatsAppStatus:
    wamid: str
    status: Literal["sent", "delivered", "read", "failed"]
    error: str | None


@dataclass
class WhatsAppPayload:
    inbound: list[WhatsAppInbound] = field(default_factory=list)
    statuses: list[WhatsAppStatus] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why parts were left out (no content, no secrets)


def parse_whatsapp_payload(chatbot_id: str, payload: dict[str, Any], phone_number_id: str | None) -> WhatsAppPayload:
    """The Cloud API webhook (object=whatsapp_business_account): messages and statuses.

    Only changes for the chatbot's own number (`value.metadata.phone_number_id`) count: one
    for another number, or without metadata, is skipped (it is not this chatbot's
    conversation). Parts of shapes we do not know are skipped, never an error: the body is
    signed by Meta, and an error answer would make Meta redeliver it for days."""
    out = WhatsAppPayload()
    entries = payload.get("entry")
    if not isinstance(entries, list):
        out.skipped.append("no entry list")
        return out
    for entry in entries:
        changes = _dict(entry).get("changes")
        if not isinstance(changes, list):
            out.skipped.append("an entry without a changes list")
            continue
        for change in changes:
            value = _dict(_dict(change).get("value"))
            if not value:
                out.skipped.append("a change without a value")
                continue
            number = _platform_id(_dict(value.get("metadata")).get("phone_number_id"))
            if number is None or number != phone_number_id:
                out.skipped.append("a change for another phone_number_id than the chatbot's" if number
                                   else "a change without metadata.phone_number_id")
                continue
            _parse_change(chatbot_id, value, out)
    return out


def _parse_change(chatbot_id: str, value: dict[str, Any], out: WhatsAppPayload) -> None:
    names: dict[str, str | None] = {}
    for c in _list(value.get("contacts")):
        wa_id = _platform_id(_dict(c).get("wa_id"))
        if wa_id:
            names[wa_id] = _words(_dict(_dict(c).get("profile")).get("name"))
    for m in _list(value.get("messages")):
        m = _dict(m)
        wamid, wa_id = _platform_id(m.get("id")), _platform_id(m.get("from"))
        if not wamid or not wa_id:
            out.skipped.append("a message without id or sender")
            continue
        received = datetime.now(UTC)
        sent_at = reply_window.inbound_at(platform_time(m.get("timestamp"), received), received)
        # What the visitor wrote or sent, as words; what has none (a system message) only
        # opens the window.
        body = whatsapp_text(m)
        event = None
        if body is not None:
            event = visitor_message(chatbot_id, "whatsapp", wa_id, names.get(wa_id), body, wamid, sent_at)
        out.inbound.append(WhatsAppInbound(wamid, wa_id, sent_at, event))
    for s in _list(value.get("statuses")):
        s = _dict(s)
        status, wamid = s.get("status"), _platform_id(s.get("id"))
        if status not in ("sent", "delivered", "read", "failed") or not wamid:
            out.skipped.append("a status of an unknown kind or without id")
            continue
        error = None
        if status == "failed":
            first = _dict((_list(s.get("errors")) or [{}])[0])
            error = (_words(first.get("title")) or _words(first.get("message"))
                     or "WhatsApp could not deliver the message.")
            if isinstance(first.get("code"), int | str) and not isinstance(first.get("code"), bool):
                error = f"{error} (code {first['code']})"
        out.statuses.append(WhatsAppStatus(wamid, status, error))


def status_event(
    chatbot_id: str, conversation_id: str | None, message_id: str, status: str,
    channel_message_id: str | None = None, error: str | None = None, permanent: bool = False,
) -> DeliveryStatusChanged:
    return DeliveryStatusChanged(
        event_id=derived_id("", chatbot_id, "delivery", message_id, status),
        chatbot_id=chatbot_id, conversation_id=conversation_id, message_id=message_id,
        status=status,  # type: ignore[arg-type]
        channel_message_id=channel_message_id, error=error[:1000] if error else None, permanent=permanent,
    )


# ---------------------------------------------------------------- WhatsApp window
@dataclass(frozen=True)
class WindowState:
    open: bool
    ends_at: datetime | None


def whatsapp_window(last_inbound: datetime | None, now: datetime) -> WindowState:
    """Free-form messages may be sent until 24 hours after the visitor's last message: the
    queue's definition too (shared/reply_window.py), so the pane and delivery agree."""
    return WindowState(reply_window.is_open(last_inbound, now), reply_window.window_ends_at(last_inbound))


# ---------------------------------------------------------------- delivery
class TransientDeliveryError(Exception):
    """Worth retrying (network, 5xx, 429). `retry_after` is the platform's wait, if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(Exception):
    """Retrying cannot help (bad request, blocked bot, outside the window, not configured)."""


def retry_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff (attempt 1 -> base); a platform's retry_after wins when it is longer."""
    delay = min(cap, base * 2 ** (attempt - 1))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
