"""The bus itself: one FastStream broker per service, its lifecycle, its writes (events and
DLQ records) and its readiness; consuming and recovery are its collaborators'."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaBroker
from pydantic import BaseModel, TypeAdapter

from shared.bus.consumers import Consumers
from shared.bus.doorbell import Doorbell
from shared.bus.health import CONSUMER_FAULT_AFTER_S, ConsumerHealth, _AiokafkaFaults
from shared.bus.publisher import EventPublisher
from shared.bus.recovery import WATCH_INTERVAL_S, BrokerLost, Recovery
from shared.bus.retry import Handler, ProcessedEventsProto
from shared.settings import ServiceSettings
from shared.topics import Topic


class Bus:
    """A service's connection to Kafka (see the package's delivery rules)."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        client_id: str,
        processed: ProcessedEventsProto | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.processed = processed
        # Idle consumers sleep and every producer rings them (shared/bus/doorbell.py); None:
        # fetch waits only.
        self.doorbell = Doorbell(settings.redis_url) if settings.kafka_doorbell else None
        # Every topic this service reads or writes, by prefixed name: readiness checks they
        # exist, recovery recreates them (and their DLQs) with these partition counts.
        self.topics: dict[str, Topic] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self.fault_after_s = CONSUMER_FAULT_AFTER_S
        self.watch_interval_s = WATCH_INTERVAL_S
        # Run after a recovery from a broker that lost its topics (e.g. republish a table).
        self.recovered_hooks: list[Callable[[], Awaitable[Any]]] = []
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=client_id,
            enable_idempotence=settings.kafka_enable_idempotence,
            acks="all",
            request_timeout_ms=15000,
            linger_ms=0,
            graceful_timeout=settings.kafka_graceful_timeout_s,
            # Handlers take the raw message (shared/bus/consumers.py) and validate it
            # themselves: no dependency injection, whose context lookup ran in a worker
            # thread for every message (a thread hand-off each: 8 % of the queue's CPU).
            apply_types=False,
            # FastStream's per-message "Received"/"Processed" lines (filtered out at WARNING,
            # yet built for every message: 3 % of the queue's CPU); handler failures are
            # logged by shared/bus/retry.py, with the event's ids.
            logger=None,
        )
        self._consuming = Consumers(self)
        self._recovery = Recovery(self, self._consuming)
        self._faults = _AiokafkaFaults(self._consuming)

    @property
    def topic_names(self) -> set[str]:
        return set(self.topics)

    @property
    def consumers(self) -> list[ConsumerHealth]:
        return self._consuming.health

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the broker's producer and consumers, the health reports and the watch."""
        logging.getLogger("aiokafka").addHandler(self._faults)
        try:
            await self.broker.start()
        except BaseException:
            logging.getLogger("aiokafka").removeHandler(self._faults)
            raise
        if self.doorbell is not None:
            await self.doorbell.start()
        self._recovery.start()

    async def stop(self, graceful_timeout: float) -> None:
        """Stop watching, let handlers finish (up to `graceful_timeout`), stop the broker."""
        await self._recovery.stop()
        await self.drain(graceful_timeout)
        await self.broker.stop()
        await self.close()

    async def close(self) -> None:
        logging.getLogger("aiokafka").removeHandler(self._faults)
        if self.doorbell is not None:
            await self.doorbell.stop()
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def drain(self, timeout: float) -> None:
        """Before the broker stops: let concurrent handlers finish (up to `timeout`), cancel
        the rest uncommitted so they are redelivered."""
        await self._consuming.drain(timeout)

    # ------------------------------------------------------------------ writing
    def publisher(self, topic: Topic, schema: Any | None = None) -> EventPublisher:
        self.topics[self.settings.kafka_topic_prefix + topic.name] = topic
        return EventPublisher(self.broker, topic, self.settings.kafka_topic_prefix, schema, bus=self)

    def check_writable(self) -> None:
        if self._recovery.writes_blocked:
            raise BrokerLost("the broker lost its topics; writes wait until they are recreated")

    def acked(self, written: Any) -> None:
        """Count a write the broker acknowledged (for the loss report) and ring its topic's
        sleeping consumers."""
        self._recovery.acked(written)
        topic = getattr(written, "topic", None)
        if self.doorbell is not None and topic:
            self.doorbell.ring(topic)

    async def dead_letter(
        self,
        topic: Topic,
        *,
        consumer: str,
        raw: bytes,
        key: bytes | None,
        error_kind: str,
        error: str,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        try:
            payload: Any = raw.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(raw).decode(), "base64"
        record = {
            "source_topic": topic.name,
            "partition": partition,
            "offset": offset,
            "consumer": consumer,
            "error_kind": error_kind,
            "error": error[:4000],
            "payload": payload,
            "payload_encoding": encoding,
            "failed_at": datetime.now(UTC).isoformat(),
        }
        self.check_writable()
        await self.broker.publish(json.dumps(record).encode(), topic=self.settings.kafka_topic_prefix + topic.dlq, key=key)

    # ------------------------------------------------------------------ consuming
    def consume(self, topic: Topic, adapter: TypeAdapter[Any] | type[BaseModel], handler: Handler,
                **options: Any) -> None:
        """Register `handler(event)` on `topic`: `consume_all` with one route."""
        self.consume_all([(topic, adapter, handler)], **options)

    def consume_all(self, routes: Sequence[tuple[Topic, TypeAdapter[Any] | type[BaseModel], Handler]],
                    **options: Any) -> None:
        """One consumer for several topics, each with its schema and handler; the options
        (group_id, concurrency, …) are `Consumers.add`'s."""
        self._consuming.add(routes, **options)

    # ------------------------------------------------------------------ health and recovery
    async def admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                                              request_timeout_ms=5000)
            await self._admin.start()
        return self._admin

    async def missing_topics(self) -> list[str]:
        """The topics this service uses that the broker does not have (e.g. a broker that
        restarted without its memory): its messages could not be written or read."""
        existing = set(await (await self.admin_client()).list_topics())
        return sorted(self.topic_names - existing)

    def consumer_problems(self) -> list[str]:
        """Why this service's consumers cannot do their work, if they cannot: a commit or
        fetches failing, a handler stuck on infrastructure (each for `fault_after_s`), or a
        recovery under way. Empty when they can."""
        now = time.monotonic()
        recovering = self._recovery.problem(now)
        return ([recovering] if recovering else []) + self._consuming.problems(now, self.fault_after_s)

    async def check_broker(self) -> None:
        """Recover if the broker lost this service's topics (see `Recovery.check`)."""
        await self._recovery.check()
