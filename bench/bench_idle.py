"""Idle cost: what the whole local stack uses while nobody writes.

    python -m bench.bench_idle [--seconds 60]

Starts the stack as `./handoff start` does (embedded broker, Redis, Mongo-wire server, the
five services, demo chatbot and agent) on free ports in a temporary directory, waits until
every service is ready and the start-up work has settled, then reads each process's CPU
time from /proc over `--seconds` and prints, per process, the share of one core it used and
its resident memory, with the totals. Beside it, the floor measured in the same run: the
three infrastructure processes alone, idle, before any service starts. Then it stops
everything it started. A measurement, not a test: nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploy.infra import free_port, start_kafka, start_mongo, start_redis
from deploy.stack import separate_stack_env

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process and of its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / TICKS


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def sample(pids: dict[str, int], seconds: float) -> dict[str, tuple[float, float]]:
    """name -> (% of one core over the window, RSS MB at its end)."""
    before = {n: cpu_seconds(p) for n, p in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {n: (100 * (cpu_seconds(p) - before[n]) / elapsed, rss_mb(p)) for n, p in pids.items()}


def print_table(title: str, usage: dict[str, tuple[float, float]]) -> tuple[float, float]:
    print(title)
    for name, (cpu, rss) in sorted(usage.items(), key=lambda kv: -kv[1][0]):
        print(f"  {name:<11} {cpu:6.1f} % of a core   {rss:7.1f} MB")
    total_cpu, total_rss = sum(c for c, _ in usage.values()), sum(r for _, r in usage.values())
    print(f"  {'total':<11} {total_cpu:6.1f} % of a core   {total_rss:7.1f} MB")
    return total_cpu, total_rss


def measure_floor(tmp: Path, seconds: float) -> tuple[float, float]:
    servers = [start_kafka(free_port(), tmp), start_redis(free_port(), tmp), start_mongo(free_port(), tmp)]
    try:
        time.sleep(3)  # let them settle
        usage = sample({"kafka": servers[0].proc.pid, "redis": servers[1].proc.pid, "mongo": servers[2].proc.pid},
                       seconds)
        return print_table(f"floor: the infrastructure alone, idle, {seconds:.0f} s", usage)
    finally:
        for server in servers:
            server.stop()


def measure_stack(tmp: Path, seconds: float, settle: float) -> tuple[float, float]:
    env = separate_stack_env(tmp / "stack")
    stack = [sys.executable, "-m", "deploy.stack"]
    subprocess.run([*stack, "start"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, timeout=240)
    try:
        pids = json.loads((Path(env["HANDOFF_RUN_DIR"]) / "stack.json").read_text())["pids"]
        pids.pop("runner", None)
        time.sleep(settle)
        return print_table(f"stack: every service ready, idle, {seconds:.0f} s", sample(pids, seconds))
    finally:
        subprocess.run([*stack, "stop"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, timeout=120)


def main(seconds: float, settle: float) -> None:
    with tempfile.TemporaryDirectory(prefix="handoff-idle-") as tmp:
        floor_cpu, _ = measure_floor(Path(tmp), seconds)
        stack_cpu, stack_rss = measure_stack(Path(tmp), seconds, settle)
    print(f"stack total {stack_cpu:.1f} % of a core (infrastructure alone {floor_cpu:.1f} %), RSS {stack_rss:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bench_idle")
    parser.add_argument("--seconds", type=float, default=60)
    # Past KAFKA_IDLE_AFTER_S (30 s) and a round of the watch: idle consumers sleep (doorbell) or
    # have switched to their long fetch wait.
    parser.add_argument("--settle", type=float, default=40, help="seconds to wait after start-up before measuring")
    args = parser.parse_args()
    main(args.seconds, args.settle)
