"""End to end: the README's run command brings the whole stack up (embedded broker, Redis,
Mongo-wire server, five service processes, demo chatbot and agent); a visitor message
typed into the web widget travels widget → Kafka → intake → queue → gateway and arrives on
a logged-in dashboard websocket, followed by the summarizer's summary; the agent's reply
travels back to the widget's socket.
Each hop is a separate process, so breaking any of them fails this test."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import websockets

from deploy.stack import separate_stack_env
from tests.harness import ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("stack-data")
    # no LLM: intake runs its offline responder and explicit-request detection
    env = separate_stack_env(data)
    base = int(env["HANDOFF_PORT_BASE"])
    run_dir = data / "run"
    log = data / "runner.log"
    out = open(log, "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "deploy.stack", "up"], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while "Press Ctrl-C" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"stack did not come up:\n{log.read_text(errors='replace')[-5000:]}")
            time.sleep(0.3)
        text = log.read_text()
        assert "Dashboard:" in text and "Widget test page:" in text and "login" in text
        yield {"gateway": f"http://127.0.0.1:{base}", "channels": f"http://127.0.0.1:{base + 1}",
               "queue": f"http://127.0.0.1:{base + 2}", "log": log, "env": env}
    finally:
        state = json.loads((run_dir / "stack.json").read_text()) if (run_dir / "stack.json").exists() else {}
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the runner stops everything it started
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()
        leftovers = [n for n, pid in state.get("pids", {}).items() if _pid_alive(pid)]
        assert not leftovers, f"still running after Ctrl-C: {leftovers}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours would still answer kill(0); check its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def _login(client: httpx.AsyncClient) -> dict:
    r = await client.post("/api/login", json={"email": "agent@demo.test", "password": "handoff-demo"})
    assert r.status_code == 200, r.text
    return r.json()


async def _next_frame(ws, predicate, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("expected frame did not arrive")
        frame = json.loads(await asyncio.wait_for(ws.recv(), left))
        if predicate(frame):
            return frame


async def test_visitor_message_reaches_dashboard_and_reply_reaches_widget(stack):
    gateway, channels = stack["gateway"], stack["channels"]
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as agent:
        login = await _login(agent)
        cookie = "; ".join(f"{k}={v}" for k, v in agent.cookies.items())
        ws_url = gateway.replace("http", "ws", 1) + "/ws"
        async with websockets.connect(ws_url, additional_headers={"Cookie": cookie, "Origin": gateway}) as dash:
            await dash.send(json.dumps({"type": "subscribe", "chatbot_id": "demo"}))
            await _next_frame(dash, lambda f: f.get("type") == "subscribed")

            async with httpx.AsyncClient(base_url=channels, timeout=10) as widget:
                session = (await widget.post("/web/demo/session")).json()  # the widget's signed token
                widget.headers["Authorization"] = f"Bearer {session['token']}"
                async with websockets.connect(channels.replace("http", "ws", 1) + "/web/demo/ws") as visitor_ws:
                    await visitor_ws.send(json.dumps({"type": "auth", "token": session["token"]}))
                    sent_at = time.monotonic()
                    r = await widget.post("/web/demo/messages", json={
                        "client_message_id": uuid.uuid4().hex,
                        "text": "I want to talk to a human please", "name": "Erin"})
                    assert r.status_code == 202, r.text

                    frame = await _next_frame(dash, lambda f: f.get("type") == "update"
                                              and (f["update"].get("row_upserted") or {}).get("display_name") == "Erin")
                    row = frame["update"]["row_upserted"]
                    latency = time.monotonic() - sent_at
                    assert row["channel"] == "web"
                    assert row["reason"]
                    assert frame["update"]["stats"]["open"] >= 1
                    conversation_id = row["conversation_id"]
                    print(f"visitor message -> dashboard websocket: {latency * 1000:.0f} ms")

                    # The summarizer (extractive here: no LLM configured) writes the recap; the
                    # queue stores it and the dashboard receives it live.
                    frame = await _next_frame(dash, lambda f: f.get("type") == "update"
                                              and (f["update"].get("summary") or {}).get("status") == "ready"
                                              and (f["update"].get("conversation") or {}).get("conversation_id") == conversation_id)
                    summary = frame["update"]["summary"]
                    assert summary["mode"] == "extractive"
                    assert "I want to talk to a human please" in summary["text"]

                    r = await agent.post(
                        f"/api/chatbots/demo/conversations/{conversation_id}/reply",
                        json={"command_id": uuid.uuid4().hex, "text": "Hi Erin, Dana here."},
                        headers={"X-CSRF-Token": login["csrf_token"]},
                    )
                    assert r.status_code == 200, r.text
                    msg = await _next_frame(visitor_ws, lambda f: f.get("type") == "message" and f.get("sender") == "agent")
                    assert msg["text"] == "Hi Erin, Dana here."
                    assert msg["sender_name"] == "Dana"


async def test_cli_runs_a_service_command_against_the_running_stack(stack):
    """`./handoff cli gateway create-agent ...` reaches the running stack's stores: the new
    agent can log in and sees the demo chatbot."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "deploy.stack", "cli", "gateway", "create-agent", "--email", "sam@demo.test",
         "--password", "sam-password-1", "--first-name", "Sam", "--chatbot", "demo"],
        cwd=ROOT, env=stack["env"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    async with httpx.AsyncClient(base_url=stack["gateway"], timeout=10) as agent:
        r = await agent.post("/api/login", json={"email": "sam@demo.test", "password": "sam-password-1"})
        assert r.status_code == 200, r.text
        me = (await agent.get("/api/me")).json()
        assert [c["chatbot_id"] for c in me["chatbots"]] == ["demo"]
        assert me["agent"]["display_name"] == "Sam"
