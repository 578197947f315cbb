"""Sustained end-to-end throughput: widget messages in, stored exactly once, answered by the AI.

    python -m bench.bench_throughput [--seconds 60] [--rate 200] [--visitors 100]
                                     [--unpaced --in-flight 50] [--preload 1000000]
                                     [--handoff-probes 1]

Starts a separate stack with the processes and environment of `./handoff start` (embedded
broker, Redis, Mongo-wire server, the five services with `deploy.stack.service_env`, AI in
offline mode, demo chatbot) on free ports in a temporary directory — started by the bench
itself (bench/load.py `Stack`, "own" mode) so that it can fill Mongo before the services
start — then with bench/load.py:

1. `--preload N` (optional): N old messages (10 per conversation, with their conversations,
   mostly closed) inserted straight into the queue's Mongo in batches of 5,000, then the
   queue's own indexes built (services.queue.store QueueRecord.create_indexes), then the
   services started: the run measures the rate with data already stored;
2. the floor, measured in the same run on the same Mongo-wire server: bare batched writes
   (`insert_many` of message-like documents, 500 per batch, into a scratch database with the
   same indexes as the queue's `messages`) for `--floor-seconds`: docs/s;
3. one warm-up message through the whole path, then the load: `--visitors` visitors post to
   channels' widget endpoint at `--rate` messages/s for `--seconds` (or unpaced with
   `--in-flight` open POSTs), while the queue's Mongo is polled once a second (the backlog);
4. after the last POST, polling until every accepted message is stored and answered by the
   AI, then the exact accounting by message (stored, exactly once, lost, duplicated, answered).

`--handoff-probes S`: meanwhile (while the load is offered), a new visitor asks for a person
every S seconds and a logged-in dashboard socket times each new handoff's row (bench/handoff_probe.py).

The writes one visitor message needs are measured, not assumed: the Mongo-wire server's
`serverStatus` opcounters (insert + update incl. findAndModify + delete; per command, as
mongod counts them) over the run, less the idle stack's own writes over the same time,
divided by the messages stored. `top` gives the same per collection. The floor in messages/s
is then floor docs/s / writes per message, and the bench prints measured / floor.

Beside the POST figures: the load driver's own ceiling, measured in the same run (the same
client pools against an HTTP server in its own process that answers 202 at once), so a
figure bounded by the driver shows as such. It also prints each process's CPU over the run (ms per message and % of one core), which
tells what bounds the figure. A measurement, not a test: nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient

from bench.handoff_probe import HandoffProbe
from bench.load import (
    CHATBOT,
    QUEUE_DB,
    QueueCount,
    Stack,
    Traffic,
    cpu_seconds,
    topic_records,
    drive,
    driver_ceiling,
    latency_line,
    log,
    machine_busy_seconds,
    mongo_ops,
    ops_delta,
    print_backlog,
    stored_by,
    warm_up,
    writes_of,
)
from shared.ids import conversation_id_for

FLOOR_BATCH = 500
PRELOAD_BATCH = 5000
PRELOAD_PER_CONVERSATION = 10


# ---------------------------------------------------------------------------- preload
def _preload_docs(chatbot: str, first_conv: int, n_convs: int, now: datetime) -> tuple[list[dict], list[dict]]:
    convs, msgs = [], []
    for c in range(first_conv, first_conv + n_convs):
        visitor = "v_" + f"{c:016x}"
        cid = conversation_id_for(chatbot, "web", visitor)
        start = now - timedelta(days=60) + timedelta(seconds=c)
        last = start + timedelta(seconds=PRELOAD_PER_CONVERSATION * 30)
        status = "active" if c % 10 == 0 else "closed"
        convs.append({
            "_id": cid, "chatbot_id": chatbot, "channel": "web", "visitor_id": visitor, "created_at": start,
            "status": status, "version": 0 if status == "active" else 2, "handoff_id": None, "reason": None,
            "waiting_since": None, "pending_message_id": None, "contact_wanted": [], "contact": {},
            "closed_at": last if status == "closed" else None, "message_count": PRELOAD_PER_CONVERSATION,
            "last_message_at": last, "last_message_preview": "Thanks, that helped.", "updated_at": last,
            "last_visitor_message_at": last, "display_name": None,
        })
        for m in range(PRELOAD_PER_CONVERSATION):
            at = start + timedelta(seconds=m * 30)
            sender = "visitor" if m % 2 == 0 else "ai"
            msgs.append({
                "_id": f"m_pre{c:09d}{m:02d}", "conversation_id": cid, "chatbot_id": chatbot, "sender": sender,
                "sender_name": None, "text": f"old message {m} of conversation {c}: where is my parcel?",
                "created_at": at, "delivery": None if sender == "visitor" else "delivered",
                "at_us": int(at.timestamp() * 1_000_000),
            })
    return convs, msgs


async def preload(mongo_uri: str, n_messages: int, chatbot: str = CHATBOT) -> None:
    """n_messages old messages (and their conversations) into the queue's Mongo, batched, before
    the services start: the documents first, the queue's indexes after (building an index
    over stored documents is several times faster on this server than keeping it up to date
    insert by insert)."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    db = client[QUEUE_DB]
    n_convs = max(1, n_messages // PRELOAD_PER_CONVERSATION)
    per_batch = PRELOAD_BATCH // PRELOAD_PER_CONVERSATION
    now = datetime.now(UTC)
    t0 = time.monotonic()
    done = 0
    next_report = 100_000
    try:
        for first in range(0, n_convs, per_batch):
            convs, msgs = _preload_docs(chatbot, first, min(per_batch, n_convs - first), now)
            await db["messages"].insert_many(msgs, ordered=False)
            await db["conversations"].insert_many(convs, ordered=False)
            done += len(msgs)
            if done >= next_report:
                log(f"  preloaded {done:,} messages ({done / (time.monotonic() - t0):,.0f} msg/s)")
                next_report += 100_000
        t1 = time.monotonic()
        log(f"preloaded {done:,} messages in {n_convs:,} conversations in {t1 - t0:.1f}s "
            f"({done / (t1 - t0):,.0f} messages/s + their conversations); building the queue's indexes …")
        try:  # the indexes the queue itself asks for
            from services.queue.store import QueueRecord

            await QueueRecord(db).create_indexes()
        except ImportError:  # the queue builds them at its start (its readiness may then time out)
            log("could not import services.queue.store; the queue builds its indexes when it starts")
        log(f"indexes built in {time.monotonic() - t1:.1f}s; preload took {time.monotonic() - t0:.1f}s in all")
    finally:
        await client.close()


# ---------------------------------------------------------------------------- the floor
async def measure_floor(mongo_uri: str, seconds: float, indexes: bool = True) -> float:
    """Bare batched writes: insert_many of message-like docs (distinct times, 1,000
    conversations), FLOOR_BATCH per call, one client, into a scratch collection with the
    queue's two secondary indexes on `messages` (or none); docs/s."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True)
    db = client["bench_floor"]
    coll = db["messages_indexed" if indexes else "messages_bare"]
    try:
        if indexes:
            await coll.create_index([("conversation_id", ASCENDING), ("at_us", ASCENDING)])
            await coll.create_index([("chatbot_id", ASCENDING), ("created_at", DESCENDING)])
        n = 0
        base = datetime.now(UTC)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            docs = []
            for i in range(n, n + FLOOR_BATCH):
                at = base + timedelta(microseconds=1000 * i)
                docs.append({"_id": f"m_floor{i:010d}", "conversation_id": f"cv_floor{random.randrange(1000):06d}",
                             "chatbot_id": "floor", "sender": "visitor", "sender_name": None,
                             "text": f"Question floor-{i}: where is my parcel?", "created_at": at,
                             "delivery": None, "at_us": int(at.timestamp() * 1_000_000)})
            await coll.insert_many(docs, ordered=False)
            n += len(docs)
        return n / (time.monotonic() - t0)
    finally:
        await client.drop_database("bench_floor")
        await client.close()


# ---------------------------------------------------------------------------- the run
async def settle_writes(mongo_uri: str, quiet_s: float = 2.0, cap_s: float = 30.0) -> None:
    """Wait until the stack's writes have died down (delivery statuses trail the replies)."""
    t0 = time.monotonic()
    prev = writes_of(ops_delta(await mongo_ops(mongo_uri), await mongo_ops(mongo_uri)))
    last = await mongo_ops(mongo_uri)
    while time.monotonic() - t0 < cap_s:
        await asyncio.sleep(quiet_s)
        now = await mongo_ops(mongo_uri)
        w = writes_of(ops_delta(last, now))
        last = now
        if w <= max(prev, 5):
            return
        prev = w


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {n: c for n, p in pids.items() if (c := cpu_seconds(p)) is not None}


async def run(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="handoff-throughput-")
    try:
        await _run(args, tmp)
    finally:
        if args.keep:
            log(f"kept {tmp} (logs in stack/run/logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


async def _run(args: argparse.Namespace, tmp: str) -> None:
    def before_services(st: Stack) -> None:
        if args.preload:
            asyncio.run(preload(st.mongo_uri, args.preload))

    stack = Stack(Path(tmp) / "stack", mode="own", before_services=before_services)
    await asyncio.to_thread(stack.start)
    try:
        log(f"floor: bare insert_many, {FLOOR_BATCH} docs per batch, {args.floor_seconds:g}s each …")
        floor_docs = await measure_floor(stack.mongo_uri, args.floor_seconds)
        floor_bare = await measure_floor(stack.mongo_uri, args.floor_seconds, indexes=False)
        log(f"floor: {floor_docs:,.0f} docs/s with the messages collection's indexes, "
            f"{floor_bare:,.0f} docs/s without secondary indexes")

        ceiling = await driver_ceiling(args.in_flight)
        log(f"load driver ceiling: {ceiling[0]:,.0f} POSTs/s at {args.in_flight} open against a server that does nothing")

        counter = QueueCount(stack.mongo_uri)
        try:
            took = await warm_up(stack, counter)
            log(f"warm-up message answered after {took:.1f}s")
            # The idle stack's own writes (timers, index checks), to subtract from the run's.
            idle0, t_idle = await mongo_ops(stack.mongo_uri), time.monotonic()
            await asyncio.sleep(args.idle_seconds)
            idle_rate = writes_of(ops_delta(idle0, await mongo_ops(stack.mongo_uri))) / (time.monotonic() - t_idle)

            pids = stack.pids()
            ops0, cpu0 = await mongo_ops(stack.mongo_uri), cpu_of(pids)
            records0 = await topic_records(stack.kafka_bootstrap)
            busy0, self0 = machine_busy_seconds(), time.process_time()
            how = (f"unpaced, {args.in_flight} in flight" if args.unpaced
                   else f"{args.rate:g} msg/s offered (at most {args.in_flight} POSTs open)")
            log(f"load: {args.visitors} visitors, {how}, {args.seconds:g}s"
                + (f", a new handoff every {args.handoff_probes:g}s" if args.handoff_probes else ""))
            probe = HandoffProbe(stack, args.handoff_probes) if args.handoff_probes else None
            if probe is not None:
                await probe.start()
            driving = asyncio.create_task(drive(stack, counter, Traffic(f"tp{int(time.time())}", args.visitors),
                                                seconds=args.seconds, rate=None if args.unpaced else args.rate,
                                                in_flight=args.in_flight, drain_timeout=args.drain_timeout))
            if probe is not None:  # new handoffs only while the other traffic is offered
                await asyncio.sleep(args.seconds)
                probe.stop_sending()
            load = await driving
            if probe is not None:
                await probe.finish()
            t_end = time.monotonic()
            busy1, self1, cpu1 = machine_busy_seconds(), time.process_time(), cpu_of(pids)
            await settle_writes(stack.mongo_uri)
            t_settled = time.monotonic()
            ops1 = await mongo_ops(stack.mongo_uri)
            records1 = await topic_records(stack.kafka_bootstrap)
            elapsed_cpu = t_end - load.t_start
        finally:
            await counter.close()
        restarts = stack.restarts()
    finally:
        await asyncio.to_thread(stack.stop)

    # ------------------------------------------------------------------ report
    acc = load.accounting
    assert acc is not None
    delta = ops_delta(ops0, ops1)
    window = t_settled - load.t_start
    writes = writes_of(delta) - idle_rate * window
    per_msg = writes / max(1, acc.stored)
    floor_msgs = floor_docs / per_msg if per_msg > 0 else float("nan")
    sent_rate = len(load.sends) / load.send_seconds
    while_arriving = (stored_by(load, load.send_seconds) or 0) / load.send_seconds
    print()
    print("=" * 100)
    print(f"bench_throughput: {args.visitors} visitors, "
          + (f"unpaced ({args.in_flight} in flight)" if args.unpaced else f"offered {args.rate:g} msg/s")
          + f" for {args.seconds:g}s" + (f", {args.preload:,} messages preloaded" if args.preload else ""))
    print("backlog over time (accepted, not yet stored):")
    peak = print_backlog(load)
    print()
    print(f"sent            {len(load.sends):7d} in {load.send_seconds:6.1f}s = {sent_rate:7.1f} msg/s")
    print(f"accepted (2xx)  {acc.accepted:7d}   {latency_line(load)}")
    print(f"                         the load driver alone, against a server that does nothing, {args.in_flight} open: "
          f"{ceiling[0]:,.0f} POSTs/s, p50 {ceiling[1]:.1f} ms, p99 {ceiling[2]:.1f} ms")
    if probe is not None:
        print(probe.line())
    print(f"stored while arriving: {stored_by(load, load.send_seconds) or 0} by the last POST = {while_arriving:.1f} msg/s")
    if load.t_drained is not None:
        e2e = acc.stored / (load.t_drained - load.t_start)
        print(f"end to end: all {acc.stored} stored and answered {load.t_drained - load.t_start:.1f}s after the first "
              f"POST = {e2e:.1f} msg/s")
    else:
        e2e = float("nan")
        print(f"end to end: NOT drained within {args.drain_timeout:g}s after the last POST")
    print(f"stored {acc.stored} (exactly once {acc.exactly_once}), duplicated {acc.duplicated}, lost {acc.lost}"
          f"{' e.g. ' + str(acc.lost_examples) if acc.lost_examples else ''}, stored though not acknowledged "
          f"{acc.stored_unacked}; answered by the AI {acc.answered}")
    print(f"max backlog {peak}   (the bench's own Mongo look-ups: {counter.polls} polls by _id, "
          f"{1000 * counter.poll_seconds / max(1, counter.polls):.0f} ms each on average)")
    if restarts:
        print(f"service restarts during the run: {restarts}")
    print()
    op = delta["opcounters"]
    print(f"Mongo-wire server over the run ({window:.0f}s): " + ", ".join(f"{k} {v}" for k, v in op.items())
          + f"; idle writes {idle_rate:.1f}/s subtracted")
    reads = sum(op.get(k, 0) for k in ("query", "getmore", "command"))
    print(f"writes per visitor message (measured): {per_msg:.2f}   (reads and other commands: "
          f"{reads / max(1, acc.stored):.2f})")
    # `top`: writeLock counts every write command of a collection (findAndModify included);
    # each kind's server time (find = queries; count, distinct, findAndModify = commands).
    n = max(1, acc.stored)
    per_ns = sorted(delta["top"].items(), key=lambda kv: -kv[1].get("total", (0, 0))[1])
    if per_ns:
        print("  by collection, per message: write commands; server time (all commands, then by kind):")
        for ns, sec in per_ns[:10]:
            kinds = "  ".join(f"{k} {sec[k][0] / n:.2f}x {sec[k][1] / 1000 / n:.1f}ms"
                              for k in ("queries", "getmore", "insert", "update", "remove", "commands") if k in sec)
            print(f"    {ns:<36} {sec.get('writeLock', (0, 0))[0] / n:5.2f} writes {sec.get('total', (0, 0))[1] / 1000 / n:7.1f} ms"
                  f"   ({kinds})")
    print(f"floor: bare insert_many ({FLOOR_BATCH}/batch, the messages collection's 2 secondary indexes) "
          f"{floor_docs:,.0f} docs/s / {per_msg:.2f} writes per message = {floor_msgs:,.0f} msg/s")
    print(f"       (without secondary indexes: {floor_bare:,.0f} docs/s = {floor_bare / per_msg:,.0f} msg/s)")
    print(f"ratio end-to-end / floor: {e2e / floor_msgs:.3f}   (stored while arriving / floor: "
          f"{while_arriving / floor_msgs:.3f})")
    records = {t: records1[t] - records0.get(t, 0) for t in records1 if records1[t] - records0.get(t, 0)}
    print(f"bus records per visitor message: {sum(records.values()) / n:.2f}   ("
          + ", ".join(f"{t} {c / n:.2f}" for t, c in sorted(records.items(), key=lambda kv: -kv[1])) + ")")
    print()
    print(f"CPU over the load ({elapsed_cpu:.0f}s, first POST to all answered):")
    for name in sorted(cpu1, key=lambda n: -(cpu1[n] - cpu0.get(n, cpu1[n]))):
        if name in cpu0:
            used = cpu1[name] - cpu0[name]
            print(f"  {name:<11} {used * 1000 / max(1, acc.stored):6.2f} ms per message   "
                  f"{100 * used / elapsed_cpu:5.1f} % of a core")
    stack_cpu = sum(cpu1[n] - cpu0[n] for n in cpu1 if n in cpu0)
    load_gen = self1 - self0
    others = (busy1 - busy0) - stack_cpu - load_gen
    per_msg_cpu = 1000 * stack_cpu / max(1, acc.stored)
    print(f"  {'all of it':<11} {per_msg_cpu:6.2f} ms per message: {os.cpu_count()} cores could carry at most "
          f"{os.cpu_count() * 1000 / per_msg_cpu:,.0f} msg/s at this cost")
    print(f"  {'load driver':<11} {100 * load_gen / elapsed_cpu:5.1f} % of a core (this process)")
    print(f"  machine: {100 * (busy1 - busy0) / elapsed_cpu:.0f} % of one core busy of {100 * os.cpu_count():.0f} %; "
          f"processes outside this stack and bench: {100 * max(0.0, others) / elapsed_cpu:.0f} % "
          f"(load average now {os.getloadavg()[0]:.1f})")
    print("=" * 100)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_throughput")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=200, help="messages/s offered (paced)")
    parser.add_argument("--visitors", type=int, default=100)
    parser.add_argument("--unpaced", action="store_true", help="no pacing: --in-flight POSTs open at all times")
    parser.add_argument("--in-flight", type=int, default=200, help="most POSTs open at once")
    parser.add_argument("--preload", type=int, default=0, help="old messages to store first (e.g. 1000000)")
    parser.add_argument("--floor-seconds", type=float, default=5)
    parser.add_argument("--idle-seconds", type=float, default=5, help="idle writes measured before the load")
    parser.add_argument("--drain-timeout", type=float, default=600)
    parser.add_argument("--handoff-probes", type=float, default=0, metavar="SECONDS",
                        help="meanwhile, a new visitor asks for a person every SECONDS; prints how long each "
                             "handoff took to reach a logged-in dashboard")
    parser.add_argument("--keep", action="store_true", help="keep the stack's directory (logs, data)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
