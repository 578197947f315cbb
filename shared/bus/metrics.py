"""The bus's metrics: per topic and consumer group, records handled, handler attempts failed,
records dead-lettered and the handling time; and every consumer's lag, computed at scrape
time from what the consumers already know (no broker request per scrape).

Label `topic` is the topic's name without KAFKA_TOPIC_PREFIX; `group` the consumer group,
or "none" for a consumer without one (every instance reads everything: the dashboard
fan-out, the settings table)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from shared.bus.consumers import Consumers

NO_GROUP = "none"

HANDLED = Counter("handoff_bus_records_handled_total",
                  "Consumed records handled (or skipped as already applied).", ["topic", "group"])
FAILED = Counter("handoff_bus_handler_failures_total",
                 "Handler attempts that raised (each is retried; outages waited on are not counted).",
                 ["topic", "group"])
DEAD_LETTERED = Counter("handoff_bus_records_dead_lettered_total",
                        "Consumed records parked on <topic>.dlq: invalid, or the handler kept failing.",
                        ["topic", "group", "reason"])
HANDLE_SECONDS = Histogram(
    "handoff_bus_handle_duration_seconds",
    "Time from a record's turn to handle it until it was handled: validation, dedupe, the handler "
    "with its retries, the mark (not the wait behind the same key's earlier records).",
    ["topic", "group"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class TopicMetrics:
    """One topic of one consumer: its label children, made once (nothing per record but the
    increments and the observation)."""

    __slots__ = ("failed", "handle_seconds", "handled", "group", "topic")

    def __init__(self, topic: str, group: str | None) -> None:
        self.topic, self.group = topic, group or NO_GROUP
        self.handled = HANDLED.labels(self.topic, self.group)
        self.failed = FAILED.labels(self.topic, self.group)
        self.handle_seconds = HANDLE_SECONDS.labels(self.topic, self.group)

    def dead_lettered(self, reason: str) -> None:
        DEAD_LETTERED.labels(self.topic, self.group, reason).inc()


class ConsumerLag(Collector):
    """`handoff_bus_consumer_lag` per topic, partition and group of every consumer in this
    process: the partition's log end (aiokafka's highwater, from its last fetch answer) minus
    the offset this process committed there (a group), else (a consumer without a group, or
    nothing committed here yet) its position: the offset after the last record handed to the
    handlers."""

    def __init__(self) -> None:
        self._buses: weakref.WeakSet[Consumers] = weakref.WeakSet()

    def track(self, consumers: Consumers) -> None:
        self._buses.add(consumers)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("handoff_bus_consumer_lag",
                                   "Records in a partition not yet finished by its consumer: log end minus "
                                   "the offset committed (or read, without a group).",
                                   labels=["topic", "partition", "group"])
        lags: dict[tuple[str, str, str], int] = {}
        for consumers in list(self._buses):
            topics = consumers.bus.topics
            for health in consumers.health:
                for tp, lag in _lags(health):
                    topic = topics.get(tp.topic)
                    key = (topic.name if topic else tp.topic, str(tp.partition), health.group or NO_GROUP)
                    lags[key] = max(lag, lags.get(key, 0))  # one series even with two buses in a process
        for labels, lag in sorted(lags.items()):
            family.add_metric(list(labels), lag)
        yield family


def _lags(health: Any) -> Iterator[tuple[Any, int]]:
    consumer = health.consumer
    if consumer is None:
        return
    try:
        assigned = list(consumer.assignment())
    except Exception:  # noqa: BLE001 - a consumer stopping meanwhile has no lag to show
        return
    for tp in assigned:
        try:
            end = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - unassigned meanwhile (a rebalance)
            continue
        if end is None:
            continue  # no fetch answered yet
        done = health.committed.get(tp)
        if done is None:
            done = _position(consumer, tp)
        if done is not None:
            yield tp, max(0, end - done)


def _position(consumer: Any, tp: Any) -> int | None:
    """aiokafka's fetch position of `tp` without a broker request: `position()` is a
    coroutine (it may have to look the offset up), the state it reads is not public."""
    try:
        return consumer._subscription.subscription.assignment.state_value(tp).position  # noqa: SLF001
    except Exception:  # noqa: BLE001 - no position yet, or aiokafka changed: no series
        return None


CONSUMER_LAG = ConsumerLag()
REGISTRY.register(CONSUMER_LAG)
