"""What readiness and a loss report know of this service's consumers: per consumer its
commits, handled offsets and waits on infrastructure, and the faults aiokafka reports only in
its log."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka.structs import TopicPartition

if TYPE_CHECKING:
    from shared.bus.consumers import Consumers

# A consumer that cannot commit, whose fetches keep failing, or whose handler has waited on
# infrastructure for this long is not ready (a blip is not worth an alarm; a stuck one is).
CONSUMER_FAULT_AFTER_S = 15.0
# aiokafka retries a failed fetch every ~0.1 s: a pause this long ends a run of failures.
_FAULT_QUIET_S = 3.0


def partition_name(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


@dataclass
class ConsumerHealth:
    """What readiness and a loss report need to know about one consumer."""

    name: str
    group: str | None
    subscriber: Any = None
    # Per partition of the current log: the highest offset handled, the next offset committed,
    # the highest log end seen (a log end below what was handled means the log was lost).
    handled: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    # Commits under way (aiokafka retries e.g. UnknownTopicOrPartition for ever): since when,
    # of what; and the last error aiokafka reported for this group's commits.
    commits: dict[int, tuple[float, str]] = field(default_factory=dict)
    commit_error: str = ""
    # What aiokafka said when a commit found its topic gone (the broker lost it).
    topic_gone: str = ""
    # Handlers waiting for infrastructure: since when, and why.
    waits: dict[int, tuple[float, str]] = field(default_factory=dict)
    # The consumer's fetch wait, short while records come (shared/bus/pacing.py).
    pacing: Any = None

    @property
    def consumer(self) -> Any:
        """The running aiokafka consumer (None before the subscriber started)."""
        return getattr(self.subscriber, "consumer", None)

    def problem(self, now: float, after_s: float) -> str | None:
        if self.topic_gone:
            return f"consumer {self.name}: offset commits fail, the broker lost the topic ({self.topic_gone})"
        if self.commits:
            since, where = min(self.commits.values())
            if now - since >= after_s:
                return (f"consumer {self.name}: offset commit of {where} failing for {now - since:.0f}s "
                        f"({self.commit_error or 'no answer'})")
        if self.waits:
            since, error = min(self.waits.values())
            if now - since >= after_s:
                return f"consumer {self.name}: a handler has waited {now - since:.0f}s for infrastructure ({error})"
        return None

    def regressions(self) -> list[str]:
        """Assigned partitions whose log now ends at or below an offset this consumer handled:
        the log was lost (and maybe recreated by another process). Records the log ends seen."""
        consumer = self.consumer
        if consumer is None:
            return []
        found = []
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            last = self.handled.get(tp)
            if last is not None and end <= last:
                found.append(f"{partition_name(tp)} ends at {end}, {self.name} had handled offset {last}")
            else:
                self.ends[tp] = max(self.ends.get(tp, 0), end)
        return found

    def share(self) -> dict[str, Any]:
        """This process's share of its group: the partitions assigned to it now, and per
        partition the highest offset it handled (with several replicas, each shows its own)."""
        consumer = self.consumer
        assigned = sorted(consumer.assignment()) if consumer is not None else []
        return {"assigned": [partition_name(tp) for tp in assigned],
                "handled": {partition_name(tp): offset for tp, offset in sorted(self.handled.items())}}

    def forget_log(self) -> None:
        self.handled.clear()
        self.committed.clear()
        self.ends.clear()
        self.commit_error = self.topic_gone = ""


@dataclass
class FaultRun:
    """A fault aiokafka reports over and over (each failed fetch): since when, and its words."""

    first: float = 0.0
    last: float = float("-inf")
    text: str = ""

    def seen(self, text: str, now: float) -> None:
        if now - self.last > _FAULT_QUIET_S:
            self.first = now
        self.last, self.text = now, text

    def problem(self, now: float, after_s: float) -> str | None:
        if now - self.last <= _FAULT_QUIET_S and self.last - self.first >= after_s:
            return f"fetches failing for {self.last - self.first:.0f}s ({self.text})"
        return None


class _AiokafkaFaults(logging.Handler):
    """aiokafka retries failing offset commits and fetches inside its own loops and reports
    them only in its log ('OffsetCommit failed for group g on partition … : UnknownTopicOr
    PartitionError', 'Failed fetch messages from 1: …'): this hands them to the consumers."""

    COMMIT = "OffsetCommit failed for group"
    FETCH = "Failed fetch messages from"

    def __init__(self, consumers: Consumers) -> None:
        super().__init__(logging.WARNING)
        self.consumers = consumers

    def emit(self, record: logging.LogRecord) -> None:
        text = record.msg if isinstance(record.msg, str) else ""
        if text.startswith(self.COMMIT) and record.args:
            group = record.args[0] if isinstance(record.args, tuple) else None
            message = record.getMessage()
            for health in self.consumers.health:
                if health.group == group:
                    health.commit_error = message
                    if "UnknownTopicOrPartition" in message:
                        health.topic_gone = message
                        self.consumers.stop_committing()
        elif text.startswith(self.FETCH):
            self.consumers.fetch_faults.seen(record.getMessage(), time.monotonic())
