"""The keyed dispatcher's commits: never past a message still in flight, and under load one
commit in flight at a time for all partitions, each at its highest watermark by then (not one
per message, nor one per partition), at most one per commit interval."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import TopicPartition

from shared.bus.dispatch import KeyedDispatcher


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes


@dataclass
class _Msg:
    raw_message: _Record
    consumer: Any = None


async def test_commits_coalesce_while_one_is_in_flight_and_never_pass_an_unfinished_message():
    commits: list[int] = []
    gate = asyncio.Event()

    async def commit(generation: int, offsets: dict[TopicPartition, int], do) -> None:  # noqa: ANN001
        commits.append(offsets[TopicPartition("t", 0)])
        if len(commits) == 1:
            await gate.wait()  # the first commit is slow: everything else finishes meanwhile

    slow = asyncio.Event()

    async def process(msg: _Msg) -> None:
        if msg.raw_message.offset == 7:
            await slow.wait()

    dispatcher = KeyedDispatcher(32, "test", commit)
    await dispatcher.submit(_Msg(_Record("t", 0, 0, b"k0")), process, 0)
    for _ in range(50):
        await asyncio.sleep(0)
    assert commits == [1]  # offset 0 done: its commit goes at once, and is slow
    for offset in range(1, 10):
        await dispatcher.submit(_Msg(_Record("t", 0, offset, f"k{offset}".encode())), process, 0)
    for _ in range(50):
        await asyncio.sleep(0)
    assert commits == [1]  # 1..6, 8, 9 finish meanwhile
    gate.set()
    for _ in range(50):
        await asyncio.sleep(0)
    assert commits == [1, 7]  # one commit for all of them, stopping before offset 7 (in flight)
    slow.set()
    await dispatcher.drain(5)
    assert commits == [1, 7, 10]


async def test_one_commit_carries_every_partition_that_finished_while_one_was_in_flight():
    commits: list[dict[TopicPartition, int]] = []
    gate = asyncio.Event()

    async def commit(generation: int, offsets: dict[TopicPartition, int], do) -> None:  # noqa: ANN001
        commits.append(dict(offsets))
        if len(commits) == 1:
            await gate.wait()

    async def process(msg: _Msg) -> None:
        return None

    dispatcher = KeyedDispatcher(32, "test", commit)
    await dispatcher.submit(_Msg(_Record("t", 0, 0, b"k0-0")), process, 0)
    for _ in range(50):
        await asyncio.sleep(0)
    for partition in range(4):
        for offset in range(3):
            if (partition, offset) != (0, 0):
                await dispatcher.submit(_Msg(_Record("t", partition, offset, f"k{partition}-{offset}".encode())),
                                        process, 0)
    for _ in range(50):
        await asyncio.sleep(0)
    assert commits == [{TopicPartition("t", 0): 1}]  # the first finished message's commit is in flight
    gate.set()
    await dispatcher.drain(5)
    for _ in range(50):
        await asyncio.sleep(0)
    # Everything else in one commit: partition 0 to its end, and partitions 1-3 with it.
    assert commits[1:] == [{TopicPartition("t", p): 3 for p in range(4)}]


async def test_under_load_commits_go_out_at_most_once_per_interval_and_at_once_after_a_quiet_spell():
    sent: list[tuple[float, int]] = []

    async def commit(generation: int, offsets: dict[TopicPartition, int], do) -> None:  # noqa: ANN001
        sent.append((time.monotonic(), offsets[TopicPartition("t", 0)]))

    async def process(msg: _Msg) -> None:
        await asyncio.sleep(0.001)

    dispatcher = KeyedDispatcher(32, "test", commit, commit_interval_s=0.1)
    started = time.monotonic()
    for offset in range(200):  # ~2 ms apart for ~0.4 s: one message after another finishing
        await dispatcher.submit(_Msg(_Record("t", 0, offset, f"k{offset}".encode())), process, 0)
        await asyncio.sleep(0.002)
    for _ in range(100):
        if sent and sent[-1][1] == 200:
            break
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started
    assert sent[0][0] - started < 0.05  # the first goes at once
    gaps = [b[0] - a[0] for a, b in zip(sent, sent[1:])]
    assert all(gap >= 0.095 for gap in gaps), gaps
    assert len(sent) <= elapsed / 0.1 + 2  # not one per message (200 finished)
    assert sent[-1][1] == 200  # every finished offset is committed in the end

    await asyncio.sleep(0.2)  # quiet: the next commit goes at once
    before = time.monotonic()
    await dispatcher.submit(_Msg(_Record("t", 0, 200, b"k200")), process, 0)
    for _ in range(100):
        if sent[-1][1] == 201:
            break
        await asyncio.sleep(0.005)
    assert sent[-1][1] == 201 and sent[-1][0] - before < 0.05
    await dispatcher.drain(5)


async def test_the_next_message_of_a_key_never_waits_for_a_commit():
    """Commits run beside the handlers: with a long interval pending, the key's next message
    is handled at once (it waited for the commit's pause before: 100 ms on every p99)."""
    handled: list[int] = []

    async def commit(generation: int, offsets: dict[TopicPartition, int], do) -> None:  # noqa: ANN001
        return None

    async def process(msg: _Msg) -> None:
        handled.append(msg.raw_message.offset)

    dispatcher = KeyedDispatcher(32, "test", commit, commit_interval_s=30.0)
    await dispatcher.submit(_Msg(_Record("t", 0, 0, b"one")), process, 0)  # its commit goes at once
    await dispatcher.submit(_Msg(_Record("t", 0, 1, b"one")), process, 0)  # its commit waits 30 s
    for _ in range(50):
        await asyncio.sleep(0)
    await dispatcher.submit(_Msg(_Record("t", 0, 2, b"one")), process, 0)
    for _ in range(50):
        await asyncio.sleep(0)
    assert handled == [0, 1, 2]
    started = time.monotonic()
    await dispatcher.drain(5)  # commits what finished at once, not after the interval
    assert time.monotonic() - started < 1
