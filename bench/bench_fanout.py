"""Fan-out: many logged-in dashboard sockets on one gateway process, one busy chatbot.

    python -m bench.bench_fanout [--sockets 1000] [--rate 100] [--seconds 30]
    python -m bench.bench_fanout --sockets 200 --seconds 5        # quick

Starts the embedded infrastructure (deploy/infra.py) and one gateway process
(`python -m services.gateway`, its default coalescing settings). An agent signs in once and
a separate client process opens `--sockets` websockets with that session, each subscribed
to the chatbot. Then `--rate` DashboardUpdates a second (a visitor message in one of 50
handed-off conversations: stats, row, conversation header, message) are published straight
onto `dashboard.updates` for `--seconds`, and the clients time each update from its publish
to the frame that carries it (every 10th socket parses its frames; the others count them).
No queue runs: the bench answers the gateway's one call to it (a subscribe's snapshot position).

Beside it, in the same run and on the same broker, the floor: a bare uvicorn + Starlette
websocket server (same uvicorn websocket implementation as the gateway) with a bare aiokafka
consumer on the same kind of topic, sending every update as its own frame (the update's JSON
wrapped as an `update` frame, encoded once) to the same number of sockets through a
per-socket queue and writer: the naive fan-out, without sessions, coalescing or anything else.

Printed per side: p50/p99 update-to-frame latency, frames/s and updates delivered/s (over the
drive and its drain), the process's CPU per delivered update (an update reaching one socket)
and per frame sent, and the RSS per idle socket (the process's RSS with every socket open and
subscribed, minus before, over the sockets). The gateway has no per-agent or per-address
socket limit at the time of writing; should one appear as a `WS_..._PER_...` setting, the
bench raises it above `--sockets` by environment. A measurement tool: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from bench.bench_live_latency import CHATBOT, EMAIL, PASSWORD, ROOT, Proc, run_cli, service_env
from bench.load import cpu_seconds, machine_busy_seconds, pct
from deploy.infra import Infra, free_port, start_infra
from shared.bus import ensure_topics
from shared.events import DashboardUpdate
from shared.views import ConversationView, HandoffRow, MessageView, Stats

EPOCH = "bench"
CONVERSATIONS = 50
SAMPLE_EVERY = 10
WARM_UP = 20


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------- the updates
def update_json(seq: int) -> bytes:
    """A visitor message in one of the chatbot's handed-off conversations, as the queue
    would publish it: fresh stats, the row, the conversation header and the message."""
    now = datetime.now(UTC)
    cid = f"cv_bench_{seq % CONVERSATIONS:03d}"
    since = now - timedelta(minutes=5)
    stats = Stats(chatbot_id=CHATBOT, open=CONVERSATIONS, oldest_waiting_since=since, today=CONVERSATIONS,
                  resolved_this_week=12, computed_at=now, today_ends_at=now + timedelta(hours=8))
    row = HandoffRow(conversation_id=cid, chatbot_id=CHATBOT, display_name=f"Visitor {seq % CONVERSATIONS}",
                     waiting_since=since, reason="User asked for a person", channel="web", message_count=seq)
    conv = ConversationView(conversation_id=cid, chatbot_id=CHATBOT, status="handed_off", channel="web",
                            visitor_id=f"v_{seq % CONVERSATIONS}", display_name=row.display_name,
                            reason=row.reason, waiting_since=since, message_count=seq, last_message_at=now,
                            last_message_preview=f"message {seq}", created_at=since, updated_at=now)
    msg = MessageView(message_id=f"m_{seq}", conversation_id=cid, sender="visitor",
                      text=f"message {seq}: is my order on its way?", created_at=now)
    return DashboardUpdate(chatbot_id=CHATBOT, conversation_id=cid, epoch=EPOCH, seq=seq, stats=stats,
                           row_upserted=row, conversation=conv, message=msg).model_dump_json().encode()


async def drive(bootstrap: str, topic: str, first: int, count: int, rate: float) -> dict[int, float]:
    """Publish `count` updates from seq `first` at `rate` a second; their publish instants."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    published: dict[int, float] = {}
    try:
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            seq = first + i
            body = update_json(seq)
            published[seq] = time.monotonic()
            await producer.send(topic, body, key=CHATBOT.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return published


# ---------------------------------------------------------------------- the queue's one answer
async def snapshot_server(port: int) -> asyncio.Server:
    """Stands in for the queue's internal API: every request gets the chatbot's (empty)
    snapshot, which is all a subscribe asks the queue for."""
    body = json.dumps({"chatbot_id": CHATBOT, "epoch": EPOCH, "seq": 0, "stats": None,
                       "handoffs": {"items": [], "next_cursor": None}}).encode()
    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(answer)
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", port)


# ---------------------------------------------------------------------- the client process
class Socket(asyncio.Protocol):
    """A minimal websocket client: the handshake, `subscribe`, then it counts frames (and,
    when `sampled`, parses them for the seqs they carry and the instant they came)."""

    def __init__(self, host: str, cookie: str | None, sampled: bool, stats: dict) -> None:
        self.host, self.cookie, self.sampled, self.stats = host, cookie, sampled, stats
        self.buf = bytearray()
        self.open = False
        self.subscribed = asyncio.get_running_loop().create_future()
        self.arrivals: list[tuple[int, float]] = []
        self.high = 0  # the highest seq seen: progress reads it, never the growing arrivals
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        cookie = f"Cookie: handoff_session={self.cookie}\r\n" if self.cookie else ""
        transport.write((f"GET /ws HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{cookie}\r\n").encode())

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n))
        self.transport.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in bytes(self.buf[:end]):
                self.transport.close()
                return
            del self.buf[:end + 4]
            self.open = True
            self.send(1, json.dumps({"type": "subscribe", "chatbot_id": CHATBOT}).encode())
        pos, buf = 0, self.buf
        while len(buf) - pos >= 2:
            opcode, n = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < head + n:
                break
            self.frame(opcode, bytes(buf[pos + head:pos + head + n]))
            pos += head + n
        del buf[:pos]

    def frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 9:
            self.send(10, payload)
            return
        if opcode == 8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.stats["closed"][code] = self.stats["closed"].get(code, 0) + 1
            self.transport.close()
            return
        if opcode != 1:
            return
        if not self.subscribed.done():
            if b'"subscribed"' in payload:
                self.subscribed.set_result(None)
            return
        self.stats["frames"] += 1
        updates = payload.count(b'"seq":') if payload.startswith(b'{"type":"updates"') else 1
        self.stats["updates"] += updates
        if self.sampled:
            now = time.monotonic()
            frame = json.loads(payload)
            entries = frame["updates"] if frame["type"] == "updates" else [frame["update"]]
            self.arrivals.extend((e["seq"], now) for e in entries)
            self.high = max(self.high, max(e["seq"] for e in entries))


async def client_main(port: int, cookie: str | None, n: int, out: str) -> None:
    """Open n sockets, report READY, then PROGRESS lines until told to stop (stdin), then
    write every sampled socket's arrivals to `out`."""
    loop = asyncio.get_running_loop()
    stats: dict = {"frames": 0, "updates": 0, "closed": {}}
    sockets: list[Socket] = []
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        async with gate:
            _, sock = await loop.create_connection(
                lambda: Socket(f"127.0.0.1:{port}", cookie, i % SAMPLE_EVERY == 0, stats), "127.0.0.1", port)
            sockets.append(sock)
            await asyncio.wait_for(sock.subscribed, 60)

    await asyncio.gather(*(one(i) for i in range(n)))
    print("READY", flush=True)
    stop = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stop.set)
    while not stop.is_set():
        sampled = [s for s in sockets if s.sampled]
        # O(sockets), not O(arrivals): a scan over every arrival so far blocked this loop for
        # longer and longer, and frames waiting meanwhile counted as the gateway's latency.
        low = min((s.high for s in sampled), default=0)
        print(f"PROGRESS {low} {stats['frames']} {stats['updates']} {sum(stats['closed'].values())}", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)
    Path(out).write_text(json.dumps({"arrivals": [s.arrivals for s in sockets if s.sampled], "stats": stats}))
    for s in sockets:
        s.transport.close()


class Clients:
    """The client process, driven over its stdin/stdout."""

    def __init__(self, port: int, cookie: str | None, n: int, out: Path) -> None:
        self.args = ["--client", str(port), "--cookie", cookie or "", "--sockets", str(n), "--out", str(out)]
        self.out = out
        self.proc: asyncio.subprocess.Process | None = None
        self.last = (0, 0, 0, 0)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bench_fanout", *self.args, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        while (line := await self.proc.stdout.readline()).strip() != b"READY":
            if not line:  # end of its output: it exited
                raise RuntimeError("the client process exited before its sockets were open")

    async def progress(self) -> tuple[int, int, int, int]:
        """(lowest last seq over sampled sockets, frames, updates, closed sockets)."""
        line = (await self.proc.stdout.readline()).decode().split()
        if line and line[0] == "PROGRESS":
            self.last = tuple(int(x) for x in line[1:5])
        return self.last

    async def finish(self) -> dict:
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(60):
                while await self.proc.stdout.readline():
                    pass
        await self.proc.wait()
        return json.loads(self.out.read_text())


# ---------------------------------------------------------------------- the bare floor
def bare_server(port: int, bootstrap: str, topic: str, fetch_wait_ms: int) -> None:
    import uvicorn
    from aiokafka import AIOKafkaConsumer
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    queues: set[asyncio.Queue] = set()

    async def ws(websocket) -> None:
        await websocket.accept()
        await websocket.receive_text()  # subscribe
        await websocket.send_text('{"type":"subscribed"}')
        queue: asyncio.Queue = asyncio.Queue()
        queues.add(queue)

        async def writer() -> None:
            while True:
                await websocket.send_text(await queue.get())

        task = asyncio.create_task(writer())
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            queues.discard(queue)
            task.cancel()

    async def relay() -> None:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                    fetch_max_wait_ms=fetch_wait_ms)
        await consumer.start()
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.position(tp)
        print("READY", flush=True)
        async for record in consumer:
            text = '{"type":"update","chatbot_id":"' + CHATBOT + '","update":' + record.value.decode() + "}"
            for queue in list(queues):
                queue.put_nowait(text)

    tasks: set[asyncio.Task] = set()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        tasks.add(asyncio.create_task(relay()))
        yield

    app = Starlette(routes=[WebSocketRoute("/ws", ws)], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio", lifespan="on")


# ---------------------------------------------------------------------- one side's run
async def measure(name: str, pid: int, port: int, cookie: str | None, infra: Infra, topic: str, args,
                  work: Path, first_seq: int) -> dict:
    before_kb = rss_kb(pid)
    clients = Clients(port, cookie, args.sockets, work / f"{name}.json")
    await clients.start()
    await asyncio.sleep(2)
    idle_kb = rss_kb(pid)
    # Warm-up: the consumer's fetch session, the first frames.
    await drive(infra.kafka_bootstrap, topic, first_seq, WARM_UP, 20)
    await asyncio.sleep(1)
    count = int(args.rate * args.seconds)
    first = first_seq + WARM_UP
    _, frames0, updates0, _ = await clients.progress()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    client0, busy0 = cpu_seconds(clients.proc.pid), machine_busy_seconds()
    reader = asyncio.create_task(_follow(clients))
    published = await drive(infra.kafka_bootstrap, topic, first, count, args.rate)
    last = first + count - 1
    deadline = time.monotonic() + args.drain_s
    while clients.last[0] < last and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    client1, busy1 = cpu_seconds(clients.proc.pid), machine_busy_seconds()
    _, frames1, updates1, closed = clients.last
    result = await clients.finish()
    latencies = [(at - published[seq]) * 1000 for socket in result["arrivals"] for seq, at in socket
                 if seq in published]
    delivered = updates1 - updates0
    frames = frames1 - frames0
    cpu = (cpu1 or 0) - (cpu0 or 0)
    return {"name": name, "p50": pct(latencies, 50), "p99": pct(latencies, 99), "samples": len(latencies),
            "expected": count * len(result["arrivals"]), "window_s": t1 - t0, "frames": frames,
            "delivered": delivered, "cpu_s": cpu, "cpu_per_update_us": cpu / max(1, delivered) * 1e6,
            "cpu_per_frame_us": cpu / max(1, frames) * 1e6, "idle_kb_per_socket": (idle_kb - before_kb) / args.sockets,
            "closed": closed, "drained": clients.last[0] >= last, "client_cpu_s": (client1 or 0) - (client0 or 0),
            "machine_busy_s": busy1 - busy0}


async def _follow(clients: Clients) -> None:
    while True:
        await clients.progress()


def socket_limit_env(sockets: int) -> dict[str, str]:
    """Raise any per-agent / per-address / per-session socket limit the gateway has above
    the bench's sockets (by setting, never by a weaker default)."""
    from services.gateway.settings import GatewaySettings

    return {name.upper(): str(sockets * 2) for name in GatewaySettings.model_fields
            if name.startswith("ws_") and any(k in name for k in ("per_agent", "per_ip", "per_session"))}


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="handoff-bench-fanout-") as tmp:
        work = Path(tmp)
        infra = start_infra(work / "infra")
        gateway: Proc | None = None
        bare: subprocess.Popen | None = None
        try:
            prefix = f"fanout{uuid.uuid4().hex[:6]}."
            await ensure_topics(infra.kafka_bootstrap, prefix=prefix)
            env = service_env(infra, prefix, "gateway", args.fetch_wait_ms)
            queue_port = free_port()
            queue = await snapshot_server(queue_port)
            gateway = Proc("gateway", {**env, "QUEUE_URL": f"http://127.0.0.1:{queue_port}", "COOKIE_SECURE": "false",
                                       **socket_limit_env(args.sockets)}, work)
            gateway.start()
            await gateway.ready()
            run_cli("services.gateway", ["create-agent", "--email", EMAIL, "--password", PASSWORD, "--chatbot", CHATBOT],
                    gateway.env)
            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
                r = await http.post("/api/login", json={"email": EMAIL, "password": PASSWORD})
                r.raise_for_status()
                cookie = r.cookies["handoff_session"]
            print(f"infra up; {args.sockets} sockets, {args.rate:g} updates/s for {args.seconds:g} s; "
                  f"fetch_max_wait_ms={args.fetch_wait_ms}", flush=True)
            system = await measure("gateway", gateway.proc.pid, gateway.port, cookie, infra,
                                   prefix + "dashboard.updates", args, work, 1)
            gateway.stop()
            queue.close()

            port = free_port()
            await ensure_bare_topic(infra.kafka_bootstrap, prefix + "bare.updates")
            bare = subprocess.Popen([sys.executable, "-m", "bench.bench_fanout", "--bare", str(port),
                                     "--bootstrap", infra.kafka_bootstrap, "--topic", prefix + "bare.updates",
                                     "--fetch-wait-ms", str(args.fetch_wait_ms)],
                                    cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True)
            await asyncio.get_running_loop().run_in_executor(None, bare.stdout.readline)  # READY
            floor = await measure("bare", bare.pid, port, None, infra, prefix + "bare.updates", args, work, 1)
        finally:
            if bare is not None and bare.poll() is None:
                os.killpg(bare.pid, signal.SIGTERM)
                bare.wait(20)
            if gateway is not None:
                gateway.stop()
            infra.stop()
    report(system, floor, args)


async def ensure_bare_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


def report(system: dict, floor: dict, args) -> None:
    print(f"\nfan-out: {args.sockets} sockets on one process, {args.rate:g} updates/s for one chatbot, "
          f"{args.seconds:g} s (+ drain); latency from the publish onto the topic to the frame on a socket "
          f"(every {SAMPLE_EVERY}th socket)")
    head = (f"{'':26s}{'p50 ms':>9s}{'p99 ms':>9s}{'frames/s':>10s}{'updates/s':>11s}"
            f"{'CPU/update':>12s}{'CPU/frame':>11s}{'KB/idle socket':>16s}")
    print(head)
    for label, r in (("gateway (coalescing)", system), ("bare fan-out floor", floor)):
        print(f"{label:26s}{r['p50']:9.1f}{r['p99']:9.1f}{r['frames'] / r['window_s']:10.0f}"
              f"{r['delivered'] / r['window_s']:11.0f}{r['cpu_per_update_us']:10.1f}us{r['cpu_per_frame_us']:9.1f}us"
              f"{r['idle_kb_per_socket']:16.1f}")
        print(f"{'':26s}samples {r['samples']}/{r['expected']}, CPU {r['cpu_s']:.1f} s over {r['window_s']:.1f} s, "
              f"sockets closed by the server {r['closed']}{'' if r['drained'] else ', NOT drained'}; "
              f"client process CPU {r['client_cpu_s']:.1f} s, whole machine busy {r['machine_busy_s']:.1f} "
              f"core-s (2 cores: {2 * r['window_s']:.1f})")
    ratio = system["cpu_per_update_us"] / floor["cpu_per_frame_us"]
    print(f"ratios: gateway CPU per delivered update / bare CPU per frame x{ratio:.2f} (target <= 1.2); "
          f"p99 {system['p99']:.1f} ms (target <= 100) vs floor x{system['p99'] / floor['p99']:.2f}; "
          f"RSS per idle socket {system['idle_kb_per_socket']:.1f} KB (target <= 35) vs floor "
          f"x{system['idle_kb_per_socket'] / max(0.1, floor['idle_kb_per_socket']):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bench_fanout")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--drain-s", type=float, default=60, help="how long to wait for the last update to arrive")
    parser.add_argument("--fetch-wait-ms", type=int, default=20)
    # Internal: the client process and the bare floor server.
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cookie", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        # The arrivals grow to hundreds of thousands of tuples (no cycles among them): a
        # collector pass over them stalls every socket of this process at once, and the
        # stall would count as the server's latency.
        gc.disable()
        asyncio.run(client_main(args.client, args.cookie or None, args.sockets, args.out))
    elif args.bare:
        bare_server(args.bare, args.bootstrap, args.topic, args.fetch_wait_ms)
    else:
        asyncio.run(main(args))
