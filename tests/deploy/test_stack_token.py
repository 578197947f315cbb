"""The local runner gives the queue's service token to the queue and the gateway only: one
random token per run (the queue refuses to start without one), or QUEUE_API_TOKEN if set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from deploy import stack
from deploy.infra import Infra, Server
from tests.harness import ROOT


def _token_of_a_fresh_runner(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "QUEUE_API_TOKEN"}
    done = subprocess.run([sys.executable, "-c", "from deploy import stack; print(stack.QUEUE_API_TOKEN)"],
                          cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_queue_and_gateway_share_the_runners_token_and_no_other_service_gets_it(monkeypatch):
    monkeypatch.setenv("QUEUE_API_TOKEN", "leaked-into-the-shell-0123")  # not handed to the others
    servers = [Server(name, port, None, Path("/dev/null")) for name, port in  # type: ignore[arg-type]
               (("kafka", 1), ("redis", 2), ("mongo", 3))]
    infra, ports = Infra(*servers), stack.Ports.from_env()
    envs = {name: stack.service_env(name, infra, ports) for name in stack.SERVICES}
    assert envs["queue"]["QUEUE_API_TOKEN"] == envs["gateway"]["QUEUE_API_TOKEN"] == stack.QUEUE_API_TOKEN
    assert not [n for n in ("intake", "summarizer", "channels") if "QUEUE_API_TOKEN" in envs[n]]

    first, second = _token_of_a_fresh_runner(), _token_of_a_fresh_runner()
    assert first != second and len(first) >= 32  # random per run, long enough for the queue
    assert _token_of_a_fresh_runner(QUEUE_API_TOKEN="operator-chosen-token-0123") == "operator-chosen-token-0123"
