"""New handoffs reaching an agent's dashboard while other traffic flows (used by
`bench_throughput --handoff-probes`): a logged-in dashboard socket subscribed to the chatbot,
and every `interval_s` a new visitor who writes "I want to talk to a human" to the widget.
The latency of each is from the POST to the frame carrying its row in the open-handoffs list
(widget -> channels -> queue -> intake's request detection -> queue's handoff -> gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import httpx
import websockets

from bench.load import CHATBOT, Stack, pct, visitor_id_for, widget_auth
from shared.ids import conversation_id_for

EMAIL = "probe@example.com"
PASSWORD = "probe-password-1"
REQUEST = "I want to talk to a human"


class HandoffProbe:
    def __init__(self, stack: Stack, interval_s: float = 1.0, timeout_s: float = 30.0) -> None:
        self.stack, self.interval_s, self.timeout_s = stack, interval_s, timeout_s
        self.sent: dict[str, float] = {}  # conversation id -> when its POST started
        self.arrived: dict[str, float] = {}  # conversation id -> latency ms
        self._run = uuid.uuid4().hex[:8]
        self.refused: list[str] = []  # POSTs channels did not accept (status, reason)
        self._tasks: list[asyncio.Task] = []
        self._ws = None

    async def start(self) -> None:
        await asyncio.to_thread(self.stack.run_cli, "gateway", "create-agent", "--email", EMAIL,
                                "--password", PASSWORD, "--chatbot", CHATBOT)
        async with httpx.AsyncClient(base_url=self.stack.gateway_url, timeout=20) as http:
            r = await http.post("/api/login", json={"email": EMAIL, "password": PASSWORD})
            r.raise_for_status()
            cookie = http.cookies["handoff_session"]
        ws_url = self.stack.gateway_url.replace("http", "ws", 1) + "/ws"
        self._ws = await websockets.connect(ws_url, additional_headers={"Cookie": f"handoff_session={cookie}"},
                                            max_size=None)
        await self._ws.send(json.dumps({"type": "subscribe", "chatbot_id": CHATBOT}))
        while json.loads(await self._ws.recv())["type"] != "subscribed":
            pass
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._probe())]

    def stop_sending(self) -> None:
        self._tasks[1].cancel()

    async def finish(self) -> None:
        """Waits up to `timeout_s` for the handoffs already asked for, then closes the socket."""
        self.stop_sending()
        deadline = time.monotonic() + self.timeout_s
        while set(self.sent) - set(self.arrived) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        self._tasks[0].cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._ws.close()

    async def _probe(self) -> None:
        async with httpx.AsyncClient(base_url=self.stack.channels_url, timeout=30) as http:
            while True:
                visitor = visitor_id_for(f"probe{self._run}", len(self.sent) + len(self.refused))
                conversation_id = conversation_id_for(CHATBOT, "web", visitor)
                self.sent[conversation_id] = time.perf_counter()
                r = await http.post(f"/web/{CHATBOT}/messages", json={"client_message_id": "p1", "text": REQUEST},
                                    headers=widget_auth(CHATBOT, visitor))
                if r.status_code >= 300:
                    del self.sent[conversation_id]
                    self.refused.append(f"{r.status_code} {r.text[:200]}")
                await asyncio.sleep(self.interval_s)

    async def _read(self) -> None:
        while True:
            frame = json.loads(await self._ws.recv())
            updates = [frame.get("update")] if frame["type"] == "update" else frame.get("updates") or []
            now = time.perf_counter()
            for update in updates:
                row = (update or {}).get("row_upserted") or {}
                started = self.sent.get(row.get("conversation_id"))
                if started is not None and row["conversation_id"] not in self.arrived:
                    self.arrived[row["conversation_id"]] = (now - started) * 1000

    def line(self) -> str:
        got = list(self.arrived.values())
        missing = len(set(self.sent) - set(self.arrived))
        refused = f"; {len(self.refused)} POSTs refused, e.g. {self.refused[0]}" if self.refused else ""
        if not got:
            return f"new handoffs: none of {len(self.sent)} reached the dashboard{refused}"
        return (f"new handoffs to the dashboard ({len(got)} of {len(self.sent)}, one every {self.interval_s:g}s): "
                f"p50 {pct(got, 50):.0f} ms  p99 {pct(got, 99):.0f} ms  max {max(got):.0f} ms"
                + (f"; {missing} not within {self.timeout_s:g}s" if missing else "") + refused)
