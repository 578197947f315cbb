"""The load driver the benches share (bench_throughput, reliability).

Not a bench by itself. It gives them:

- `Stack`: a whole separate stack on free ports in its own directory, started one of two ways:
  `mode="runner"` exactly as `./handoff start` does (`deploy.stack start` with
  `separate_stack_env`: the runner supervises and restarts a service that dies), or
  `mode="own"`: the same servers and services started by this process (`deploy.infra` +
  `deploy.stack.service_env`), so an infrastructure server can be killed and started again
  in place (same port, same data dir) — the runner stops everything when one dies. In "own"
  mode this process restarts a service that exits (after 1 s), as the runner would.
  Either way only processes this stack started are ever signalled, by PID. "own" mode can
  also run something (`before_services`, e.g. preloading Mongo) between the servers and the
  services.
- `drive()`: widget traffic over HTTP, as `services/channels/static/widget.js` sends it:
  `POST /web/{chatbot}/messages {client_message_id, text}` (with the visitor's token) from N visitors (each
  visitor its own conversation), paced at a target rate or unpaced with K in flight, over
  `httpx.AsyncClient` connection pools (`ClientPool`: several small ones, see there). Like the
  widget, a 5xx or a connection error is retried with backoff under the same
  client_message_id. Every attempt's latency and status is recorded. `driver_ceiling()`
  measures what the driver itself manages against a server that does nothing.
- `QueueCount`: what the queue stored, read from its Mongo (database `handoff_queue`,
  collection `messages`, see services/queue/store.py): while the load runs, the messages not
  yet seen stored are looked up by the _id the services derive (cheap however much is stored:
  the backlog over time); at the end the exact accounting, reading the run's conversations:
  sent / accepted / stored / stored once / lost / duplicated (by text, so a copy under another
  id counts too) / answered by the AI (by the reply's derived id).
- `mongo_ops()`: the Mongo-wire server's own counters (serverStatus opcounters, `top` per
  collection), to count the writes one visitor message needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
from pymongo import AsyncMongoClient

from deploy.infra import (
    Infra,
    Server,
    start_kafka,
    start_mongo,
    start_redis,
)
from deploy.stack import SERVICES, Ports, command_env, separate_stack_env, service_env
from services.channels.visitors import WidgetTokens
from shared.ids import conversation_id_for, derived_id

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
CHATBOT = "demo"
QUEUE_DB = "handoff_queue"  # the runner's MONGODB_DB for the queue (deploy.stack.command_env)
INFRA_NAMES = ("kafka", "redis", "mongo")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(f) for f in fields[11:15]) / TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat), to tell how much of the
    machine processes outside the measured stack took meanwhile."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / TICKS


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# ---------------------------------------------------------------------------- the stack
class Stack:
    """A separate local stack in `data_dir` (see the module docstring for the two modes)."""

    def __init__(self, data_dir: Path, mode: str = "runner",
                 before_services: Callable[[Stack], None] | None = None) -> None:
        assert mode in ("runner", "own")
        assert before_services is None or mode == "own", "the runner starts the services with the servers"
        self.mode = mode
        self.before_services = before_services  # own mode: runs once the servers are up
        self.data_dir = data_dir
        self._pick_ports()
        # own mode
        self.infra: dict[str, Server] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.own_restarts: Counter[str] = Counter()
        self._stopping = False
        self._watch: threading.Thread | None = None
        self._lock = threading.Lock()

    def _pick_ports(self) -> None:
        self.env = separate_stack_env(self.data_dir)
        base = int(self.env["HANDOFF_PORT_BASE"])
        self.ports = Ports(kafka=int(self.env["HANDOFF_KAFKA_PORT"]), redis=int(self.env["HANDOFF_REDIS_PORT"]),
                           mongo=int(self.env["HANDOFF_MONGO_PORT"]), gateway=base, channels=base + 1,
                           queue=base + 2, intake=base + 3, summarizer=base + 4)
        self.run_dir = Path(self.env["HANDOFF_RUN_DIR"])
        self.log_dir = self.run_dir / "logs"

    # -- addresses
    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def channels_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.channels}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.ports.mongo}/?retryWrites=false"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    # -- start / stop
    def start(self, attempts: int = 3) -> None:
        """Start; on a failure (e.g. another program took one of the free ports meanwhile),
        stop what was started and try again on other ports."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
                return
            except Exception as exc:
                self.stop()
                if attempt == attempts:
                    raise
                log(f"stack start failed ({str(exc).strip().splitlines()[-1][:200]}); again on other ports")
                self._stopping = False
                self.infra, self.procs = {}, {}
                self._pick_ports()

    def _start_once(self) -> None:
        t0 = time.monotonic()
        if self.mode == "runner":
            r = subprocess.run([sys.executable, "-m", "deploy.stack", "start"], cwd=ROOT, env=self.env, check=False,
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                raise RuntimeError(f"stack did not start:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        else:
            self._start_own()
        log(f"stack up ({self.mode} mode) in {time.monotonic() - t0:.1f}s: channels {self.channels_url}, "
            f"mongo {self.ports.mongo}, redis {self.ports.redis}, kafka {self.ports.kafka}; logs {self.log_dir}")

    def stop(self) -> None:
        if self.mode == "runner":
            subprocess.run([sys.executable, "-m", "deploy.stack", "stop"], cwd=ROOT, env=self.env, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
            return
        self._stopping = True
        if self._watch is not None:
            self._watch.join(5)
        for name in reversed(SERVICES):
            proc = self.procs.get(name)
            if proc is not None:
                _stop_group(proc)
        for name in reversed(INFRA_NAMES):
            if name in self.infra:
                self.infra[name].stop()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- own mode
    def _infra_obj(self) -> Infra:
        return Infra(self.infra["kafka"], self.infra["redis"], self.infra["mongo"])

    def _spawn_service(self, name: str) -> subprocess.Popen:
        env = service_env(name, self._infra_obj(), self.ports)
        env = {k: v for k, v in env.items() if not k.startswith("OPENAI_")}  # offline AI, as separate_stack_env
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as out:
            return subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def _start_own(self) -> None:
        from shared.bus import ensure_topics

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.infra["kafka"] = start_kafka(self.ports.kafka, self.log_dir)
        self.infra["redis"] = start_redis(self.ports.redis, self.log_dir)
        self.infra["mongo"] = start_mongo(self.ports.mongo, self.log_dir, self.data_dir / "mongo")
        asyncio.run(ensure_topics(self.kafka_bootstrap))
        if self.before_services is not None:
            self.before_services(self)
            self.before_services = None  # not again on a retry of the start
        for group in ((SERVICES[0],), SERVICES[1:]):  # the queue first, as the runner does
            for name in group:
                self.procs[name] = self._spawn_service(name)
            for name in group:
                self._wait_ready_own(name)
        self.run_cli("queue", "seed-chatbot", "--id", CHATBOT, "--name", "Demo Shop", "--handoff-on", *UNLIMITED_WIDGET)
        self._watch = threading.Thread(target=self._supervise, daemon=True)
        self._watch.start()

    def run_cli(self, service: str, *args: str) -> None:
        """Own mode: a service's CLI command against this stack (e.g. seed-chatbot, create-agent)."""
        env = {k: v for k, v in command_env(service, self._infra_obj().env()).items() if not k.startswith("OPENAI_")}
        r = subprocess.run([sys.executable, "-m", f"services.{service}", *args], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"{service} {args[0]} failed:\n{r.stdout}\n{r.stderr}")

    def _wait_ready_own(self, name: str, timeout: float = 300) -> None:
        port = getattr(self.ports, name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.log_dir / (name + '.log')}")
            with contextlib.suppress(Exception):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{name} not ready after {timeout}s")

    def _supervise(self) -> None:
        """Own mode: a service that exits is started again after 1 s (what the runner does first)."""
        while not self._stopping:
            for name, proc in list(self.procs.items()):
                if self._stopping:
                    return
                with self._lock:
                    if proc.poll() is None:
                        continue
                    log(f"{name} exited with {proc.returncode}; restarting it in 1s")
                time.sleep(1)
                with self._lock:
                    if self._stopping:
                        continue
                    self.own_restarts[name] += 1
                    self.procs[name] = self._spawn_service(name)
            time.sleep(0.3)

    def kill_infra(self, name: str) -> None:
        assert self.mode == "own", "the runner stops the whole stack when infrastructure dies"
        server = self.infra[name]
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)

    def start_infra(self, name: str) -> None:
        """Start an infrastructure server again on its port (and data dir, for Mongo)."""
        assert self.mode == "own"
        if name == "kafka":
            self.infra[name] = start_kafka(self.ports.kafka, self.log_dir)
        elif name == "redis":
            self.infra[name] = start_redis(self.ports.redis, self.log_dir)
        else:
            self.infra[name] = start_mongo(self.ports.mongo, self.log_dir, self.data_dir / "mongo")

    # -- either mode
    def pids(self) -> dict[str, int]:
        """The current PID of every process of this stack (runner excluded)."""
        if self.mode == "runner":
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                pids = json.loads((self.run_dir / "stack.json").read_text())["pids"]
                pids.pop("runner", None)
                return pids
            return {}
        return {**{n: s.proc.pid for n, s in self.infra.items()},
                **{n: p.pid for n, p in self.procs.items() if p.poll() is None}}

    def restarts(self) -> dict[str, int]:
        if self.mode == "runner":
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                state = json.loads((self.run_dir / "stack.json").read_text())
                return {n: h.get("count", 0) for n, h in state.get("restarts", {}).items() if h.get("count")}
            return {}
        return dict(self.own_restarts)

    def kill_service(self, name: str) -> int:
        """kill -9 one service process of this stack (the runner, or own mode, restarts it)."""
        pid = self.pids()[name]
        os.kill(pid, signal.SIGKILL)
        return pid

    async def readiness(self, client: httpx.AsyncClient) -> dict[str, tuple[int, str]]:
        """name -> (status code or 0 when unreachable, body) of every service's /readyz."""
        async def one(name: str) -> tuple[str, tuple[int, str]]:
            try:
                r = await client.get(f"http://127.0.0.1:{getattr(self.ports, name)}/readyz", timeout=3)
                return name, (r.status_code, r.text[:300])
            except httpx.HTTPError as exc:
                return name, (0, type(exc).__name__)
        return dict(await asyncio.gather(*(one(n) for n in SERVICES)))

    def log_sizes(self) -> dict[Path, int]:
        return {p: p.stat().st_size for p in self.log_dir.glob("*.log")}

    def logs_since(self, sizes: dict[Path, int]) -> dict[str, str]:
        out = {}
        for p in self.log_dir.glob("*.log"):
            with open(p, "rb") as f:
                f.seek(sizes.get(p, 0))
                out[p.stem] = f.read().decode(errors="replace")
        return out


def _stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # each service leads its own session/group
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# ---------------------------------------------------------------------------- the Mongo side
# The ids the stack gives a widget message, derived as the services derive them (so the bench
# can look them up by _id, the one index that stays cheap however much is stored: a count over
# a range of `messages` scans the collection on this Mongo-wire server, 18 s at 100k documents):
#   conversation: shared.ids.conversation_id_for(chatbot, "web", visitor_id)
#   visitor message: services/queue/incoming.py visitor_message_id(conversation, client_message_id)
#   the AI's reply: services/intake/domain.py reply_message_id(visitor message, 0)
# warm_up() checks them on a real message first and stops the bench if they no longer match.
# The bench's visitors all come from one address at rates no person reaches: the chatbot's
# widget limits are lifted for it (what they cost is a Redis round trip, measured all the same).
UNLIMITED_WIDGET = ["--widget-messages-per-visitor", "1000000/minute", "--widget-messages-per-ip", "1000000/minute",
                    "--widget-sessions-per-ip", "1000000/hour"]
# The stack this driver starts signs visitor tokens with this key (deploy.stack gives it to
# channels); the driver signs its visitors' tokens itself, so their ids stay the derived ones.
os.environ.setdefault("WIDGET_TOKEN_SECRET", secrets.token_urlsafe(32))
_TOKENS = WidgetTokens(os.environ["WIDGET_TOKEN_SECRET"].encode(), None, ttl_s=7 * 24 * 3600, grace_s=0)  # type: ignore[arg-type]


def widget_auth(chatbot: str, visitor: str) -> dict[str, str]:
    """The Authorization header of `visitor`'s widget (a token as channels issues them)."""
    return {"Authorization": "Bearer " + _TOKENS.issue(chatbot, visitor_id=visitor).token}


def visitor_id_for(tag: str, n: int) -> str:
    """The widget's visitor id format (shared.ids.new_visitor_id): v_ + 16 hex."""
    return "v_" + hashlib.sha256(f"{tag}:{n}".encode()).hexdigest()[:16]


def visitor_message_id(conversation_id: str, client_message_id: str) -> str:
    return derived_id("m_", conversation_id, "visitor", client_message_id)


def reply_id_for(visitor_message_id: str) -> str:
    return derived_id("m_", visitor_message_id, "ai", "0")


class IdsChanged(RuntimeError):
    """The services derive message ids differently from what this driver assumes."""


@dataclass
class Accounting:
    sent: int
    accepted: int
    stored_docs: int  # visitor messages of this run in Mongo (copies included)
    stored: int  # distinct messages among them
    exactly_once: int
    duplicated: int  # extra copies
    lost: int  # accepted (2xx) but not stored
    stored_unacked: int  # not acknowledged to the visitor, stored anyway (harmless: the widget retries)
    answered: int  # stored visitor messages with their AI reply
    ai_total: int  # AI messages in the run's conversations
    lost_texts: list[str] = field(default_factory=list)

    @property
    def lost_examples(self) -> list[str]:
        return self.lost_texts[:5]

    @property
    def complete(self) -> bool:
        return self.lost == 0 and self.answered >= self.stored


class QueueCount:
    """What the queue stored of the messages `track`ed, in its Mongo.

    While the load runs, `poll()` looks up by _id only the messages not yet seen stored (the
    oldest `max_ids` of them) and then the AI replies still missing: its cost follows the
    backlog, not the data stored. `exact()` at the end reads every message of the run's
    conversations (index on conversation_id) and counts by text, so a copy stored under
    another id would show as a duplicate."""

    def __init__(self, mongo_uri: str, chatbot: str = CHATBOT, max_ids: int = 1000) -> None:
        self.client: AsyncMongoClient = AsyncMongoClient(mongo_uri, tz_aware=True, serverSelectionTimeoutMS=3000,
                                                         connectTimeoutMS=3000, socketTimeoutMS=60000)
        self.messages = self.client[QUEUE_DB]["messages"]
        self.chatbot = chatbot
        self.max_ids = max_ids
        self._pending_v: dict[str, Send] = {}
        self._pending_ai: dict[str, Send] = {}
        self.stored_v: dict[str, Send] = {}  # visitor message id -> its send
        self.answered = 0
        self.polls = 0
        self.poll_seconds = 0.0

    async def close(self) -> None:
        await self.client.close()

    def track(self, send: Send) -> None:
        send.conversation_id = conversation_id_for(self.chatbot, "web", send.visitor)
        send.message_id = visitor_message_id(send.conversation_id, send.cmid)
        self._pending_v[send.message_id] = send

    def stored_texts(self) -> set[str]:
        return {s.text for s in self.stored_v.values()}

    async def _found(self, ids: list[str]) -> set[str]:
        return {d["_id"] async for d in self.messages.find({"_id": {"$in": ids}}, {"_id": 1})}

    async def poll(self) -> tuple[int, int] | None:
        """(visitor messages stored, AI replies stored) so far; None while Mongo does not answer."""
        t0 = time.monotonic()
        try:
            ids = list(itertools.islice(self._pending_v, self.max_ids))
            if ids:
                for mid in await self._found(ids):
                    send = self._pending_v.pop(mid)
                    self.stored_v[mid] = send
                    self._pending_ai[reply_id_for(mid)] = send
            ids = list(itertools.islice(self._pending_ai, self.max_ids))
            if ids:
                for rid in await self._found(ids):
                    self._pending_ai.pop(rid)
                    self.answered += 1
        except Exception:  # noqa: BLE001 - a Mongo outage is one of the faults
            return None
        finally:
            self.polls += 1
            self.poll_seconds += time.monotonic() - t0
        return len(self.stored_v), self.answered

    async def exact(self, sends: list[Send]) -> Accounting:
        by_text = {s.text: s for s in sends}
        convs = sorted({s.conversation_id for s in sends})
        docs: list[dict] = []
        for i in range(0, len(convs), 50):
            docs += await self.messages.find({"conversation_id": {"$in": convs[i:i + 50]}},
                                             {"text": 1, "sender": 1}).to_list()
        ours = [d for d in docs if d.get("sender") == "visitor" and d.get("text") in by_text]
        copies = Counter(d["text"] for d in ours)
        ai_ids = {d["_id"] for d in docs if d.get("sender") == "ai"}
        answered_texts = {d["text"] for d in ours if reply_id_for(d["_id"]) in ai_ids}
        lost = [s for s in sends if s.accepted and s.text not in copies]
        return Accounting(
            sent=len(sends), accepted=sum(s.accepted for s in sends), stored_docs=len(ours), stored=len(copies),
            exactly_once=sum(1 for c in copies.values() if c == 1), duplicated=sum(c - 1 for c in copies.values()),
            lost=len(lost), stored_unacked=sum(1 for t in copies if not by_text[t].accepted),
            answered=len(answered_texts), ai_total=len(ai_ids), lost_texts=[s.text for s in lost])


async def mongo_ops(mongo_uri: str) -> dict[str, Any]:
    """serverStatus opcounters and `top` (per namespace: count and server time of each kind)."""
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri, serverSelectionTimeoutMS=3000)
    try:
        status = await client.admin.command("serverStatus")
        top: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            top = (await client.admin.command("top")).get("totals", {})
        return {"opcounters": dict(status.get("opcounters", {})), "top": top}
    finally:
        await client.close()


def ops_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    op = {k: after["opcounters"].get(k, 0) - before["opcounters"].get(k, 0) for k in after["opcounters"]}
    per_ns: dict[str, dict[str, tuple[int, int]]] = {}
    for ns, sections in after["top"].items():
        if not isinstance(sections, dict):
            continue
        old = before["top"].get(ns, {})
        for sec, v in sections.items():
            if not isinstance(v, dict):
                continue
            o = old.get(sec, {}) if isinstance(old, dict) else {}
            d = (v.get("count", 0) - o.get("count", 0), v.get("time", 0) - o.get("time", 0))
            if d[0]:
                per_ns.setdefault(ns, {})[sec] = d
    return {"opcounters": op, "top": per_ns}


async def topic_records(bootstrap: str) -> dict[str, int]:
    """Records written so far per topic (the sum of its partitions' end offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        topics = sorted(t for t in await consumer.topics() if not t.startswith("__"))
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await consumer.end_offsets(parts) if parts else {}
        counts: dict[str, int] = dict.fromkeys(topics, 0)
        for tp, end in ends.items():
            counts[tp.topic] += end
        return counts
    finally:
        await consumer.stop()


WRITE_KINDS = ("insert", "update", "delete")


def writes_of(delta: dict[str, Any]) -> int:
    """Write commands: insert, update (findAndModify included) and delete."""
    return sum(delta["opcounters"].get(k, 0) for k in WRITE_KINDS)


# ---------------------------------------------------------------------------- the HTTP side
@dataclass
class Send:
    visitor: str
    cmid: str
    text: str
    started: float = 0.0  # monotonic
    attempts: list[tuple[int, float]] = field(default_factory=list)  # (status or 0 for a network error, ms)
    accepted: bool = False
    done_at: float = 0.0
    conversation_id: str = ""  # set by QueueCount.track
    message_id: str = ""


@dataclass
class Sample:
    t: float  # seconds since the load began
    sent: int
    accepted: int
    stored: int | None
    ai: int | None
    in_flight: int


@dataclass
class LoadRun:
    sends: list[Send]
    samples: list[Sample]
    t_start: float
    t_sent: float  # when the last POST finished
    t_drained: float | None  # when every accepted message was stored (and answered, if asked)
    accounting: Accounting | None = None

    @property
    def send_seconds(self) -> float:
        return self.t_sent - self.t_start

    def latencies(self) -> list[float]:
        return [ms for s in self.sends for _, ms in s.attempts]

    def statuses(self) -> Counter[int]:
        return Counter(st for s in self.sends for st, _ in s.attempts)


class Traffic:
    """The messages of one run: `n` messages from `visitors` visitors, round-robin; the first
    `handoffs` visitors beyond those each send one explicit request for a person, spread over
    the first third of the stream (the AI answers it with the handoff notice), so there are
    open handoffs in the dashboard's index."""

    def __init__(self, tag: str, visitors: int, handoffs: int = 0) -> None:
        self.tag, self.visitors, self.handoffs = tag, visitors, handoffs
        self.counter = 0
        self.produced: list[Send] = []  # every message handed out so far, in order
        self._handoff_at: dict[int, int] = {}

    def plan_handoffs(self, total: int) -> None:
        if self.handoffs:
            span = max(self.handoffs, total // 3)
            self._handoff_at = {int(j * span / self.handoffs) + 1: j for j in range(self.handoffs)}

    def next(self) -> Send:
        i = self.counter
        self.counter += 1
        if i in self._handoff_at:
            j = self._handoff_at[i]
            send = Send(visitor_id_for(self.tag + "-h", j), f"m_{i}",
                        f"I want to talk to a human please (ref {self.tag}-{i})")
        else:
            send = Send(visitor_id_for(self.tag, i % self.visitors), f"m_{i}",
                        f"Question {self.tag}-{i}: where is my parcel?")
        self.produced.append(send)
        return send


async def post_message(client: httpx.AsyncClient, chatbot: str, send: Send, retries: int) -> None:
    """POST as the widget does; retry a 5xx or a network error with the same client_message_id."""
    send.started = time.monotonic()
    body = {"client_message_id": send.cmid, "text": send.text}
    auth = widget_auth(chatbot, send.visitor)
    for attempt in range(retries + 1):
        t = time.perf_counter()
        try:
            r = await client.post(f"/web/{chatbot}/messages", json=body, headers=auth)
            status = r.status_code
        except httpx.HTTPError:
            status = 0
        send.attempts.append((status, (time.perf_counter() - t) * 1000))
        if 200 <= status < 300:
            send.accepted = True
            break
        if 400 <= status < 500 or attempt == retries:
            break
        await asyncio.sleep(0.5 * 2 ** attempt)
    send.done_at = time.monotonic()


def http_client(base_url: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0),
                             limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


class ClientPool:
    """Several httpx.AsyncClients of at most `PER_CLIENT` connections each: one client's pool
    gets slower with every connection it holds (httpcore matches each request against every
    connection), measured here at 200 connections: ~20 requests/s against a server that does
    nothing, ~150/s as 20 clients of 10. A visitor always uses the same client."""

    PER_CLIENT = 10

    def __init__(self, base_url: str, connections: int) -> None:
        n = max(1, -(-connections // self.PER_CLIENT))
        self.clients = [http_client(base_url, min(connections, self.PER_CLIENT)) for _ in range(n)]

    def for_visitor(self, visitor: str) -> httpx.AsyncClient:
        return self.clients[int(visitor[-6:], 16) % len(self.clients)]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients))


async def warm_up(stack: Stack, counter: QueueCount, chatbot: str = CHATBOT, timeout: float = 120) -> float:
    """One message through the whole path (channels knows the chatbot, the consumers have
    joined, the AI answers) before the clock starts; returns how long it took. Checks that
    the message and its reply are stored under the ids this driver derives (IdsChanged if not)."""
    t0 = time.monotonic()
    visitor = visitor_id_for("warm-up", int(time.time() * 1000))
    async with http_client(stack.channels_url, 2) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                r = await client.post(f"/web/{chatbot}/messages", json={"client_message_id": "warm", "text": "warm-up"},
                                      headers=widget_auth(chatbot, visitor))
                if r.status_code < 300:
                    break
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("channels never accepted the warm-up message")
            await asyncio.sleep(0.3)
    conv = conversation_id_for(chatbot, "web", visitor)
    mid = visitor_message_id(conv, "warm")
    rid = reply_id_for(mid)
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(Exception):
            if await counter.messages.find_one({"_id": rid}, {"_id": 1}) is not None:
                return time.monotonic() - t0
            if time.monotonic() - t0 > 20:
                docs = await counter.messages.find({"conversation_id": conv}, {"_id": 1, "sender": 1}).to_list()
                if any(d["sender"] == "ai" for d in docs) or (docs and not any(d["_id"] == mid for d in docs)):
                    raise IdsChanged(f"the warm-up conversation holds {docs}, not {mid} and its reply {rid}: "
                                     "the services derive message ids differently now; update bench/load.py")
        await asyncio.sleep(0.3)
    raise RuntimeError("the warm-up message was never answered by the AI")


async def drive(
    stack: Stack, counter: QueueCount, traffic: Traffic, *,
    messages: int | None = None, seconds: float | None = None, rate: float | None = None,
    in_flight: int = 50, retries: int = 5, wait_ai: bool = True, drain_timeout: float = 300,
    sample_every: float = 1.0, chatbot: str = CHATBOT,
    on_sample: Callable[[Sample], Awaitable[None] | None] | None = None,
    done_when: Callable[[LoadRun], Awaitable[bool]] | None = None,
    give_up: asyncio.Event | None = None,
) -> LoadRun:
    """Send the traffic, then poll the queue's Mongo until every accepted message is stored
    (and answered by the AI, `wait_ai`) or `drain_timeout` passes after the last POST, or
    `give_up` is set (the caller decided the missing ones are lost).

    Paced (`rate`): message i leaves at start + i/rate, at most `in_flight` POSTs open at once
    (the POST starts late rather than piling up). Unpaced (`rate=None`): `in_flight` workers
    each send their next message as soon as the last one was answered. The stream ends after
    `messages` messages or `seconds`, whichever is given (both: whichever comes first)."""
    assert messages or seconds
    total = messages if messages else (int(rate * seconds) if rate else None)
    traffic.plan_handoffs(total or 10**6)
    sends: list[Send] = []
    samples: list[Sample] = []
    open_posts = 0
    t_start = time.monotonic()
    deadline = t_start + seconds if seconds else None
    sending = True

    async with ClientPool(stack.channels_url, in_flight) as pool:

        async def one(send: Send) -> None:
            nonlocal open_posts
            open_posts += 1
            try:
                await post_message(pool.for_visitor(send.visitor), chatbot, send, retries)
            finally:
                open_posts -= 1

        def more() -> bool:
            if total is not None and traffic.counter >= total:
                return False
            return deadline is None or time.monotonic() < deadline

        async def paced() -> None:
            slots = asyncio.Semaphore(in_flight)
            tasks = []
            i = 0
            while more():
                due = t_start + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                send = traffic.next()
                counter.track(send)
                sends.append(send)
                task = asyncio.create_task(one(send))
                task.add_done_callback(lambda _t: slots.release())
                tasks.append(task)
                i += 1
            await asyncio.gather(*tasks)

        async def unpaced() -> None:
            async def worker() -> None:
                while more():
                    send = traffic.next()
                    counter.track(send)
                    sends.append(send)
                    await one(send)
            await asyncio.gather(*(worker() for _ in range(in_flight)))

        async def sampler() -> None:
            while True:
                t_poll = time.monotonic()
                c = await counter.poll()
                took = time.monotonic() - t_poll
                s = Sample(time.monotonic() - t_start, len(sends), sum(x.accepted for x in sends),
                           c[0] if c else None, c[1] if c else None, open_posts)
                samples.append(s)
                if on_sample is not None:
                    res = on_sample(s)
                    if asyncio.iscoroutine(res):
                        await res
                if not sending:
                    return
                # The polls' own load on the Mongo-wire server stays a small share of it.
                await asyncio.sleep(max(sample_every, 3 * took))

        sampling = asyncio.create_task(sampler())
        try:
            await (paced() if rate else unpaced())
        finally:
            sending = False
        t_sent = time.monotonic()
        await sampling

    run = LoadRun(sends, samples, t_start, t_sent, None)
    # Drain: the cheap polls first, then the exact accounting once they say all is there.
    accepted = sum(s.accepted for s in sends)
    drain_deadline = t_sent + drain_timeout
    exact_at = 0.0
    while time.monotonic() < drain_deadline and not (give_up is not None and give_up.is_set()):
        t_poll = time.monotonic()
        c = await counter.poll()
        now = time.monotonic()
        took = now - t_poll
        samples.append(Sample(now - t_start, len(sends), accepted, c[0] if c else None, c[1] if c else None, 0))
        if on_sample is not None:
            res = on_sample(samples[-1])
            if asyncio.iscoroutine(res):
                await res
        all_stored = c is not None and all(s.message_id in counter.stored_v for s in sends if s.accepted)
        if all_stored and (not wait_ai or c[1] >= c[0]) and now >= exact_at:
            try:
                acc = await counter.exact(sends)
            except Exception:  # noqa: BLE001 - Mongo away again: keep polling
                await asyncio.sleep(sample_every)
                continue
            complete = acc.lost == 0 and (not wait_ai or acc.answered >= acc.stored)
            if complete and (done_when is None or await done_when(run)):
                run.t_drained = now  # the poll that found everything
                run.accounting = acc
                break
            exact_at = now + 3  # the exact count disagrees: check again in a few seconds
        await asyncio.sleep(max(sample_every, 3 * took))
    if run.accounting is None:
        with contextlib.suppress(Exception):
            run.accounting = await counter.exact(sends)
    return run


# ---------------------------------------------------------------------------- reporting
def print_backlog(run: LoadRun, every: float = 5.0) -> int:
    """The backlog (accepted but not yet stored) over time; returns its maximum."""
    print("  t(s)   sent  accepted  stored  AI-replies  backlog  POSTs-open")
    last = -every
    peak = 0
    for s in run.samples:
        if s.stored is None:
            backlog_txt = "   (Mongo not answering)"
        else:
            backlog = max(0, s.accepted - s.stored)
            peak = max(peak, backlog)
            backlog_txt = f"{s.stored:7d} {s.ai:11d} {backlog:8d}"
        if s.t - last >= every or s is run.samples[-1]:
            print(f"  {s.t:5.0f} {s.sent:6d} {s.accepted:9d} {backlog_txt} {s.in_flight:10d}")
            last = s.t
    return peak


def stored_by(run: LoadRun, t: float) -> int | None:
    """The stored count of the last sample at or before t seconds."""
    best = None
    for s in run.samples:
        if s.t <= t and s.stored is not None:
            best = s.stored
    return best


def latency_line(run: LoadRun) -> str:
    lat = run.latencies()
    st = run.statuses()
    return (f"POST p50 {pct(lat, 50):.1f} ms  p99 {pct(lat, 99):.1f} ms  max {max(lat, default=0):.0f} ms  "
            f"mean {statistics.mean(lat) if lat else 0:.1f} ms  ({len(lat)} POSTs; statuses "
            + ", ".join(f"{k or 'network error'}: {v}" for k, v in sorted(st.items())) + ")")


# ---------------------------------------------------------------------------- the driver's own ceiling
async def driver_ceiling(in_flight: int, seconds: float = 3.0) -> tuple[float, float, float]:
    """What this driver manages against an HTTP server that does nothing (its own process,
    answers 202 at once): (requests/s, p50 ms, p99 ms) at `in_flight` open POSTs. Beside the
    system's figures it tells whether the driver, not the stack, limits them."""
    from deploy.infra import free_port, wait_for_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.load", "trivial-server", str(port)], cwd=ROOT,  # noqa: ASYNC220
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, proc=proc)
        lat: list[float] = []
        async with ClientPool(f"http://127.0.0.1:{port}", in_flight) as pool:
            t0 = time.monotonic()

            async def worker(w: int) -> None:
                i = 0
                while time.monotonic() - t0 < seconds:
                    t = time.perf_counter()
                    visitor = visitor_id_for("ceiling", w)
                    await pool.for_visitor(visitor).post(f"/web/{CHATBOT}/messages", json={
                        "client_message_id": f"m_{i}", "text": "x"}, headers=widget_auth(CHATBOT, visitor))
                    lat.append((time.perf_counter() - t) * 1000)
                    i += 1
            await asyncio.gather(*(worker(w) for w in range(in_flight)))
            took = time.monotonic() - t0
        return len(lat) / took, pct(lat, 50), pct(lat, 99)
    finally:
        _stop_group(proc, 5)


async def _trivial_server(port: int) -> None:
    body = b'{"accepted":true}'
    response = (b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["trivial-server"]:
        asyncio.run(_trivial_server(int(sys.argv[2])))
