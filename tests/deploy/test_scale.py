"""`./handoff up --scale queue=2,...`: how many processes of each service, their names and
ports (the first replica keeps the service's port, further ones a block of their own, no
two processes on one port), and what each gateway is told about the queue's replicas. With
no --scale the layout is the five processes on their usual ports, as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy import stack
from deploy.infra import Infra, Server
from tests.harness import ROOT

PORTS = stack.Ports(kafka=19092, redis=16379, mongo=27018, gateway=8000, channels=8001, queue=8002, intake=8003,
                    summarizer=8004)
INFRA = Infra(*(Server(n, p, None, Path("/dev/null")) for n, p in  # type: ignore[arg-type]
                (("kafka", 1), ("redis", 2), ("mongo", 3))))


def test_without_scale_the_five_services_run_once_on_their_usual_ports():
    layout = stack.replicas(PORTS, stack.parse_scale(""))
    assert [(r.name, r.service, r.port) for r in layout] == [
        ("queue", "queue", 8002), ("intake", "intake", 8003), ("summarizer", "summarizer", 8004),
        ("gateway", "gateway", 8000), ("channels", "channels", 8001)]
    assert stack.service_env("gateway", INFRA, PORTS)["QUEUE_URL"] == "http://127.0.0.1:8002"


def test_scaled_services_run_as_numbered_replicas_each_on_its_own_port():
    layout = stack.replicas(PORTS, stack.parse_scale("queue=2, intake=2,gateway=2,channels=3"))
    assert [(r.name, r.port) for r in layout] == [
        ("queue-1", 8002), ("queue-2", 8012), ("intake-1", 8003), ("intake-2", 8013), ("summarizer", 8004),
        ("gateway-1", 8000), ("gateway-2", 8010), ("channels-1", 8001), ("channels-2", 8011), ("channels-3", 8021)]
    ports = [r.port for r in layout] + [PORTS.kafka, PORTS.redis, PORTS.mongo]
    assert len(set(ports)) == len(ports)
    assert {r.name: stack.service_of(r.name) for r in layout}["channels-3"] == "channels"
    assert stack.service_of("kafka") is None and stack.service_of("runner") is None

    env = {r.name: stack.service_env(r.service, INFRA, PORTS, stack.parse_scale("queue=2,gateway=2"), r.index)
           for r in layout}
    assert env["queue-2"]["HTTP_PORT"] == "8012" and env["queue-2"]["SERVICE_NAME"] == "queue"
    # Each gateway knows every queue replica, a different one first.
    assert env["gateway-1"]["QUEUE_URL"] == "http://127.0.0.1:8002,http://127.0.0.1:8012"
    assert env["gateway-2"]["QUEUE_URL"] == "http://127.0.0.1:8012,http://127.0.0.1:8002"
    assert env["gateway-2"]["ALLOWED_ORIGINS"] == "http://127.0.0.1:8010,http://localhost:8010"
    # One public address for the channels (what Telegram is told), one widget-token key.
    assert {env[n]["CHANNELS_PUBLIC_URL"] for n in ("channels-1", "channels-2", "channels-3")} == {"http://127.0.0.1:8001"}
    assert len({env[n]["WIDGET_TOKEN_SECRET"] for n in ("channels-1", "channels-2", "channels-3")}) == 1


@pytest.mark.parametrize(("text", "says"), [
    ("queue=two", "'queue=two' needs a number of processes from 1 to 9, e.g. queue=2."),
    ("queue=0", "needs a number of processes from 1 to 9"),
    ("queue=10", "needs a number of processes from 1 to 9"),
    ("queue", "'queue' needs a number of processes"),
    ("kafka=2", "unknown service 'kafka' in 'kafka=2'; one of queue, intake, summarizer, gateway, channels."),
])
def test_a_bad_scale_is_refused_with_a_readable_message(text, says):
    with pytest.raises(ValueError, match="--scale: ") as refused:
        stack.parse_scale(text)
    assert says in str(refused.value)


def test_the_runner_refuses_a_bad_scale_before_starting_anything(tmp_path):
    env = stack.separate_stack_env(tmp_path, replicas=2)
    done = subprocess.run([sys.executable, "-m", "deploy.stack", "up", "--scale", "queue=lots"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--scale: 'queue=lots' needs a number of processes from 1 to 9" in done.stderr
    assert not (tmp_path / "run").exists()



def test_a_separate_stacks_service_ports_are_below_the_ephemeral_range(tmp_path):
    """A free port from the ephemeral range can be an outgoing connection's source port by the
    time a service binds it (seen: channels-1 of a scaled test stack failing with EADDRINUSE)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        base = int(stack.separate_stack_env(tmp_path, replicas=2)["HANDOFF_PORT_BASE"])
        assert base + 15 <= low
