"""The keyed dispatcher's commits: never past a message still in flight, and under load one
commit in flight at a time for all partitions, each at its highest watermark by then (not one
per message, nor one per partition)."""

from __future__ import annotations

import asyncio
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
    for offset in range(10):
        await dispatcher.submit(_Msg(_Record("t", 0, offset, f"k{offset}".encode())), process, 0)
    for _ in range(50):
        await asyncio.sleep(0)
    assert commits == [1]  # offset 0 done: its commit is in flight, 1..6, 8, 9 finish meanwhile
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
    for partition in range(4):
        for offset in range(3):
            await dispatcher.submit(_Msg(_Record("t", partition, offset, f"k{partition}-{offset}".encode())), process, 0)
    for _ in range(50):
        await asyncio.sleep(0)
    assert commits == [{TopicPartition("t", 0): 1}]  # the first finished message's commit is in flight
    gate.set()
    await dispatcher.drain(5)
    for _ in range(50):
        await asyncio.sleep(0)
    # Everything else in one commit: partition 0 to its end, and partitions 1-3 with it.
    assert commits[1:] == [{TopicPartition("t", p): 3 for p in range(4)}]
