"""Fan-out that holds many dashboards: a chatbot's updates are coalesced per tick into one
frame, encoded once and shared; the keyed parts (rows, stats, conversations, summaries)
keep only their latest state, transcript messages and handoff starts all arrive in order;
a lone update goes at once; a slow client gets the latest state, not a backlog; a stuck one
is dropped and counted; the socket metrics move."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prometheus_client import REGISTRY

from services.gateway import live
from services.gateway.coalesce import compact, updates_frame
from services.gateway.live import CLOSE_TOO_SLOW, LiveClient, LiveHub
from tests.gateway.conftest import NOW, add_agent, conversation, gateway, publish_dashboard, stats, update
from tests.gateway.test_live import FakeSocket, seqs
from tests.gateway.test_live_ws import open_ws, recv, recv_until, session_cookie, subscribe
from tests.support import eventually
from shared.events import DashboardUpdate
from shared.views import MessageView


def row_update(seq: int, cid: str = "cv_1", epoch: str = "e1", **parts: Any) -> dict[str, Any]:
    """An update of conversation `cid`'s row (its message count is the seq) and the stats."""
    u = update("demo", seq, epoch)
    row = u.row_upserted.model_copy(update={"conversation_id": cid})
    return u.model_copy(update={"row_upserted": row, "conversation_id": cid, **parts}).model_dump(mode="json")


def message_update(seq: int, text: str, cid: str = "cv_1") -> dict[str, Any]:
    conv = conversation("demo", cid).model_copy(update={"message_count": seq})
    msg = MessageView(message_id=f"m{seq}", conversation_id=cid, sender="visitor", text=text, created_at=NOW)
    return DashboardUpdate(chatbot_id="demo", conversation_id=cid, epoch="e1", seq=seq, stats=stats("demo"),
                           conversation=conv, message=msg).model_dump(mode="json")


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class RecordingSocket(FakeSocket):
    """Keeps the texts as sent (to see that subscribers share one encoded frame); while
    `gate` is closed a send waits (a slow reader)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        self.texts.append(text)
        self.sent.append(json.loads(text))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watching(hub: LiveHub, n: int, chatbot_id: str = "demo") -> list[LiveClient]:
    clients = [LiveClient(RecordingSocket(), f"a{i}", {chatbot_id}) for i in range(n)]
    for c in clients:
        hub.add(c)
        hub.subscribe(c, chatbot_id)
    return clients


async def until(predicate, timeout: float = 5.0) -> None:
    async def check() -> bool:
        return predicate()
    await eventually(check, timeout=timeout)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def drained(clients: list[LiveClient]) -> None:
    await asyncio.wait_for(asyncio.gather(*(c.drained() for c in clients)), 2)
    assert not any(c.outbox for c in clients)


# ---------------------------------------------------------------- what a frame keeps
def test_keyed_parts_keep_their_latest_state_and_every_update_its_place():
    entries = [row_update(2), row_update(3, "cv_2"), row_update(4), row_update(5)]
    out = compact(entries)
    assert [e["seq"] for e in out] == [2, 3, 4, 5]
    # cv_1's row and the stats only on the newest carrier; cv_2's row is its only copy.
    assert out[0] == {"epoch": "e1", "seq": 2} and out[2] == {"epoch": "e1", "seq": 4}
    assert out[1]["row_upserted"]["conversation_id"] == "cv_2" and out[1]["stats"] is None
    assert out[3]["row_upserted"]["message_count"] == 5 and out[3]["stats"]["open"] == 1
    # A removal supersedes the upsert before it, and the other way round.
    out = compact([row_update(6), {**row_update(7), "row_upserted": None, "row_removed": "cv_1"}])
    assert out[0] == {"epoch": "e1", "seq": 6} and out[1]["row_removed"] == "cv_1"


def test_transcript_messages_and_handoff_starts_are_never_coalesced():
    entries = [message_update(seq, f"hello {seq}") for seq in range(2, 6)]
    handoff = conversation("demo", "cv_9").model_copy(update={"waiting_since": NOW})  # updated_at == NOW too
    entries.insert(1, row_update(10, "cv_9", conversation=handoff))
    entries.append(row_update(11, "cv_9", conversation=handoff.model_copy(update={"updated_at": NOW.replace(minute=5)})))
    out = compact(entries)
    assert [e["seq"] for e in out] == [2, 3, 4, 5, 10, 11]
    assert [e["message"]["text"] for e in out if e.get("message")] == ["hello 2", "hello 3", "hello 4", "hello 5"]
    # The conversation header is keyed: only the last message's update still carries it.
    assert [e["seq"] for e in out if e.get("conversation") and e["conversation_id"] == "cv_1"] == [5]
    # The handoff's own update keeps its row and conversation (the dashboard alerts on it).
    start = next(e for e in out if e["seq"] == 10)
    assert start["row_upserted"]["conversation_id"] == "cv_9" and start["conversation"]["waiting_since"]


def test_a_frame_orders_by_seq_within_an_epoch_and_counts_a_repeat_once():
    late = row_update(3)  # another queue instance's update, arriving after 4
    out = compact([row_update(2), row_update(4), late, row_update(4), row_update(1, epoch="e2")])
    assert [(e["epoch"], e["seq"]) for e in out] == [("e1", 2), ("e1", 3), ("e1", 4), ("e2", 1)]
    assert out[2]["row_upserted"]["message_count"] == 4 and out[1] == {"epoch": "e1", "seq": 3}
    # A different epoch is not superseded by the old one, nor the other way round.
    assert out[3]["row_upserted"] and out[3]["stats"]
    single = json.loads(updates_frame("demo", [row_update(7)]))
    assert (single["type"], single["seq"], single["update"]["seq"]) == ("update", 7, 7)


# ---------------------------------------------------------------- the hub's ticks
async def test_a_burst_goes_out_as_one_frame_per_tick_encoded_once_and_shared(monkeypatch):
    encoded: list[int] = []

    def counting(chatbot_id, entries):
        encoded.append(len(entries))
        return updates_frame(chatbot_id, entries)

    monkeypatch.setattr(live, "updates_frame", counting)
    clock = Clock()
    hub = LiveHub(tick_s=0.05, frame_budget=1, clock=clock)  # 3 subscribers: a 50 ms tick
    clients = watching(hub, 3)
    hub.update("demo", row_update(1))  # the first after a quiet spell: at once
    await settle()
    for seq in range(2, 8):
        clock.now += 0.005
        hub.update("demo", row_update(seq))
    await settle()
    assert [seqs(c.websocket.sent) for c in clients] == [[1]] * 3  # held for the tick
    hub.flush(hub.channels["demo"])  # the tick ends
    await settle()
    for c in clients:
        assert len(c.websocket.sent) == 2
        burst = c.websocket.sent[1]
        assert burst["type"] == "updates" and seqs([burst]) == [2, 3, 4, 5, 6, 7]
        assert [(u.get("row_upserted") or {}).get("message_count") for u in burst["updates"]] == [None] * 5 + [7]
    texts = [c.websocket.texts[1] for c in clients]
    assert texts[0] is texts[1] is texts[2] and encoded == [1, 6]  # built once, sent three times
    await drained(clients)


async def test_a_lone_update_goes_at_once_and_a_small_audience_is_barely_held():
    clock = Clock()
    hub = LiveHub(tick_s=0.05, frame_budget=100, clock=clock)
    (one,) = watching(hub, 1)
    assert hub.tick_of(hub.channels["demo"]) == 0.01  # 1 subscriber / 100 frames a second
    hub.update("demo", row_update(1))
    await settle()
    assert seqs(one.websocket.sent) == [1]
    clock.now += 0.005
    hub.update("demo", row_update(2))  # within its tick: held
    await settle()
    assert seqs(one.websocket.sent) == [1]
    hub.flush(hub.channels["demo"])
    await settle()
    assert one.websocket.sent[-1]["type"] == "update" and seqs(one.websocket.sent) == [1, 2]
    clock.now += 0.02  # quiet for longer than its tick: the next one goes at once
    hub.update("demo", row_update(3))
    await settle()
    assert seqs(one.websocket.sent) == [1, 2, 3]
    many = watching(hub, 9)
    assert hub.tick_of(hub.channels["demo"]) == 0.05  # 10 subscribers would be 0.1 s: capped
    await drained([one, *many])


async def test_the_tick_flushes_by_itself():
    hub = LiveHub(tick_s=0.05, frame_budget=1)
    clients = watching(hub, 2)
    for seq in range(1, 5):
        hub.update("demo", row_update(seq))
    for c in clients:
        await until(lambda c=c: seqs(c.websocket.sent) == [1, 2, 3, 4])
        assert [f["type"] for f in c.websocket.sent] == ["update", "updates"]
    await drained(clients)


async def test_a_slow_client_gets_the_latest_state_in_one_frame_not_a_backlog():
    hub = LiveHub(tick_s=0)  # every update flushed at once: only the client's pace coalesces
    (fast, slow) = watching(hub, 2)
    slow.websocket.gate.clear()
    hub.update("demo", row_update(1))
    await settle()
    for seq in range(2, 30):
        hub.update("demo", row_update(seq, cid=f"cv_{seq % 3}"))
        await settle()
        assert len(slow.outbox) <= 1  # one mark per chatbot, however many updates wait
    assert len(fast.websocket.sent) == 29 and not slow.websocket.sent
    slow.websocket.gate.set()
    await until(lambda: seqs(slow.websocket.sent) == list(range(1, 30)))
    assert len(slow.websocket.sent) == 2
    latest = {u["row_upserted"]["conversation_id"]: u["row_upserted"]["message_count"]
              for u in slow.websocket.sent[1]["updates"] if u.get("row_upserted")}
    assert latest == {"cv_0": 27, "cv_1": 28, "cv_2": 29}
    assert slow in hub.clients and not slow.dropped
    await drained([fast, slow])


async def test_a_stuck_client_is_dropped_and_counted():
    dropped_before = sample("handoff_gateway_dropped_slow_clients_total")
    hub = LiveHub(tick_s=0, catch_up=5)
    (fine, stuck) = watching(hub, 2)
    stuck.websocket.gate.clear()
    for seq in range(1, 7):
        hub.update("demo", row_update(seq))
        await settle()
    assert stuck in hub.clients  # 5 behind: still catching up
    hub.update("demo", row_update(7))
    await settle()
    assert stuck.dropped and stuck not in hub.clients and stuck.websocket.closed_with == CLOSE_TOO_SLOW
    assert hub.subscribers("demo") == {fine} and seqs(fine.websocket.sent) == list(range(1, 8))
    # Too many other frames waiting is stuck too.
    hub2 = LiveHub()
    (waiting,) = watching(hub2, 1)
    waiting.queue_size = 2
    waiting.websocket.gate.clear()
    for i in range(4):
        hub2.broadcast("demo", {"type": "command_result", "chatbot_id": "demo", "i": i})
    assert waiting.dropped and waiting not in hub2.clients
    await settle()
    assert sample("handoff_gateway_dropped_slow_clients_total") == dropped_before + 2
    await drained([fine])
    assert stuck._writer is None and waiting._writer is None  # their stuck sends were cancelled


async def test_socket_metrics_follow_the_hub():
    names = ("handoff_gateway_open_sockets", "handoff_gateway_subscriptions", "handoff_gateway_frames_sent_total")
    before = {n: sample(n) for n in names}

    def moved() -> dict[str, float]:
        return {n.removeprefix("handoff_gateway_"): sample(n) - before[n] for n in names}

    hub = LiveHub(tick_s=0)
    clients = watching(hub, 2)
    hub.subscribe(clients[0], "other")
    assert moved() == {"open_sockets": 2, "subscriptions": 3, "frames_sent_total": 0}
    hub.update("demo", row_update(1))
    await settle()
    assert moved()["frames_sent_total"] == 2
    hub.unsubscribe(clients[0], "demo")
    hub.remove(clients[1])
    hub.remove(clients[1])  # twice: counted once
    assert moved() == {"open_sockets": 1, "subscriptions": 1, "frames_sent_total": 2}
    hub.remove(clients[0])
    assert moved() == {"open_sockets": 0, "subscriptions": 0, "frames_sent_total": 2}
    await drained(clients)


# ---------------------------------------------------------------- through /ws and the broker
async def test_a_burst_through_the_broker_arrives_coalesced_in_order_and_metrics_move(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "burst@example.com", ["alpha"])
    sockets_before = sample("handoff_gateway_open_sockets")
    frames_before = sample("handoff_gateway_frames_sent_total")
    async with gateway(stack, WS_TICK_S="1", WS_FRAME_BUDGET="0.001") as gw:
        async with open_ws(gw, await session_cookie(gw.url, "burst@example.com")) as ws:
            assert (await subscribe(ws, "alpha"))["type"] == "subscribed"
            assert sample("handoff_gateway_open_sockets") == sockets_before + 1
            events = [update("alpha", seq).model_copy(update={"row_upserted": update("alpha", seq).row_upserted
                                                              .model_copy(update={"conversation_id": "cv_x"})})
                      for seq in range(8, 20)]
            await publish_dashboard(stack, *events)
            frames: list[dict[str, Any]] = []
            async with asyncio.timeout(20):
                while not seqs(frames) or seqs(frames)[-1] != 19:
                    frame = await recv(ws)
                    if frame["type"] in ("update", "updates"):
                        frames.append(frame)
            assert seqs(frames) == list(range(8, 20)) and len(frames) < 12
            last = frames[-1]["updates"][-1] if frames[-1]["type"] == "updates" else frames[-1]["update"]
            assert last["row_upserted"]["message_count"] == 19
            assert sample("handoff_gateway_frames_sent_total") >= frames_before + len(frames)
            await ws.send(json.dumps({"type": "ping"}))
            await recv_until(ws, lambda f: f["type"] == "pong")
        await until(lambda: sample("handoff_gateway_open_sockets") == sockets_before, timeout=10)


async def test_an_idle_socket_holds_no_writer_task_and_a_busy_one_keeps_its_own():
    hub = LiveHub(tick_s=0)
    (one,) = watching(hub, 1)
    assert one._writer is None  # open and subscribed, nothing to send: no task
    one.offer({"type": "pong"})
    await drained([one])
    await settle()
    assert one._writer is None  # an answer sent: it ended
    hub.update("demo", row_update(1))
    await drained([one])
    writer = one._writer
    assert writer is not None  # after an update it waits for the next one...
    hub.update("demo", row_update(2))
    await drained([one])
    assert one._writer is writer  # ...and sends it without a new task

    async def memberships_of(digest: str) -> set[str]:
        return {"demo"}

    await hub.revalidate(memberships_of, 4401)  # a round with nothing sent meanwhile: it rests
    assert one._writer is None
    hub.update("demo", row_update(3))
    await drained([one])
    assert seqs(one.websocket.sent) == [1, 2, 3] and one.websocket.sent[0] == {"type": "pong"}
