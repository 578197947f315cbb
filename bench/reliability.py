"""Reliability under faults: a message stream flows while one thing breaks.

    python -m bench.reliability [--messages 2000] [--rate 10] [--faults kill-queue,broker-restart,...]

Each fault runs on its own separate embedded stack (bench/load.py `Stack`), started fresh,
while a stream of `--messages` widget messages from `--visitors` visitors flows at `--rate`
(`--handoffs` of the visitors ask for a person early on, so the dashboard's index has open
handoffs). When a third of the stream has been sent, the fault is injected:

  kill-queue, kill-intake, kill-channels   kill -9 of that service (the local runner restarts it)
  redis-flushall                           FLUSHALL on the stack's redis-server
  del-rows                                 DEL of the demo chatbot's `rows` key (queue's HandoffIndex)
  mongo-restart                            kill -9 of the Mongo-wire server, started again 5 s later
                                           (same port, same data dir)
  broker-restart                           kill -9 of the broker, started again at once (same port);
                                           memory-only: what it held is gone, the stack must recover
                                           by itself and say what was lost (its logs are searched)
  poison                                   16 invalid records on visitor.messages (they must land in
                                           visitor.messages.dlq and the stream must go on)

The service faults run under the local runner (`deploy.stack start`), as a user runs the
stack; the infrastructure restarts run with this process as the runner ("own" mode: the
local runner stops everything when infrastructure dies), which restarts a service that exits.

Per fault it prints: sent / accepted (2xx, after the widget's retries) / stored / lost
(accepted, never stored) / duplicated / answered by the AI / the time until every /readyz was
200 again / time to recover: from the fault until every service is ready, every accepted
message (but those finally lost) is stored unless it was accepted within the last
max(`--lag`, lag at the fault + 2) seconds (the lag at the fault: the oldest accepted message
not yet stored just before it — how far behind the stack already was), and the dashboard
index is whole (open == rows == Mongo's handed-off count) — plus the fault's own check
(poison: all 16 in the DLQ). Which services reported not ready, and for how long, and the
services' log lines that mention loss after a broker restart. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import re
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from pymongo import AsyncMongoClient

from bench.load import (
    CHATBOT,
    QUEUE_DB,
    LoadRun,
    QueueCount,
    Stack,
    Traffic,
    drive,
    latency_line,
    log,
    warm_up,
)

QUEUE_REDIS_PREFIX = "handoff:queue"  # deploy.stack.command_env: REDIS_PREFIX=handoff:<service>
POISON = 16


@dataclass
class Fault:
    name: str
    mode: str  # the Stack mode it needs
    inject: Callable[[Stack, Context], Awaitable[None]]
    check: Callable[[Stack, Context], Awaitable[bool]] | None = None  # the fault's own "recovered" condition


@dataclass
class Context:
    tag: str
    poison_markers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- the faults
def kill(service: str) -> Callable[[Stack, Context], Awaitable[None]]:
    async def inject(stack: Stack, ctx: Context) -> None:
        pid = stack.kill_service(service)
        log(f"kill -9 {service} (pid {pid})")
    return inject


async def redis_flushall(stack: Stack, ctx: Context) -> None:
    r = aioredis.from_url(stack.redis_url)
    try:
        keys = await r.dbsize()
        await r.flushall()
        log(f"FLUSHALL ({keys} keys)")
    finally:
        await r.aclose()


async def del_rows(stack: Stack, ctx: Context) -> None:
    r = aioredis.from_url(stack.redis_url)
    key = f"{QUEUE_REDIS_PREFIX}:bot:{CHATBOT}:rows"
    try:
        n = await r.hlen(key)
        await r.delete(key)
        log(f"DEL {key} ({n} rows)")
        ctx.notes.append(f"deleted {n} rows")
    finally:
        await r.aclose()


async def mongo_restart(stack: Stack, ctx: Context) -> None:
    stack.kill_infra("mongo")
    log("kill -9 the Mongo-wire server; starting it again in 5 s")
    await asyncio.sleep(5)
    await asyncio.to_thread(stack.start_infra, "mongo")
    log("Mongo-wire server started again")


async def broker_restart(stack: Stack, ctx: Context) -> None:
    stack.kill_infra("kafka")
    log("kill -9 the broker; starting it again (memory-only: empty)")
    await asyncio.to_thread(stack.start_infra, "kafka")
    log("broker started again")


async def poison(stack: Stack, ctx: Context) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(POISON):
            marker = f"poison-{ctx.tag}-{i}"
            ctx.poison_markers.append(marker)
            kind = i % 4
            if kind == 0:
                value = f"{marker} this is not JSON".encode()
            elif kind == 1:
                value = json.dumps({"type": "visitor.message", "marker": marker}).encode()  # fields missing
            elif kind == 2:
                value = json.dumps([marker, 1, 2]).encode()  # not an object
            else:
                value = b"\xff\xfe\x00" + marker.encode()  # not UTF-8
            await producer.send_and_wait("visitor.messages", value, key=f"cv_poison{i}".encode())
        log(f"{POISON} poison records sent to visitor.messages")
    finally:
        await producer.stop()


async def poison_parked(stack: Stack, ctx: Context) -> bool:
    return await dlq_count(stack, ctx) >= len(ctx.poison_markers)


async def dlq_count(stack: Stack, ctx: Context) -> int:
    """How many of our poison records are on visitor.messages.dlq."""
    topic = "visitor.messages.dlq"
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    found: set[str] = set()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    with contextlib.suppress(Exception):
                        body = json.loads(rec.value)
                        payload = body.get("payload", "")
                        if body.get("payload_encoding") == "base64":
                            payload = base64.b64decode(payload).decode(errors="replace")
                        found.update(m for m in ctx.poison_markers if m in payload)
    finally:
        await consumer.stop()
    return len(found)


FAULTS = {
    "kill-queue": Fault("kill-queue", "runner", kill("queue")),
    "kill-intake": Fault("kill-intake", "runner", kill("intake")),
    "kill-channels": Fault("kill-channels", "runner", kill("channels")),
    "redis-flushall": Fault("redis-flushall", "runner", redis_flushall),
    "del-rows": Fault("del-rows", "runner", del_rows),
    "mongo-restart": Fault("mongo-restart", "own", mongo_restart),
    "broker-restart": Fault("broker-restart", "own", broker_restart),
    "poison": Fault("poison", "runner", poison, poison_parked),
}


# ---------------------------------------------------------------------------- one run
async def index_whole(stack: Stack) -> bool | None:
    """The dashboard index agrees with Mongo: open == rows == handed-off conversations."""
    r = aioredis.from_url(stack.redis_url)
    m: AsyncMongoClient = AsyncMongoClient(stack.mongo_uri, serverSelectionTimeoutMS=2000)
    try:
        pipe = r.pipeline(transaction=True)
        pipe.zcard(f"{QUEUE_REDIS_PREFIX}:bot:{CHATBOT}:open")
        pipe.hlen(f"{QUEUE_REDIS_PREFIX}:bot:{CHATBOT}:rows")
        open_n, rows = await pipe.execute()
        db_n = await m[QUEUE_DB]["conversations"].count_documents({"chatbot_id": CHATBOT, "status": "handed_off"})
        return int(open_n) == int(rows) == db_n
    except Exception:  # noqa: BLE001
        return None
    finally:
        await r.aclose()
        await m.close()


@dataclass
class Outcome:
    fault: str
    load: LoadRun | None = None
    t_fault: float = 0.0
    lag_at_fault: float = 0.0  # the oldest accepted, unstored message's age just before the fault
    ready_again: float | None = None  # seconds after the fault
    recovered: float | None = None
    # service -> (first, last seconds after the fault it was seen not ready, the last reason)
    not_ready: dict[str, tuple[float, float, str]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    loud: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


async def run_fault(fault: Fault, args: argparse.Namespace, tmp: Path) -> Outcome:
    out = Outcome(fault.name)
    tag = f"{fault.name}-{int(time.time())}"
    ctx = Context(tag)
    stack = Stack(tmp / fault.name, mode=fault.mode)
    await asyncio.to_thread(stack.start)
    try:
        counter = QueueCount(stack.mongo_uri)
        await warm_up(stack, counter)
        give_up = asyncio.Event()
        traffic = Traffic(tag, args.visitors, handoffs=args.handoffs)
        driving = asyncio.create_task(drive(
            stack, counter, traffic, messages=args.messages, rate=args.rate, in_flight=args.in_flight,
            drain_timeout=args.recover_timeout, give_up=give_up))
        while traffic.counter < args.messages // 3 and not driving.done():
            await asyncio.sleep(0.2)
        # How far behind the stack is just before the fault (its steady lag at this rate).
        before = counter.stored_texts()
        now = time.monotonic()
        out.lag_at_fault = max((now - x.done_at for x in traffic.produced
                                if x.accepted and x.text not in before), default=0.0)
        log_sizes = stack.log_sizes()
        out.t_fault = time.monotonic()
        injected = float("inf")  # when the fault's action finished (a restart 5 s later, say)

        async def inject() -> None:
            nonlocal injected
            try:
                await fault.inject(stack, ctx)
            finally:
                injected = time.monotonic()

        injecting = asyncio.create_task(inject())  # watched from the first moment

        # Watch: readiness every 0.5 s; what is stored every 2 s (kept to judge recovery
        # once the finally lost messages are known).
        snapshots: list[tuple[float, bool, set[str] | None, bool | None, bool]] = []
        seen_not_ready = False
        async with httpx.AsyncClient() as http:
            last_change, last_missing = time.monotonic(), None
            while not driving.done() or not injecting.done():
                ready = await stack.readiness(http)
                all_ready = all(code == 200 for code, _ in ready.values())
                now = time.monotonic()
                for name, (code, body) in ready.items():
                    if code != 200:
                        first = out.not_ready.get(name, (now - out.t_fault, 0.0, ""))[0]
                        out.not_ready[name] = (first, now - out.t_fault, _reason(code, body))
                if not all_ready:
                    seen_not_ready = True
                if all_ready and seen_not_ready and out.ready_again is None:
                    out.ready_again = now - out.t_fault
                if not snapshots or now - snapshots[-1][0] >= 2:
                    stored = counter.stored_texts()
                    whole = await index_whole(stack)
                    own = await fault.check(stack, ctx) if fault.check else True
                    snapshots.append((now, all_ready, stored, whole, own))
                    # Give up draining once nothing has changed for a while after the stream
                    # ended (e.g. messages the memory-only broker lost).
                    missing = None if stored is None else sum(
                        1 for x in traffic.produced if x.accepted and x.text not in stored)
                    if missing != last_missing:
                        last_change, last_missing = now, missing
                    elif (traffic.counter >= args.messages and now - last_change > args.settle and all_ready
                          and injecting.done()):
                        give_up.set()
                await asyncio.sleep(0.5)
        await injecting
        out.load = await driving
        acc = out.load.accounting
        lost = set(acc.lost_texts) if acc else set()
        if lost:
            when = Counter("before the fault" if x.done_at < out.t_fault else
                           "while it was injected" if x.done_at < injected else "after the fault was over"
                           for x in out.load.sends if x.text in lost)
            out.notes.append("lost messages by when their POST was answered 2xx: "
                             + ", ".join(f"{k} {v}" for k, v in when.items()))
        accepted_at = {s.text: s.done_at for s in out.load.sends if s.accepted}
        allowance = max(args.lag, out.lag_at_fault + 2)
        for t, all_ready, stored, whole, own in snapshots:
            if t < injected or not all_ready or stored is None or whole is False or not own:
                continue
            behind = [x for x, at in accepted_at.items() if at < t - allowance and x not in stored and x not in lost]
            if not behind:
                out.recovered = t - out.t_fault
                break
        if fault.name == "poison":
            out.notes.append(f"{await dlq_count(stack, ctx)}/{POISON} poison records in visitor.messages.dlq")
        out.restarts = stack.restarts()
        logs = stack.logs_since(log_sizes)
        if fault.name in ("broker-restart", "mongo-restart"):
            for name, text in logs.items():
                hits = [ln for ln in text.splitlines() if re.search(r"\blost\b|\bloss\b|data loss", ln, re.IGNORECASE)]
                if hits:
                    best = next((h for h in hits if "visitor.messages" in h), hits[0])
                    out.loud.append(f"{name}: {len(hits)} line(s), e.g. {best[:400]}")
        for name, text in sorted(logs.items()):
            errors = [ln for ln in text.splitlines() if " ERROR " in ln or ln.startswith("Traceback")]
            if errors:
                out.notes.append(f"{name}: {len(errors)} ERROR/Traceback log lines since the fault, "
                                 f"first: {errors[0][:200]}")
        out.notes += ctx.notes
        await counter.close()
    except Exception as exc:  # noqa: BLE001 - report it and go on with the next fault
        out.error = f"{type(exc).__name__}: {exc}"
        log(f"{fault.name}: {out.error}")
    finally:
        await asyncio.to_thread(stack.stop)
    return out


def _reason(code: int, body: str) -> str:
    if code == 0:
        return body
    with contextlib.suppress(Exception):
        data = json.loads(body)
        checks = data.get("checks") or {}
        failed = [k for k, v in checks.items() if v is False]
        extra = data.get("missing_topics")
        return f"{code} {','.join(failed) or ''}{' missing ' + str(len(extra)) + ' topics' if extra else ''}".strip()
    return f"{code} {body[:80]}"


# ---------------------------------------------------------------------------- report
def report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    print()
    print("=" * 118)
    print(f"reliability: {args.messages} messages per fault at {args.rate:g} msg/s from {args.visitors} visitors "
          f"({args.handoffs} ask for a person); fault after a third of the stream")
    print(f"{'fault':<16}{'sent':>6}{'accepted':>9}{'stored':>8}{'lost':>6}{'dup':>5}{'answered':>9}"
          f"{'lag@fault':>10}{'ready again':>13}{'recovered':>11}   restarts / not ready")
    for o in outcomes:
        if o.error or o.load is None or o.load.accounting is None:
            print(f"{o.fault:<16}  ERROR {o.error}")
            continue
        a = o.load.accounting
        ready = (f"{o.ready_again:.1f}s" if o.ready_again is not None
                 else "never" if o.not_ready else "always")
        rec = f"{o.recovered:.1f}s" if o.recovered is not None else "NOT"
        nr = ", ".join(f"{n} +{a:.0f}..{b:.0f}s ({r})" for n, (a, b, r) in o.not_ready.items())
        print(f"{o.fault:<16}{a.sent:>6}{a.accepted:>9}{a.stored:>8}{a.lost:>6}{a.duplicated:>5}{a.answered:>9}"
              f"{o.lag_at_fault:>9.1f}s{ready:>13}{rec:>11}   restarts {o.restarts or '-'}; not ready: {nr or '-'}")
    print()
    for o in outcomes:
        if o.load is None:
            continue
        a = o.load.accounting
        lines = [latency_line(o.load)]
        if a is not None and a.stored_unacked:
            lines.append(f"{a.stored_unacked} stored though never acknowledged (the widget would retry: harmless)")
        if a is not None and a.answered < a.stored:
            lines.append(f"{a.stored - a.answered} stored messages never answered by the AI")
        if a is not None and a.lost:
            lines.append(f"lost e.g. {a.lost_examples[:3]}")
        if o.fault == "broker-restart":
            lines.append("loud report of the loss in the services' logs (lines with lost/loss): "
                         + ("" if o.loud else "NONE FOUND"))
            lines += [f"  {x}" for x in o.loud]
        lines += o.notes
        print(f"{o.fault}:")
        for ln in lines:
            print(f"    {ln}")
    print("=" * 118)


async def main(args: argparse.Namespace) -> None:
    names = [n.strip() for n in args.faults.split(",") if n.strip()] if args.faults else list(FAULTS)
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown fault(s) {unknown}; known: {', '.join(FAULTS)}")
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="handoff-reliability-") as tmp:
        for name in names:
            log(f"=== {name}: a fresh stack, {args.messages} messages at {args.rate:g}/s")
            outcomes.append(await run_fault(FAULTS[name], args, Path(tmp)))
            report(outcomes[-1:], args)
    report(outcomes, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.reliability")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=10, help="messages/s offered (paced)")
    parser.add_argument("--visitors", type=int, default=100)
    parser.add_argument("--handoffs", type=int, default=30, help="extra visitors who ask for a person early on")
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--faults", default="", help=f"comma-separated, default all: {', '.join(FAULTS)}")
    parser.add_argument("--lag", type=float, default=5, help="seconds a message may take to be stored in steady flow")
    parser.add_argument("--settle", type=float, default=45,
                        help="after the stream: give up on missing messages after this long without change")
    parser.add_argument("--recover-timeout", type=float, default=600, help="longest wait after the stream")
    asyncio.run(main(parser.parse_args()))
