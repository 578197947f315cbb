"""Publishing what visitors send, exactly once per platform message id, without losing any.

A sender is acknowledged only after the broker acknowledged the write (acks=all), and a write
is waited for at most `timeout_s`. Otherwise the caller answers 503, so the platform (or the
widget) retries.

The platform id is claimed before publishing and marked done only after the broker's ack; a
failed write releases the claim, so the retry is published. A write still unanswered at the
timeout is not abandoned (the producer may yet deliver it): its claim stays pending until the
producer settles it — done if it landed, so the retry is answered as a duplicate and the
message is on the bus once; released if it failed, so the retry publishes it. A retry that
comes while the claim is pending gets 503 too (InFlight)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Literal

from services.channels.store import InboundDedupe
from shared.bus import EventPublisher
from shared.events import Envelope

log = logging.getLogger("handoff.channels.inbound")


class NotAccepted(Exception):
    """The message is not (yet) durably on the bus: answer 503 so the sender retries."""


class PublishFailed(NotAccepted):
    """The write failed, or the broker did not acknowledge it in time."""


class InFlight(NotAccepted):
    """The same platform message is being published right now: retry later."""


class InboundPublisher:
    def __init__(self, dedupe: InboundDedupe, publisher: EventPublisher, timeout_s: float) -> None:
        self.dedupe = dedupe
        self.publisher = publisher
        self.timeout_s = timeout_s
        # Writes that outlived their request: referenced until they settle.
        self._writes: set[asyncio.Task[None]] = set()

    async def publish_once(self, dedupe_key: str, event: Envelope) -> Literal["published", "duplicate"]:
        try:
            claim = await self.dedupe.claim(dedupe_key)
        except Exception as exc:
            log.error("could not claim inbound %s: %r", dedupe_key, type(exc).__name__)
            raise NotAccepted(dedupe_key) from exc
        if claim == "done":
            log.info("duplicate inbound %s ignored", dedupe_key)
            return "duplicate"
        if claim == "pending":
            raise InFlight(dedupe_key)
        await self._within_timeout(self._publish_and_settle(dedupe_key, event), dedupe_key)
        return "published"

    async def publish(self, event: Envelope, publisher: EventPublisher | None = None) -> None:
        """Events without a platform id (contact submissions, WhatsApp statuses): a repeat is
        harmless downstream, so a timed-out write needs no claim to settle."""
        await self._within_timeout(self._publish((publisher or self.publisher), event), event.event_id)

    async def _within_timeout(self, write: Awaitable[None], what: str) -> None:
        task = asyncio.ensure_future(write)
        self._writes.add(task)
        task.add_done_callback(self._forget)
        try:
            # shield: neither the timeout nor a client that hangs up cancels the write.
            await asyncio.wait_for(asyncio.shield(task), self.timeout_s)
        except TimeoutError:
            log.error("inbound %s: no acknowledgement from the broker within %.1fs; sender asked to retry",
                      what, self.timeout_s)
            raise PublishFailed(what) from None

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            task.exception()  # already logged where it was raised; retrieved so asyncio does not warn

    async def _publish(self, publisher: EventPublisher, event: Envelope) -> None:
        try:
            await publisher.publish(event)
        except Exception as exc:
            log.error("could not publish %s: %r", event.event_id, type(exc).__name__)
            raise PublishFailed(event.event_id) from exc

    async def _publish_and_settle(self, dedupe_key: str, event: Envelope) -> None:
        try:
            await self._publish(self.publisher, event)
        except PublishFailed:
            try:
                await self.dedupe.release(dedupe_key)
            except Exception:  # noqa: BLE001 - the pending claim expires by itself (InboundDedupe.PENDING_TTL_S)
                log.exception("could not release inbound %s", dedupe_key)
            raise
        try:
            await self.dedupe.done(dedupe_key)
        except Exception:  # noqa: BLE001 - it is on the bus: acknowledge it; the pending claim expires
            log.exception("inbound %s published but not marked done", dedupe_key)
