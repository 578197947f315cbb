"""The Kafka bus every service uses: one FastStream broker per service, typed publishers,
and consumers with the project's delivery rules built in.

Delivery rules (the same in every service, so nobody re-implements them):
- commit after the handler succeeded (manual ack; never FastStream's ACK_FIRST);
- a body that does not validate against the topic's schema goes to `<topic>.dlq` with the
  error, and the consumer moves on;
- a handler that keeps failing is retried with backoff, then parked on the DLQ too, so one
  poison event never stalls a partition; if even the DLQ cannot be written the message is
  not committed and is tried again — nothing is lost;
- events already applied (by event id, per consumer group) are skipped; the check and the
  mark go through the same retries as the handler;
- infrastructure that is away (Mongo, Redis, the broker) is waited for, with capped backoff,
  never counted towards parking: the offset is not committed past the message meanwhile;
- every consumer's health (commits, fetches, handlers waiting on infrastructure) is kept for
  readiness, and a broker that lost this service's topics (the embedded broker keeps them in
  memory only) is noticed and recovered from: topics recreated, consumers restarted, the
  `recovered_hooks` run, and one loud report of what was lost.

Service code writes `async def on_x(event: SomeEvent) -> None` and registers it with
`bus.consume(...)`; it never sees offsets or raw bytes.

The package by job: `core` (the `Bus`: lifecycle, writes, readiness), `publisher`,
`consumers` (registering consumers, commits), `dispatch` (concurrent handling in key order),
`retry` (retry, outage waits, parking), `health`, `recovery` (a broker that lost the topics),
`admin` (creating topics), `tables` (`read_table`).
"""

from shared.bus.admin import ensure_topics
from shared.bus.core import Bus
from shared.bus.dispatch import Committer, KeyedDispatcher
from shared.bus.health import CONSUMER_FAULT_AFTER_S, ConsumerHealth, FaultRun
from shared.bus.publisher import EventPublisher
from shared.bus.recovery import LOSS_REPORT, WATCH_INTERVAL_S, BrokerLost, loss_report
from shared.bus.retry import (
    RETRY_CAP_S,
    Failed,
    Handler,
    ProcessedEventsProto,
    is_outage,
)
from shared.bus.tables import read_table

__all__ = [
    "CONSUMER_FAULT_AFTER_S",
    "LOSS_REPORT",
    "RETRY_CAP_S",
    "WATCH_INTERVAL_S",
    "BrokerLost",
    "Bus",
    "Committer",
    "ConsumerHealth",
    "EventPublisher",
    "Failed",
    "FaultRun",
    "Handler",
    "KeyedDispatcher",
    "ProcessedEventsProto",
    "ensure_topics",
    "is_outage",
    "loss_report",
    "read_table",
]
