"""Recovering from a broker that lost this service's topics (the embedded broker keeps them
in memory only): noticing it, recreating the topics, restarting the consumers on the new
logs, the `recovered_hooks`, and one loud report of what was lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from shared.bus.admin import partition_counts, remake_topic
from shared.bus.health import ConsumerHealth, partition_name

if TYPE_CHECKING:
    from shared.bus.consumers import Consumers
    from shared.bus.core import Bus

log = logging.getLogger("handoff.bus")

# How often the bus looks at its consumers (fetch pacing, lost logs, failed commits) and, when
# anything looks off, asks the broker whether it still has this service's topics.
WATCH_INTERVAL_S = 2.0
# While all looks well the broker is asked only every this many rounds: each ask is broker
# work, and every service asking every 2 s was a fifth of an idle stack's broker time.
QUIET_ROUNDS_PER_CHECK = 5
# The first words of each ERROR report of a recovery (one per recovery; operators grep it).
LOSS_REPORT = "BROKER LOST DATA"


class BrokerLost(KafkaError):
    """Nothing is written while the bus recreates the topics the broker lost: the write would
    land in a log about to be wiped. Retriable, so handlers wait and HTTP callers answer 503."""

    retriable = True


class Recovery:
    """Watches the broker for the loss of this service's topics and recovers from it."""

    def __init__(self, bus: Bus, consumers: Consumers) -> None:
        self.bus, self.consumers = bus, consumers
        self.since: float | None = None
        self.writes_blocked = False
        self._had_all_topics = False
        # Acked writes of this process per partition (count, highest offset), for a loss report.
        self._acked: dict[TopicPartition, tuple[int, int]] = {}
        self._watch: asyncio.Task | None = None

    def start(self) -> None:
        self._watch = asyncio.create_task(self._watch_loop(), name=f"{self.bus.client_id} bus watch")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None

    def acked(self, written: Any) -> None:
        """Count a write the broker acknowledged (for the loss report)."""
        tp, offset = getattr(written, "topic_partition", None), getattr(written, "offset", None)
        if isinstance(tp, TopicPartition) and isinstance(offset, int):
            count, _ = self._acked.get(tp, (0, -1))
            self._acked[tp] = (count + 1, offset)

    def problem(self, now: float) -> str | None:
        if self.since is None:
            return None
        return (f"recovering for {now - self.since:.0f}s: the broker lost this "
                "service's topics; recreating them and restarting the consumers")

    def _wanted_topics(self) -> dict[str, int]:
        """Every topic this service uses and its DLQ, with its partition count."""
        prefix = self.bus.settings.kafka_topic_prefix
        wanted = {prefix + t.dlq: 1 for t in self.bus.topics.values()}
        return wanted | {name: t.partitions for name, t in self.bus.topics.items()}

    async def lost_topics(self) -> list[str]:
        """This service's topics the broker lost, once it had them all: missing, or with fewer
        partitions than declared (recreated by a client's metadata request; Kafka never
        shrinks a topic). Empty until the broker first had them all: topics never created
        are readiness's to report, not the bus's to invent."""
        counts = await partition_counts(await self.bus.admin_client())
        lost = sorted(name for name, n in self._wanted_topics().items() if counts.get(name, 0) < n)
        self._had_all_topics = self._had_all_topics or not lost
        return lost if self._had_all_topics else []

    def _looks_off(self, now: float) -> bool:
        """Anything the consumers saw that a lost topic would explain: a failed fetch in the
        last rounds, commits pending or failed, a handler waiting, a recovery unfinished."""
        recent_fault = now - self.consumers.fetch_faults.last <= 2 * self.bus.watch_interval_s
        return (self.since is not None or recent_fault
                or any(h.commits or h.topic_gone or h.waits for h in self.consumers.health))

    async def _watch_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(self.bus.watch_interval_s)
            now = time.monotonic()
            self.consumers.pace(now)
            rounds += 1
            ask_broker = rounds % QUIET_ROUNDS_PER_CHECK == 1 or self._looks_off(now)
            try:
                await self.check(ask_broker=ask_broker)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker away: readiness says so; next round
                recovering = self.since is not None
                log.log(logging.WARNING if recovering else logging.DEBUG, "bus watch%s: %r",
                        " (recovery unfinished; trying again)" if recovering else "", exc)

    async def check(self, *, ask_broker: bool = True) -> None:
        """Recover if the broker lost this service's topics, a consumed log shrank, or a commit
        found its topic gone (or a recovery did not finish: its consumers wait for one).
        `ask_broker=False`: look only at what the consumers saw, unless that shows a loss."""
        signs = [r for h in self.consumers.health for r in h.regressions()]
        signs += [f"commit failed: {h.topic_gone}" for h in self.consumers.health if h.topic_gone]
        lost = await self.lost_topics() if ask_broker or signs else []
        if lost or signs or self.since is not None:
            await self._recover(lost, signs)

    async def _recover(self, lost: list[str], signs: list[str]) -> None:
        """Recreate what the broker lost and start this service's consumers again on the new
        logs; then one ERROR report of what was lost, and the `recovered_hooks`."""
        started = time.monotonic()
        if self.since is None:
            log.warning("the broker lost topics %s%s; recovering", lost or "(recreated elsewhere)",
                        f" ({'; '.join(signs)})" if signs else "")
        self.since = started
        self.writes_blocked = True
        self.consumers.stop_committing()
        self.consumers.pause()
        report = loss_report(lost, signs, self.consumers.health, self._acked)
        try:
            remade = await self._remake(self._wanted_topics())
            await self._refresh_producer()
        finally:
            self.writes_blocked = False  # in-flight handlers may write their results (or retry)
        await self.consumers.restart()
        self.since = None
        self._acked.clear()
        log.error("%s (recovered in %.1fs; topics recreated here: %s)\n%s", LOSS_REPORT,
                  time.monotonic() - started, ", ".join(remade) or "none", report)
        for hook in self.bus.recovered_hooks:
            try:
                await hook()
            except Exception:  # noqa: BLE001 - one failed hook must not stop the others
                log.exception("recovered hook %s failed", getattr(hook, "__qualname__", hook))

    async def _remake(self, wanted: dict[str, int]) -> list[str]:
        admin = await self.bus.admin_client()
        counts = await partition_counts(admin)
        remade = []
        for name, partitions in wanted.items():
            if counts.get(name, 0) != partitions:
                topic = self.bus.topics.get(name)
                await remake_topic(admin, name, partitions, compacted=bool(topic and topic.compacted),
                                   replication=self.bus.settings.kafka_topic_replication)
                remade.append(name)
        return remade

    async def _refresh_producer(self) -> None:
        """The producer's cached metadata may still describe the lost topics."""
        broker = self.bus.broker
        producer = getattr(getattr(broker.config.broker_config.producer, "_producer", None), "producer", None)
        if producer is not None:
            await producer.client.force_metadata_update()


def loss_report(lost: list[str], signs: list[str], consumers: Sequence[ConsumerHealth],
                acked: dict[TopicPartition, tuple[int, int]]) -> str:
    """What is knowable of what a broker that lost its logs took with it, in this process's
    view: per consumed partition, the messages written but never handled here (log end seen
    minus the offset handled); per written topic, the writes acked here since the start or the
    last recovery (those not yet consumed elsewhere are gone)."""
    lines = [f"topics lost: {', '.join(lost) or 'none missing here (recreated by another process)'}"]
    if signs:
        lines.append(f"seen by this process's consumers: {'; '.join(signs)}")
    for health in consumers:
        lines += _consumer_losses(health)
    by_topic: dict[str, list[str]] = defaultdict(list)
    totals: dict[str, int] = defaultdict(int)
    for tp, (count, highest) in sorted(acked.items()):
        by_topic[tp.topic].append(f"[{tp.partition}] up to offset {highest}")
        totals[tp.topic] += count
    lines += [f"written by this process and acked: {topic}: {totals[topic]} messages ({', '.join(parts)})"
              for topic, parts in by_topic.items()]
    lines.append("whatever any client wrote between the broker's restart and this recovery is gone "
                 "too; the broker keeps no count of it")
    return "\n".join("  " + line for line in lines)


def _consumer_losses(health: ConsumerHealth) -> list[str]:
    """Per partition with a log: where it ended, what was handled and committed here, and how
    many messages after the last one handled were never handled (lost with the log)."""
    parts, total = [], 0
    for tp in sorted(set(health.ends) | set(health.handled)):
        end, last, committed = health.ends.get(tp, 0), health.handled.get(tp), health.committed.get(tp)
        if last is None and end == 0:
            continue  # an empty log, nothing to lose
        if last is None:
            parts.append(f"{partition_name(tp)} log end {end}, none handled here")
            continue
        never = max(0, end - last - 1)
        total += never
        done = f", committed through {committed - 1}" if committed else ""
        parts.append(f"{partition_name(tp)} log end {end}, handled through {last}{done}: "
                     f"{never} after offset {last} never handled")
    if not parts:
        return []
    return [f"consumer {health.name}: {total} messages never handled, lost; " + "; ".join(parts)]
