"""The local runner supervises: a service that exits is started again (after a backoff that
doubles while it keeps failing), the restart is counted in the state file and shown by
`status`; the rest of the stack is left alone; `stop` still stops everything, a service in
the middle of a restart included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy import stack
from tests.harness import ROOT

RUNNER = [sys.executable, "-m", "deploy.stack"]


def test_backoff_doubles_while_a_service_keeps_failing_and_starts_over_after_a_long_run(capsys):
    svc = stack.Supervised("queue", 1, {}, proc=None)
    now, delays = 0.0, []
    for _ in range(7):
        stack._schedule_restart(svc, "exited with code 1", now)
        delays.append(svc.restart_at - now)
        now = svc.restart_at + 5  # started again, failed again before a minute was up
        svc.ready_since = now - 5
    assert delays == [1, 2, 4, 8, 16, 30, 30]

    svc.ready_since = now
    now += 61  # it stayed up a minute: this failure is a fresh one
    stack._schedule_restart(svc, "exited with code -9", now)
    assert svc.restart_at - now == 1
    assert svc.restarts == 8
    assert "queue exited with code -9; restarting in 1s (restart 8)" in capsys.readouterr().out


def test_supervise_restarts_an_exited_process_when_due_and_reports_it_back(monkeypatch, capsys):
    started: list[subprocess.Popen] = []

    def fake_start(name, env, service=None):
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        return started[-1]

    ready = {"now": False}
    monkeypatch.setattr(stack, "_start_service", fake_start)
    monkeypatch.setattr(stack, "_ready", lambda port: ready["now"])
    try:
        svc = stack.Supervised("intake", 1, {"X": "1"}, proc=fake_start("intake", {}), ready_since=0.0)
        assert not stack._supervise(svc, 1.0)  # running and ready: nothing to do

        started[0].kill()
        started[0].wait()
        assert stack._supervise(svc, 2.0)  # noticed: no process until the backoff is over
        assert svc.proc is None and svc.restarts == 1
        assert not stack._supervise(svc, 2.5)
        assert stack._supervise(svc, 3.0)  # due: a new process, not ready yet
        assert svc.proc is started[1] and svc.ready_since is None

        ready["now"] = True
        assert not stack._supervise(svc, 3.5)
        assert svc.ready_since is not None
        out = capsys.readouterr().out
        assert "intake exited with code -9; restarting in 1s (restart 1)" in out
        assert f"intake      ready again  (pid {started[1].pid}, port 1; restart 1)" in out
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie answers kill(0) too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_for_new_pid(state_file: Path, log: Path, name: str, old: int, timeout: float = 40) -> dict:
    """The state once it records another process for `name` than `old`."""
    deadline = time.monotonic() + timeout
    while True:
        if not state_file.exists():
            raise AssertionError(f"the runner stopped the stack when {name} died:\n{log.read_text()[-3000:]}")
        state = json.loads(state_file.read_text())
        if state["pids"].get(name) not in (None, old):
            return state
        assert time.monotonic() < deadline, f"{name} was not restarted:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


@pytest.mark.e2e
def test_a_killed_service_is_restarted_alone_and_stop_leaves_nothing(tmp_path):
    env = stack.separate_stack_env(tmp_path)
    run_dir = Path(env["HANDOFF_RUN_DIR"])
    state_file, log = run_dir / "stack.json", run_dir / "logs" / "stack.log"
    queue_port = int(env["HANDOFF_PORT_BASE"]) + 2

    def runner(command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*RUNNER, command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=150,
                              check=False)

    seen: set[int] = set()  # every process of the stack, to check none outlives `stop`
    try:
        started = runner("start")
        assert started.returncode == 0, started.stdout + started.stderr
        before = json.loads(state_file.read_text())["pids"]
        seen |= set(before.values())

        os.kill(before["queue"], signal.SIGKILL)
        state = _wait_for_new_pid(state_file, log, "queue", before["queue"])
        seen |= set(state["pids"].values())
        deadline = time.monotonic() + 40
        while not stack._ready(queue_port):
            assert time.monotonic() < deadline, f"queue not ready again:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        assert "queue exited with code -9; restarting in 1s (restart 1)" in log.read_text()

        after = json.loads(state_file.read_text())
        assert after["restarts"]["queue"]["count"] == 1 and after["restarts"]["queue"]["last"]
        others = {n: p for n, p in before.items() if n != "queue"}
        assert {n: p for n, p in after["pids"].items() if n != "queue"} == others  # infra and runner too
        assert all(_pid_alive(p) for p in after["pids"].values())

        status = runner("status")
        assert status.returncode == 0, status.stdout + status.stderr
        lines = {line.split()[0]: line for line in status.stdout.splitlines()}
        assert f"pid {after['pids']['queue']} " in lines["queue"] and "restarts 1" in lines["queue"]
        for name in ("intake", "summarizer", "gateway", "channels"):
            assert "restarts 0" in lines[name] and "ready" in lines[name]

        # The broker dies: started again on its port, loudly; every service recovers by itself
        # (topics recreated, settings republished) and a widget message gets through again.
        os.kill(after["pids"]["kafka"], signal.SIGKILL)
        state = _wait_for_new_pid(state_file, log, "kafka", after["pids"]["kafka"])
        seen |= set(state["pids"].values())
        assert "*** restarted kafka on port" in log.read_text()
        ports = state["ports"]
        deadline = time.monotonic() + 90
        while not all(stack._ready(ports[n]) for n in stack.SERVICES):
            assert time.monotonic() < deadline, f"not ready after the broker restart:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        assert _widget_message_stored(ports, env), log.read_text()[-3000:]
        assert "restarts 1" in {line.split()[0]: line for line in runner("status").stdout.splitlines()}["kafka"]

        # Stop while a service is mid-restart: its new process must not outlive the stack.
        os.kill(after["pids"]["intake"], signal.SIGKILL)
        state = _wait_for_new_pid(state_file, log, "intake", after["pids"]["intake"])
        seen |= set(state["pids"].values())
    finally:
        if state_file.exists():
            seen |= set(json.loads(state_file.read_text())["pids"].values())
        stopped = runner("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not state_file.exists()
    assert not [pid for pid in seen if _pid_alive(pid)], log.read_text()[-3000:]


def _widget_message_stored(ports: dict[str, int], env: dict[str, str]) -> bool:
    """A widget message posted now (retried while channels answers 503) reaches the queue's Mongo."""
    import httpx
    from pymongo import MongoClient

    body = {"client_message_id": "after-broker-restart", "text": "still there?"}
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=f"http://127.0.0.1:{ports['channels']}", timeout=10) as http:
        token = http.post("/web/demo/session").json()["token"]  # the widget's credential (no broker involved)
        auth = {"Authorization": f"Bearer {token}"}
        while (status := http.post("/web/demo/messages", json=body, headers=auth).status_code) != 202:
            assert status == 503 and time.monotonic() < deadline, status
            time.sleep(1)
    mongo = MongoClient(f"mongodb://127.0.0.1:{ports['mongo']}/?retryWrites=false")
    try:
        while time.monotonic() < deadline:
            if mongo["handoff_queue"]["messages"].find_one({"text": "still there?"}):
                return True
            time.sleep(0.5)
        return False
    finally:
        mongo.close()
