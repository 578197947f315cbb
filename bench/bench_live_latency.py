"""Live latency: a visitor's message -> the frame on an agent's dashboard websocket.

    python -m bench.bench_live_latency [--messages 50] [--fetch-wait-ms 20]

Starts the embedded infrastructure (deploy/infra.py) and the services as processes
(`python -m services.<name>`): channels, intake (offline responder: no LLM), queue, gateway.
Then, one message at a time (each waits for its frame, so no queueing), a web-widget visitor
posts to channels and the clock stops when the gateway's websocket delivers the queue's
`update` frame carrying that message. The path is

    HTTP POST -> channels -> visitor.messages -> queue -> dashboard.updates -> gateway -> websocket

i.e. two Kafka hops plus the services' work (Mongo/Redis writes) plus one websocket send.
Intake runs too (the queue asks it for an AI turn after the dashboard update): it is on the
AI's path, not on this one. If channels cannot be started, the visitor message is published
straight onto `visitor.messages` (the same two hops, without the HTTP edge) and the output
says so.

Beside it, in the same run and on the same broker, the raw floor: the same number of Kafka
hops done with bare aiokafka producers/consumers relaying a message (same fetch wait),
plus a bare websocket send to a client. It prints p50/p99 of both and their ratio.
This is a measurement tool, not a test: nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.load import UNLIMITED_WIDGET, widget_auth  # also gives the stack its widget-token key
from deploy.infra import Infra, free_port, start_infra
from shared.bus import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
CHATBOT = "bench"
EMAIL = "bench@example.com"
PASSWORD = "bench-password-1"
SERVICES = ("queue", "intake", "gateway", "channels")


# ---------------------------------------------------------------------- processes
class Proc:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**env, "HTTP_PORT": str(self.port), "HTTP_HOST": "127.0.0.1", "SERVICE_NAME": name}
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", f"services.{self.name}"], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.proc and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited; see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def service_env(infra: Infra, prefix: str, name: str, fetch_wait_ms: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}  # intake: offline responder
    return {**env, **infra.env(), "KAFKA_TOPIC_PREFIX": prefix, "KAFKA_FETCH_MAX_WAIT_MS": str(fetch_wait_ms),
            "MONGODB_DB": f"bench_{name}", "REDIS_PREFIX": f"bench:{name}", "LOG_JSON": "false",
            "LOG_LEVEL": "WARNING", "QUEUE_API_TOKEN": "bench-queue-token-0123456789"}


def run_cli(module: str, args: list[str], env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=120)


# The Kafka hops from the visitor's message to the agent's websocket.
HOPS = ("visitor.messages", "dashboard.updates")


# ---------------------------------------------------------------------- the measured path
async def measure_system(infra: Infra, log_dir: Path, n: int, fetch_wait_ms: int) -> tuple[list[float], str]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    await ensure_topics(infra.kafka_bootstrap, prefix=prefix)
    procs = {name: Proc(name, service_env(infra, prefix, name, fetch_wait_ms), log_dir) for name in SERVICES}
    procs["gateway"].env["QUEUE_URL"] = procs["queue"].url
    try:
        for name in ("queue", "intake", "gateway"):
            procs[name].start()
        channels_ok = True
        try:
            procs["channels"].start()
        except Exception:  # noqa: BLE001 - measured without the HTTP edge then
            channels_ok = False
        await asyncio.gather(*(procs[n_].ready() for n_ in ("queue", "intake", "gateway")))
        if channels_ok:
            try:
                await procs["channels"].ready()
            except (RuntimeError, TimeoutError) as exc:
                print(f"channels did not start ({exc}); publishing onto visitor.messages directly")
                channels_ok = False
        # Seeding publishes the chatbot's settings, which every service reads.
        run_cli("services.queue", ["seed-chatbot", "--id", CHATBOT, "--name", "Bench", *UNLIMITED_WIDGET],
                procs["queue"].env)
        run_cli("services.gateway", ["create-agent", "--email", EMAIL, "--password", PASSWORD, "--chatbot", CHATBOT],
                procs["gateway"].env)

        gateway = procs["gateway"]
        async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
            r = await http.post("/api/login", json={"email": EMAIL, "password": PASSWORD})
            r.raise_for_status()
            cookie = http.cookies["handoff_session"]
        ws_url = gateway.url.replace("http", "ws", 1) + "/ws"
        async with websockets.connect(ws_url, additional_headers={"Cookie": f"handoff_session={cookie}"}) as ws, \
                httpx.AsyncClient(base_url=procs["channels"].url, timeout=20) as edge:
            await ws.send(json.dumps({"type": "subscribe", "chatbot_id": CHATBOT}))
            while json.loads(await ws.recv())["type"] != "subscribed":
                pass
            send = await visitor_sender(edge, channels_ok, infra, prefix)
            # Warm-up (consumer fetch sessions, Mongo collections, channels learning the chatbot).
            for i in range(3):
                await one_message(ws, send, f"warm-up {i}", timeout=60)
            samples = [await one_message(ws, send, f"bench message {i}") for i in range(n)]
            how = ("HTTP POST /web/{chatbot}/messages via channels" if channels_ok
                   else "published onto visitor.messages directly (channels not running)")
            return samples, how
    finally:
        for p in procs.values():
            p.stop()


async def visitor_sender(edge: httpx.AsyncClient, channels_ok: bool, infra: Infra, prefix: str):
    visitors = [f"v_{uuid.uuid4().hex[:16]}" for _ in range(5)]
    counter = iter(range(10**9))
    if channels_ok:
        async def via_channels(text: str) -> None:
            i = next(counter)
            for _ in range(100):  # until channels has read the chatbot's settings
                r = await edge.post(f"/web/{CHATBOT}/messages", json={"client_message_id": f"m{i}", "text": text},
                                    headers=widget_auth(CHATBOT, visitors[i % len(visitors)]))
                if r.status_code != 404:
                    r.raise_for_status()
                    return
                await asyncio.sleep(0.2)
            raise RuntimeError("channels never learned the bench chatbot")
        return via_channels

    from shared.events import VisitorIdentity, VisitorMessageReceived
    from shared.ids import conversation_id_for

    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, linger_ms=0, acks="all")
    await producer.start()

    async def direct(text: str) -> None:
        i = next(counter)
        visitor = visitors[i % len(visitors)]
        event = VisitorMessageReceived(chatbot_id=CHATBOT, conversation_id=conversation_id_for(CHATBOT, "web", visitor),
                                       channel="web", visitor=VisitorIdentity(external_id=visitor), text=text,
                                       channel_message_id=f"m{i}")
        await producer.send_and_wait(prefix + "visitor.messages", event.model_dump_json().encode(),
                                     key=event.partition_key())
    return direct


async def one_message(ws, send, text: str, timeout: float = 30) -> float:
    started = time.perf_counter()
    await send(text)
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            # One update, or several of the chatbot coalesced into one frame (services/gateway/live.py).
            updates = [frame.get("update")] if frame["type"] == "update" else frame.get("updates") or []
            for update in updates:
                message = (update or {}).get("message") or {}
                if message.get("sender") == "visitor" and message.get("text") == text:
                    return (time.perf_counter() - started) * 1000


# ---------------------------------------------------------------------- the raw floor
async def measure_floor(infra: Infra, n: int, fetch_wait_ms: int, hops: int = len(HOPS)) -> list[float]:
    """`hops` Kafka hops relayed by bare aiokafka clients, then a bare websocket send."""
    prefix = f"floor{uuid.uuid4().hex[:6]}."
    topics = [f"{prefix}hop{i}" for i in range(hops)]
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in topics])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, linger_ms=0, acks="all")
    consumers = [AIOKafkaConsumer(t, bootstrap_servers=infra.kafka_bootstrap, group_id=f"{t}-relay",
                                  auto_offset_reset="earliest", fetch_max_wait_ms=fetch_wait_ms)
                 for t in topics]
    await producer.start()
    for c in consumers:
        await c.start()

    sockets: set = set()

    async def ws_handler(conn) -> None:
        sockets.add(conn)
        with contextlib.suppress(Exception):
            await conn.wait_closed()
        sockets.discard(conn)

    port = free_port()
    server = await websockets.serve(ws_handler, "127.0.0.1", port)

    async def relay(i: int) -> None:
        async for record in consumers[i]:
            if i + 1 < hops:
                await producer.send_and_wait(topics[i + 1], record.value, key=record.key)
            else:
                for conn in list(sockets):
                    await conn.send(record.value.decode())

    relays = [asyncio.create_task(relay(i)) for i in range(hops)]
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}") as client:
            while not sockets:
                await asyncio.sleep(0.01)
            samples = []
            for i in range(n + 3):
                body = json.dumps({"i": i}).encode()
                started = time.perf_counter()
                await producer.send_and_wait(topics[0], body, key=b"k")
                async with asyncio.timeout(30):
                    while json.loads(await client.recv())["i"] != i:
                        pass
                if i >= 3:  # the first three warm the fetch sessions, as on the system side
                    samples.append((time.perf_counter() - started) * 1000)
            return samples
    finally:
        for t in relays:
            t.cancel()
        server.close()
        for c in consumers:
            await c.stop()
        await producer.stop()


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def main(n: int, fetch_wait_ms: int) -> None:
    with tempfile.TemporaryDirectory(prefix="handoff-bench-") as tmp:
        log_dir = Path(tmp)
        infra = start_infra(log_dir / "infra")
        try:
            print(f"infra up (Tansu {infra.kafka_bootstrap}); fetch_max_wait_ms={fetch_wait_ms}; {n} messages")
            floor = await measure_floor(infra, n, fetch_wait_ms)
            system, how = await measure_system(infra, log_dir, n, fetch_wait_ms)
        finally:
            infra.stop()
    print(f"visitor message: {how}")
    print("path: -> channels -> visitor.messages -> queue -> dashboard.updates -> gateway -> websocket")
    rows = (("system: visitor -> dashboard ws", system), (f"floor: {len(HOPS)} bare Kafka hops + ws send", floor))
    for label, s in rows:
        print(f"{label:40s} p50 {pct(s, 50):8.1f} ms   p99 {pct(s, 99):8.1f} ms   "
              f"mean {statistics.mean(s):8.1f} ms   n={len(s)}")
    print(f"ratio system/floor: p50 x{pct(system, 50) / pct(floor, 50):.2f}   p99 x{pct(system, 99) / pct(floor, 99):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bench_live_latency")
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--fetch-wait-ms", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.fetch_wait_ms))
