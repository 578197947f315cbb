"""Replicas on the local stack: `deploy.stack up --scale queue=2,intake=2,gateway=2,channels=2`
runs two processes of each of those services on the embedded broker, Redis and Mongo-wire
server, supervised by the runner.

- Each consumer group's partitions are split between its two processes (each process's
  /healthz says which partitions it holds and the highest offset it handled in each), both
  replicas of the queue and of intake handle records (counted per replica), and a replica that
  stops heartbeating loses its partitions to the other until it is back.
- A dashboard on either gateway sees every update of its chatbot; the widget works through
  either channels process.
- kill -9 of one replica of each service mid-stream: every message is stored exactly once and
  answered by the AI exactly once (counted over every message, not sampled), the runner starts
  each killed replica again on its port, and the gateway whose preferred queue replica died
  keeps answering through the other one (QUEUE_URL lists both).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.load import UNLIMITED_WIDGET, QueueCount, Send, Traffic, post_message  # sets WIDGET_TOKEN_SECRET first
from deploy.stack import _alive, separate_stack_env
from tests.harness import ROOT

pytestmark = pytest.mark.e2e

SCALE = "queue=2,intake=2,gateway=2,channels=2"
CHATBOT = "demo"
PARTITIONS = 6  # visitor.messages, ai.turns (shared/topics.py)


@dataclass
class Stack:
    env: dict[str, str]
    run_dir: Path
    ports: dict[str, int]  # by process name, as the runner recorded them (a restart keeps its port)

    def state(self) -> dict[str, Any]:
        return json.loads((self.run_dir / "stack.json").read_text())

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def counter(self) -> QueueCount:
        """What the queue stored (its Mongo) of the messages it is told to track."""
        return QueueCount(f"mongodb://127.0.0.1:{self.ports['mongo']}/?retryWrites=false")

    def tail(self) -> str:
        return (self.run_dir / "logs" / "stack.log").read_text(errors="replace")[-4000:]


def _runner(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.stack", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240, check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("replicas")
    env = separate_stack_env(data, replicas=2)  # no LLM: intake answers in its offline mode
    run_dir = data / "run"
    seen: set[int] = set()  # every process of the stack, to check none outlives `stop`
    try:
        started = _runner(env, "start", "--scale", SCALE)
        assert started.returncode == 0, started.stdout + started.stderr
        state = json.loads((run_dir / "stack.json").read_text())
        s = Stack(env, run_dir, state["ports"])
        # Every process has its own port, and `start` printed each gateway's and channels' URL.
        names = [n for n in state["pids"] if n not in ("kafka", "redis", "mongo", "runner")]
        assert sorted(names) == sorted(["queue-1", "queue-2", "intake-1", "intake-2", "summarizer", "gateway-1",
                                        "gateway-2", "channels-1", "channels-2"]), names
        assert len(set(s.ports.values())) == len(s.ports)
        for name in ("gateway-1", "gateway-2"):
            assert f"{s.url(name)}/" in started.stdout
        for name in ("channels-1", "channels-2"):
            assert f"{s.url(name)}/widget/test?chatbot=demo" in started.stdout
        # The stream below comes from one address at machine rates: lift the widget's limits.
        done = _runner(env, "cli", "queue", "seed-chatbot", "--id", CHATBOT, "--name", "Demo Shop", "--handoff-on",
                       *UNLIMITED_WIDGET)
        assert done.returncode == 0, done.stdout + done.stderr
        yield s
    finally:
        if (run_dir / "stack.json").exists():
            seen |= set(json.loads((run_dir / "stack.json").read_text())["pids"].values())
        for pid in seen:  # a replica a failed test left frozen
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        stopped = _runner(env, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not [pid for pid in seen if _alive(pid)], "still running after stop"


async def _until(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if result := await check():
                return result
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} (after {timeout:g}s; last error {last!r})")


# ---------------------------------------------------------------------------- partitions
async def _share(http: httpx.AsyncClient, stack: Stack, name: str, group: str) -> dict[str, Any]:
    """What replica `name` says of its share of `group` (shared.bus.health.ConsumerHealth.share)."""
    return (await http.get(f"{stack.url(name)}/healthz", timeout=3)).json()["consumer_groups"][group]


def _partitions(names: list[str], topic: str) -> set[int]:
    return {int(n[len(topic) + 1:-1]) for n in names if n.startswith(topic + "[")}


def _handled(share: dict[str, Any], topic: str) -> dict[int, int]:
    return {int(n[len(topic) + 1:-1]): offset for n, offset in share["handled"].items() if n.startswith(topic + "[")}


async def _split(http: httpx.AsyncClient, stack: Stack, names: list[str], group: str, topic: str,
                 timeout: float = 60) -> list[set[int]]:
    """Once every replica holds some of the topic's partitions, none held twice, all held."""
    async def check() -> list[set[int]] | None:
        held = [_partitions((await _share(http, stack, n, group))["assigned"], topic) for n in names]
        whole = set().union(*held) == set(range(PARTITIONS)) and sum(map(len, held)) == PARTITIONS
        return held if whole and all(held) else None
    return await _until(check, timeout, f"{group}'s partitions of {topic} were not split between {names}")


async def _log_ends(stack: Stack, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{stack.ports['kafka']}", enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
        return {tp.partition: end for tp, end in ends.items()}
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------------- widget traffic
async def _post(channels: list[httpx.AsyncClient], send: Send, first: int) -> None:
    """POST as the widget does, retrying a 5xx, 429 or connection error under the same
    client_message_id — on the next channels process, as a load balancer would."""
    for attempt in range(40):
        await post_message(channels[(first + attempt) % len(channels)], CHATBOT, send, retries=0)
        status = send.attempts[-1][0]
        if send.accepted or (400 <= status < 500 and status != 429):
            return
        await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))


async def _stream(stack: Stack, counter: QueueCount, traffic: Traffic, n: int, rate: float,
                  during: Callable[[int], Awaitable[None]] | None = None) -> list[Send]:
    """n messages at `rate`/s, visitor k's on channels process k % 2 first; `during(i)` runs
    before the i-th message leaves (the stream goes on meanwhile)."""
    sends: list[Send] = []
    tasks: list[asyncio.Task] = []
    side: list[asyncio.Task] = []
    async with httpx.AsyncClient(base_url=stack.url("channels-1"), timeout=10) as c1, \
            httpx.AsyncClient(base_url=stack.url("channels-2"), timeout=10) as c2:
        t0 = time.monotonic()
        for i in range(n):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            if during is not None:
                side.append(asyncio.create_task(during(i)))
            send = traffic.next()
            counter.track(send)
            sends.append(send)
            tasks.append(asyncio.create_task(_post([c1, c2], send, int(send.visitor[-4:], 16) % 2)))
        await asyncio.gather(*tasks, *side)
    return sends


async def _all_stored_and_answered(counter: QueueCount, sends: list[Send], timeout: float) -> None:
    async def check() -> bool:
        polled = await counter.poll()
        return polled is not None and polled[0] >= len(sends) and polled[1] >= len(sends)
    try:
        await _until(check, timeout, "not every message was stored and answered", interval=1.0)
    except AssertionError:
        pass  # the exact count below says what is missing


# ---------------------------------------------------------------------------- dashboards
async def _agent(gateway: str) -> tuple[httpx.AsyncClient, str]:
    client = httpx.AsyncClient(base_url=gateway, timeout=15)
    r = await client.post("/api/login", json={"email": "agent@demo.test", "password": "handoff-demo"})
    assert r.status_code == 200, r.text
    return client, "; ".join(f"{k}={v}" for k, v in client.cookies.items())


async def _frames(ws, into: list[dict], until: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            into.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except TimeoutError:
            return


# ============================================================================ the tests
async def test_both_replicas_of_queue_and_intake_handle_their_share_of_the_partitions(stack):
    counter = stack.counter()
    try:
        async with httpx.AsyncClient() as http:
            queue_split = await _split(http, stack, ["queue-1", "queue-2"], "queue", "visitor.messages")
            intake_split = await _split(http, stack, ["intake-1", "intake-2"], "intake", "ai.turns")
            before = {t: await _log_ends(stack, t) for t in ("visitor.messages", "ai.turns")}

            n = 24  # 24 visitors, one conversation each: spread over the six partitions
            sends = await _stream(stack, counter, Traffic(f"split-{uuid.uuid4().hex[:6]}", n), n, rate=8)
            await _all_stored_and_answered(counter, sends, 90)
            acc = await counter.exact(sends)
            assert (acc.stored, acc.lost, acc.duplicated, acc.answered) == (n, 0, 0, n), acc

            async def counted(names: list[str], group: str, topic: str) -> dict[str, int] | None:
                """Records of this phase each replica handled, from its own report: per partition
                it handled, its highest offset handled + 1 minus where the log ended before."""
                ends = await _log_ends(stack, topic)
                shares = {name: _handled(await _share(http, stack, name, group), topic) for name in names}
                counts = {name: 0 for name in names}
                for p in range(PARTITIONS):
                    if ends[p] == before[topic][p]:
                        continue  # no record of this phase here
                    handlers = [name for name in names if shares[name].get(p, -1) >= before[topic][p]]
                    assert len(handlers) <= 1, f"{topic}[{p}] handled by {handlers}: not split ({shares})"
                    if not handlers or shares[handlers[0]][p] + 1 != ends[p]:
                        return None  # not every record handled yet
                    counts[handlers[0]] += ends[p] - before[topic][p]
                return counts

            queue = await _until(lambda: counted(["queue-1", "queue-2"], "queue", "visitor.messages"), 30,
                                 "the queue replicas' reports do not add up to the log")
            intake = await _until(lambda: counted(["intake-1", "intake-2"], "intake", "ai.turns"), 30,
                                  "the intake replicas' reports do not add up to the log")
            print(f"visitor.messages split {queue_split}, handled per replica {queue}; "
                  f"ai.turns split {intake_split}, handled per replica {intake}")
            assert sum(queue.values()) == n and all(queue.values()), queue
            assert sum(intake.values()) == n and all(intake.values()), intake
    finally:
        await counter.close()


async def test_a_replica_that_stops_heartbeating_loses_its_partitions_until_it_is_back(stack):
    """queue-1 and intake-1 frozen (SIGSTOP: alive, but silent to the broker): after the
    session timeout the other replica holds every partition and handles all the traffic; once
    they are back the partitions are split again."""
    counter = stack.counter()
    frozen = [stack.state()["pids"][n] for n in ("queue-1", "intake-1")]
    try:
        async with httpx.AsyncClient() as http:
            await _split(http, stack, ["queue-1", "queue-2"], "queue", "visitor.messages")
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            await _until(lambda: _holds_all(http, stack, "queue-2", "queue", "visitor.messages"), 60,
                         "queue-2 never took over the frozen queue-1's partitions")
            await _until(lambda: _holds_all(http, stack, "intake-2", "intake", "ai.turns"), 60,
                         "intake-2 never took over the frozen intake-1's partitions")
            n = 12
            sends = await _stream(stack, counter, Traffic(f"frozen-{uuid.uuid4().hex[:6]}", n), n, rate=8)
            await _all_stored_and_answered(counter, sends, 60)
            acc = await counter.exact(sends)
            assert (acc.stored, acc.lost, acc.duplicated, acc.answered) == (n, 0, 0, n), acc
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            frozen = []
            await _split(http, stack, ["queue-1", "queue-2"], "queue", "visitor.messages")
            await _split(http, stack, ["intake-1", "intake-2"], "intake", "ai.turns")
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        await counter.close()


async def _holds_all(http: httpx.AsyncClient, stack: Stack, name: str, group: str, topic: str) -> bool:
    return _partitions((await _share(http, stack, name, group))["assigned"], topic) == set(range(PARTITIONS))


async def test_a_dashboard_on_either_gateway_sees_every_update_of_its_chatbot(stack):
    agents = [await _agent(stack.url(g)) for g in ("gateway-1", "gateway-2")]
    counter = stack.counter()
    try:
        sockets = []
        for (_, cookie), g in zip(agents, ("gateway-1", "gateway-2"), strict=True):
            url = stack.url(g)
            ws = await websockets.connect(url.replace("http", "ws", 1) + "/ws",
                                          additional_headers={"Cookie": cookie, "Origin": url})
            await ws.send(json.dumps({"type": "subscribe", "chatbot_id": CHATBOT}))
            sockets.append(ws)
        frames: list[list[dict]] = [[], []]
        for ws, seen in zip(sockets, frames, strict=True):
            await _frames(ws, seen, lambda s=seen: any(f.get("type") == "subscribed" for f in s), 20)
        subscribed = [next(f for f in seen if f.get("type") == "subscribed") for seen in frames]

        n = 10
        sends = await _stream(stack, counter, Traffic(f"dash-{uuid.uuid4().hex[:6]}", 5), n, rate=5)
        await _all_stored_and_answered(counter, sends, 60)
        visitor_ids = {s.message_id for s in sends}

        def message_ids(seen: list[dict]) -> set[str]:
            return {(u.get("message") or {}).get("message_id") for u in _updates(seen)}

        def complete(seen: list[dict]) -> bool:
            ids = message_ids(seen)
            return visitor_ids <= ids and sum(1 for i in ids if i and i not in visitor_ids) >= n  # + the AI's replies
        for ws, seen in zip(sockets, frames, strict=True):
            await _frames(ws, seen, lambda s=seen: complete(s), 30)
        await asyncio.sleep(1.0)  # anything still on its way
        for ws, seen in zip(sockets, frames, strict=True):
            await _frames(ws, seen, lambda: False, 0.5)

        updates = [{(u["epoch"], u["seq"]) for u in _updates(seen) if u["seq"] > sub["seq"]}
                   for seen, sub in zip(frames, subscribed, strict=True)]
        for seen, sub, got in zip(frames, subscribed, updates, strict=True):
            assert complete(seen), f"a dashboard missed messages: {visitor_ids - message_ids(seen)}"
            assert {e for e, _ in got} == {sub["epoch"]}
            seqs = sorted(s for _, s in got)
            assert seqs == list(range(sub["seq"] + 1, seqs[-1] + 1)), f"a gap in the updates: {seqs}"
        common_from = max(sub["seq"] for sub in subscribed)
        assert {u for u in updates[0] if u[1] > common_from} == {u for u in updates[1] if u[1] > common_from}
        for ws in sockets:
            await ws.close()
    finally:
        for client, _ in agents:
            await client.aclose()
        await counter.close()


def _updates(frames: list[dict]) -> list[dict]:
    """The updates the frames carry: one per `update` frame, several per coalesced `updates` frame
    (each entry with its own epoch and seq; docs/contracts.md, live protocol)."""
    return [u for f in frames for u in ([f["update"]] if f.get("type") == "update" else
                                        f["updates"] if f.get("type") == "updates" else [])]


async def test_the_widget_works_through_either_channels_process(stack):
    """A visitor's session from one channels process, its socket on the other, messages posted
    to each: every AI answer reaches the socket, whichever process delivered it."""
    for session_on, socket_on in (("channels-1", "channels-2"), ("channels-2", "channels-1")):
        async with httpx.AsyncClient(base_url=stack.url(session_on), timeout=10) as a, \
                httpx.AsyncClient(base_url=stack.url(socket_on), timeout=10) as b:
            r = await a.post(f"/web/{CHATBOT}/session")
            assert r.status_code == 201, r.text
            token = r.json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            ws_url = stack.url(socket_on).replace("http", "ws", 1) + f"/web/{CHATBOT}/ws"
            async with websockets.connect(ws_url) as ws:
                await ws.send(json.dumps({"type": "auth", "token": token}))
                frames: list[dict] = []
                await _frames(ws, frames, lambda: any(f.get("type") == "ready" for f in frames), 20)
                texts = [f"through {session_on} {uuid.uuid4().hex[:6]}", f"through {socket_on} {uuid.uuid4().hex[:6]}"]
                for client, text in zip((a, b), texts, strict=True):
                    r = await client.post(f"/web/{CHATBOT}/messages", headers=auth,
                                          json={"client_message_id": uuid.uuid4().hex, "text": text})
                    assert r.status_code == 202, r.text

                def answers() -> list[dict]:
                    return [f for f in frames if f.get("type") == "message" and f.get("sender") == "ai"]
                await _frames(ws, frames, lambda: len(answers()) >= 2, 30)
                assert len(answers()) == 2, frames
                r = await b.post(f"/web/{CHATBOT}/session/renew", headers=auth)
                assert r.status_code == 200, r.text  # the key and the renewal record are shared


async def test_kill_9_of_one_replica_of_each_service_mid_stream_loses_and_duplicates_nothing(stack):
    victims = ("queue-1", "intake-1", "channels-1", "gateway-2")
    before = stack.state()
    counter = stack.counter()
    agent, _ = await _agent(stack.url("gateway-1"))  # its QUEUE_URL lists queue-1 first
    failover: list[int] = []
    n = 120

    async def kill_at_a_third(i: int) -> None:
        if i != n // 3:
            return
        for name in victims:
            os.kill(before["pids"][name], signal.SIGKILL)
        await _until(lambda: _gone(before["pids"]["queue-1"]), 10, "queue-1 did not die")
        # The gateway whose first queue replica just died answers through the other one.
        failover.append((await agent.get(f"/api/chatbots/{CHATBOT}/stats")).status_code)

    try:
        sends = await _stream(stack, counter, Traffic(f"kill-{uuid.uuid4().hex[:6]}", 30), n, rate=6,
                              during=kill_at_a_third)
        assert failover == [200]

        async def restarted() -> bool:
            state = stack.state()
            if any(state["pids"].get(v) in (None, before["pids"][v]) for v in victims):
                return False
            async with httpx.AsyncClient(timeout=3) as http:
                codes = [(await http.get(f"{stack.url(v)}/readyz")).status_code for v in victims]
            return codes == [200] * len(victims)
        await _until(restarted, 120, f"the killed replicas were not restarted and ready:\n{stack.tail()}", 1.0)

        await _all_stored_and_answered(counter, sends, 120)
        acc = await counter.exact(sends)
        print(f"sent {acc.sent}, accepted {acc.accepted}, stored {acc.stored} ({acc.exactly_once} exactly once), "
              f"lost {acc.lost}, duplicated {acc.duplicated}, answered {acc.answered}, AI messages {acc.ai_total}; "
              f"POST attempts {sum(len(s.attempts) for s in sends)}")
        assert acc.accepted == acc.sent == n, [s.attempts for s in sends if not s.accepted][:5]
        assert (acc.stored, acc.exactly_once, acc.lost, acc.duplicated) == (n, n, 0, 0), acc.lost_examples
        assert acc.answered == acc.ai_total == n  # each answered, and only once

        after = stack.state()
        for name, history in after["restarts"].items():
            assert history["count"] == (1 if name in victims else 0), (name, history)
        status = _runner(stack.env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        lines = {line.split()[0]: line for line in status.stdout.splitlines()}
        for name in victims:
            assert f"pid {after['pids'][name]} " in lines[name] and "ready" in lines[name], lines[name]
            assert f"port {after['ports'][name]}" in lines[name] and "restarts 1" in lines[name], lines[name]
        # The restarted replicas took their share again.
        async with httpx.AsyncClient() as http:
            await _split(http, stack, ["queue-1", "queue-2"], "queue", "visitor.messages")
            await _split(http, stack, ["intake-1", "intake-2"], "intake", "ai.turns")
    finally:
        await agent.aclose()
        await counter.close()


async def _gone(pid: int) -> bool:
    return not _alive(pid)
