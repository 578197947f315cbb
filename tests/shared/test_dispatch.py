"""The keyed dispatcher's commits: never past a message still in flight, and under load one
commit per partition in flight at a time, at the highest watermark by then (not one per message)."""

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

    async def commit(generation: int, tp: TopicPartition, offset: int, do) -> None:  # noqa: ANN001
        commits.append(offset)
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
