"""Publishing what visitors send, exactly once per platform message id, without losing any.

Claim the platform id, publish, then mark it done. If publishing fails the claim is released
and the caller answers 5xx, so the platform (or the widget) retries and nothing is lost. A
duplicate that arrives while the first copy is still being published also gets 5xx: it is
retried later and then seen as done."""

from __future__ import annotations

import logging
from typing import Literal

from services.channels.store import InboundDedupe
from shared.bus import EventPublisher
from shared.events import Envelope

log = logging.getLogger("handoff.channels.inbound")


class PublishFailed(Exception):
    """The event could not be put on the bus: answer 5xx so the sender retries."""


class InFlight(Exception):
    """The same platform message is being published right now: answer 5xx, retry later."""


class InboundPublisher:
    def __init__(self, dedupe: InboundDedupe, publisher: EventPublisher) -> None:
        self.dedupe = dedupe
        self.publisher = publisher

    async def publish_once(self, dedupe_key: str, event: Envelope) -> Literal["published", "duplicate"]:
        claim = await self.dedupe.claim(dedupe_key)
        if claim == "done":
            log.info("duplicate inbound %s ignored", dedupe_key)
            return "duplicate"
        if claim == "pending":
            raise InFlight(dedupe_key)
        try:
            await self.publisher.publish(event)
        except Exception as exc:
            log.error("could not publish inbound %s: %r", dedupe_key, type(exc).__name__)
            await self.dedupe.release(dedupe_key)
            raise PublishFailed(dedupe_key) from exc
        await self.dedupe.done(dedupe_key)
        return "published"

    async def publish(self, event: Envelope) -> None:
        """Events without a platform id (contact submissions)."""
        try:
            await self.publisher.publish(event)
        except Exception as exc:
            raise PublishFailed(event.event_id) from exc
