"""Delivering OutboundMessages: one sender at a time per message id, retried on transient
errors with exponential backoff (honouring a platform's retry_after), and always ending in a
DeliveryStatusChanged — 'sent', or 'failed' with permanent=True and a readable error.

Telegram and WhatsApp replies are claimed in Mongo first: a sender that died mid-delivery
(its claim's lease ran out) is replaced, and the message sent again only when the platform
call had not started; otherwise it is reported failed, outcome unknown, never sent twice.
Web widget replies take no claim: every step of theirs is harmless to repeat (see
`_deliver_web`), so the bus's redelivery of an unfinished event is their whole recovery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from services.channels.chatbots import ChatbotTable
from services.channels.domain import (
    OUTSIDE_WINDOW_ERROR,
    UNKNOWN_OUTCOME_ERROR,
    PermanentDeliveryError,
    TransientDeliveryError,
    retry_delay,
    status_event,
    whatsapp_window,
)
from services.channels.metrics import delivered
from services.channels.platforms import TelegramClient, WhatsAppClient
from services.channels.store import DeliveryRecords, WebOutbox, WhatsAppWindowStore
from shared.bus import EventPublisher
from shared.events import OutboundMessage
from shared.ids import conversation_id_for, new_id, redact

log = logging.getLogger("handoff.channels.outbound")

STATUS_REPUBLISH_AFTER = timedelta(seconds=60)
# How often each instance looks for claims whose owner died (see OutboundDelivery.sweep).
SWEEP_INTERVAL_S = 30.0

Sleep = Callable[[float], Awaitable[None]]


class ClaimLost(Exception):
    """This instance stalled past its lease and another took the message over: stop, send nothing."""


def web_entry(event: OutboundMessage) -> dict:
    """What the widget receives (and replays) for one outbound message."""
    return {
        "type": "message", "message_id": event.message_id, "sender": event.sender,
        "sender_name": event.sender_name, "text": event.text, "at": event.occurred_at.isoformat(),
        "request_contact_fields": list(event.request_contact_fields),
    }


class OutboundDelivery:
    def __init__(
        self, *, chatbots: ChatbotTable, records: DeliveryRecords, statuses: EventPublisher,
        telegram: TelegramClient, whatsapp: WhatsAppClient, window: WhatsAppWindowStore, outbox: WebOutbox,
        attempts: int, backoff_s: float, max_backoff_s: float, sleep: Sleep = asyncio.sleep,
        lease_s: float = 120.0,
    ) -> None:
        self.chatbots, self.records, self.statuses = chatbots, records, statuses
        self.telegram, self.whatsapp, self.window, self.outbox = telegram, whatsapp, window, outbox
        self.attempts, self.backoff_s, self.max_backoff_s = max(1, attempts), backoff_s, max_backoff_s
        self.sleep = sleep
        # A claim is held this long past its last renewal (at the claim, before every attempt
        # and every backoff): longer than one send attempt can take. A claim left unrenewed
        # past it belongs to an instance that died mid-delivery (see sweep).
        self.lease_s = lease_s
        # Tells this instance's own bus retry (republish a missing status now) from another
        # instance that is still busy with the same message (leave it be).
        self.owner = new_id()

    async def deliver(self, event: OutboundMessage) -> None:
        if event.channel == "web":
            await self._deliver_web(event)
            return
        existing = await self.records.claim(event.message_id, event.chatbot_id, event.conversation_id, event.channel,
                                            self.owner, self.lease_s, event.model_dump(mode="json"))
        if existing is not None:
            await self._settle_duplicate(event, existing)
            return
        await self._deliver_claimed(event)

    async def _deliver_web(self, event: OutboundMessage) -> None:
        """Stored in the widget's history, then 'sent' on the bus, then shown on the open
        sockets: each step is harmless to repeat (history, sockets and widget dedupe by
        message id; the status event's id is derived from the message's), and an event whose
        handler did not finish is redelivered by the bus. So a web reply needs no claim and
        no delivery record: no Mongo write at all (three, batched, with them)."""
        try:
            await self._send_with_retries(event)
            state, error = "sent", None
        except PermanentDeliveryError as exc:
            state, error = "failed", str(exc)
            log.warning("message %s not delivered on web: %s", event.message_id, error)
        delivered("web", state)
        await self.statuses.publish(status_event(event.chatbot_id, event.conversation_id, event.message_id, state,
                                                 event.message_id if state == "sent" else None, error,
                                                 permanent=state == "failed"))
        if state == "sent":
            # After 'sent' is on the bus, so the socket's 'delivered' comes after it.
            await self.outbox.notify(event.chatbot_id, event.visitor.external_id, web_entry(event))

    async def _deliver_claimed(self, event: OutboundMessage) -> None:
        try:
            channel_message_id = await self._send_with_retries(event)
            state, error = "sent", None
        except ClaimLost:
            log.warning("message %s was taken over by another instance; not sent from here", event.message_id)
            return
        except PermanentDeliveryError as exc:
            state, channel_message_id, error = "failed", None, str(exc)
            log.warning("message %s not delivered on %s: %s", event.message_id, event.channel, error)
        delivered(event.channel, state)
        if not await self.records.finish(event.message_id, state, channel_message_id, error):
            # This instance stalled past its lease and a sweep reported the message as of
            # unknown outcome; the real outcome is published too (the queue keeps 'failed'
            # unless the message got further than 'sent').
            log.warning("message %s finished (%s) after its claim had expired", event.message_id, state)
        if state == "sent" and event.channel == "whatsapp" and channel_message_id:
            await self.records.remember_wamid(channel_message_id, event.message_id, event.chatbot_id, event.conversation_id)
        await self._publish_status(event.chatbot_id, event.conversation_id, event.message_id, state, channel_message_id, error)
        if state == "sent" and event.channel == "web":
            # After 'sent' is on the bus, so the socket's 'delivered' comes after it.
            await self.outbox.notify(event.chatbot_id, event.visitor.external_id, web_entry(event))

    async def _settle_duplicate(self, event: OutboundMessage, record: dict) -> None:
        """Another attempt claimed the message. If it finished but its status was not
        published — this instance's publish failed and the bus retries, or another instance
        crashed long ago — publish it now. A recent one of another instance is probably still
        publishing: leave it be (the sweep publishes it if that instance died). A claim still
        'sending' is left to its owner until its lease expires, then sent again or reported
        as of unknown outcome (`_settle_expired`). Status events have stable ids, so a rare
        double is applied once downstream."""
        finished_at = record.get("finished_at")
        stale = finished_at is not None and datetime.now(UTC) - finished_at > STATUS_REPUBLISH_AFTER
        ours = record.get("owner") == self.owner
        if record.get("state") == "sending":
            # Another attempt holds the claim: leave it, unless its owner died (lease expired).
            await self._settle_expired(record, datetime.now(UTC), event)
            return
        if record.get("state") in ("sent", "failed") and not record.get("status_published") and (ours or stale):
            await self._publish_status(event.chatbot_id, event.conversation_id, event.message_id, record["state"],
                                       record.get("channel_message_id"), record.get("error"))
            if record["state"] == "sent" and event.channel == "web":
                await self.outbox.notify(event.chatbot_id, event.visitor.external_id, web_entry(event))
        else:
            log.info("message %s already handled (%s); not sent again", event.message_id, record.get("state"))

    async def sweep(self, now: datetime | None = None) -> int:
        """Settle what a crashed instance left behind: a claim whose lease expired (the crash
        came between claiming and recording the outcome) is sent again where that is safe
        (see `_settle_expired`), otherwise reported 'failed' (permanent, outcome unknown); a
        recorded outcome whose status was never published is published. Every instance
        sweeps; taking over and settling are atomic and status events have stable ids.
        Returns how many records were settled, sent again or republished."""
        now = now or datetime.now(UTC)
        done = 0
        for record in await self.records.expired_claims(now):
            done += await self._settle_expired(record, now)
        for record in await self.records.unpublished(now - STATUS_REPUBLISH_AFTER):
            await self._publish_status(record["chatbot_id"], record.get("conversation_id"), record["_id"],
                                       record["state"], record.get("channel_message_id"), record.get("error"))
            done += 1
        return done

    async def _settle_expired(self, record: dict, now: datetime, event: OutboundMessage | None = None) -> bool:
        """A claim whose sender died: sent again when a repeat cannot reach the visitor twice
        (web, or no platform call started), else reported failed with the outcome unknown.
        `event` is the redelivered message; the sweep uses the copy kept in the claim."""
        lease_until = record.get("lease_until")
        if lease_until is None or lease_until >= now:
            log.info("message %s is being sent by another attempt; not sent again", record["_id"])
            return False
        message = event or _kept_message(record)
        if message is not None and (record.get("channel") == "web" or record.get("platform_called") is False):
            if not await self.records.take_over(record["_id"], now, self.owner, self.lease_s):
                return False  # taken over or settled meanwhile
            log.warning("message %s: its sender stopped mid-delivery; sending it again (%s)", record["_id"],
                        "web: a repeat is harmless" if message.channel == "web" else "the platform was not called")
            await self._deliver_claimed(message)
            return True
        if not await self.records.settle_expired(record["_id"], now, UNKNOWN_OUTCOME_ERROR):
            return False  # settled meanwhile, by its owner or another sweep
        log.warning("message %s: its sender stopped mid-delivery; reported as failed (outcome unknown)", record["_id"])
        delivered(record.get("channel") or "unknown", "unknown")
        await self._publish_status(record["chatbot_id"], record.get("conversation_id"), record["_id"], "failed",
                                   None, UNKNOWN_OUTCOME_ERROR)
        return True

    async def _publish_status(self, chatbot_id: str, conversation_id: str | None, message_id: str, state: str,
                              channel_message_id: str | None, error: str | None) -> None:
        await self.statuses.publish(status_event(chatbot_id, conversation_id, message_id, state,
                                                 channel_message_id, error, permanent=state == "failed"))
        await self.records.status_published(message_id)

    async def _send_with_retries(self, event: OutboundMessage) -> str:
        for attempt in range(1, self.attempts + 1):
            try:
                return await self._send(event)
            except (PermanentDeliveryError, ClaimLost):
                raise
            except Exception as exc:  # noqa: BLE001 - anything else (a Redis hiccup reading the window...) is transient
                # Raised out of deliver(), an unexpected error would leave the claim in 'sending'
                # for good: the bus's retry finds the claim and neither sends nor reports.
                err = exc if isinstance(exc, TransientDeliveryError) else TransientDeliveryError(
                    f"{event.channel}: {type(exc).__name__}")
                if attempt == self.attempts:
                    raise PermanentDeliveryError(f"{err} — gave up after {self.attempts} attempts.") from None
                delay = retry_delay(attempt, self.backoff_s, self.max_backoff_s, err.retry_after)
                log.warning("message %s: transient failure (attempt %d/%d), retrying in %.1fs: %s",
                            event.message_id, attempt, self.attempts, delay, err)
                claimed = event.channel != "web"
                if claimed:  # the wait and the next attempt
                    await self.records.renew(event.message_id, delay + self.lease_s)
                try:
                    await self.sleep(delay)
                except asyncio.CancelledError:
                    # Shutting down between attempts: nothing is on its way to the platform,
                    # so give the claim back and the redelivery after the restart sends it.
                    if claimed:
                        await self.records.release(event.message_id, self.owner)
                    raise
        raise AssertionError("unreachable")

    async def _send(self, event: OutboundMessage) -> str:
        if event.channel == "web":
            try:
                await self.outbox.store(event.chatbot_id, event.visitor.external_id, web_entry(event))
            except Exception as exc:  # noqa: BLE001 - Redis hiccup: retried
                raise TransientDeliveryError(f"Web widget outbox unavailable ({type(exc).__name__})") from None
            return event.message_id
        chatbot = self.chatbots.get(event.chatbot_id)
        if chatbot is None:
            # At start-up the settings table may still be loading: worth waiting for.
            raise TransientDeliveryError(f"Unknown chatbot {event.chatbot_id!r}.")
        creds = chatbot.channels
        if event.channel == "telegram":
            if not creds.telegram_bot_token:
                raise PermanentDeliveryError("Telegram is not connected for this chatbot.")
            await self._platform_call_starts(event)
            try:
                return await self.telegram.send_text(creds.telegram_bot_token, event.visitor.external_id, event.text)
            except (TransientDeliveryError, PermanentDeliveryError):
                raise
            except Exception as exc:  # noqa: BLE001
                raise TransientDeliveryError(redact(f"Telegram: {type(exc).__name__}", [creds.telegram_bot_token])) from None
        # WhatsApp
        if not (creds.whatsapp_connected and creds.whatsapp_access_token and creds.whatsapp_phone_number_id):
            raise PermanentDeliveryError("WhatsApp is not connected for this chatbot.")
        # The window is tracked per conversation, keyed as the inbound side keys it.
        conversation_id = conversation_id_for(event.chatbot_id, "whatsapp", event.visitor.external_id)
        last = await self.window.last_inbound(event.chatbot_id, conversation_id)
        if not whatsapp_window(last, datetime.now(UTC)).open:
            raise PermanentDeliveryError(OUTSIDE_WINDOW_ERROR)
        await self._platform_call_starts(event)
        return await self.whatsapp.send_text(creds.whatsapp_phone_number_id, creds.whatsapp_access_token,
                                             event.visitor.external_id, event.text)

    async def _platform_call_starts(self, event: OutboundMessage) -> None:
        """Recorded before the call: from here on a dead sender's message may have reached the
        visitor, so it is never sent again. A Mongo error raises (transient: not called)."""
        if not await self.records.platform_call_started(event.message_id, self.owner, self.lease_s):
            raise ClaimLost(event.message_id)


def _kept_message(record: dict) -> OutboundMessage | None:
    """The message a claim keeps while 'sending'; None for one without (or unreadable)."""
    try:
        return OutboundMessage.model_validate(record["message"]) if record.get("message") else None
    except ValidationError:
        log.warning("message %s: the copy kept with its claim is unreadable", record.get("_id"))
        return None
