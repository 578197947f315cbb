"""Writing events: a declared publisher per topic, keyed as the topic declares."""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from faststream.kafka import KafkaBroker

from shared.events import Envelope
from shared.topics import Topic

if TYPE_CHECKING:
    from shared.bus.core import Bus


class EventPublisher:
    """A declared publisher for one topic; keys every event as the topic declares."""

    def __init__(self, broker: KafkaBroker, topic: Topic, prefix: str = "", schema: Any | None = None,
                 bus: Bus | None = None) -> None:
        self.topic = topic
        self.topic_name = prefix + topic.name
        self._bus = bus
        self._publisher = broker.publisher(self.topic_name, title=f"{topic.name}:publish", schema=schema)

    async def publish(self, event: Envelope) -> None:
        """Written when this returns: the broker acknowledged it (acks=all)."""
        await (await self.enqueue(event))

    async def enqueue(self, event: Envelope) -> asyncio.Task[None]:
        """Hand the event to the producer and return at once with the broker's acknowledgement
        to await. Events enqueued one after another keep that order in their partition (the
        producer has one request per partition in flight), so a caller holds a lock only while
        it orders, not for the round trip; it still awaits the acknowledgement before it
        commits what led to the event."""
        if self._bus is not None:
            self._bus.check_writable()
        sent = await self._publisher.publish(
            event.model_dump_json().encode(),
            key=event.partition_key(self.topic.key),
            headers={"content-type": "application/json", "event-type": getattr(event, "type", "")},
            no_confirm=True,
        )
        return asyncio.ensure_future(self._acknowledged(sent))

    async def _acknowledged(self, sent: Any) -> None:
        # A real producer gives a future; FastStream's test broker has handled it already.
        written = await sent if inspect.isawaitable(sent) else sent
        if self._bus is not None:
            self._bus.acked(written)
