"""The local stack runner: the whole system on embedded infrastructure, one command.

    ./handoff up        # foreground: start everything, print the URLs, Ctrl-C stops it all
    ./handoff start     # the same in the background (detached); then:
    ./handoff status    # what runs, with PIDs and readiness
    ./handoff stop      # stop what `start` started (by the PIDs it recorded)
    ./handoff topics    # create the topics on KAFKA_BOOTSTRAP_SERVERS (compose's init job)
    ./handoff cli queue set-channels --chatbot demo ...   # a service's command, against the running stack

It starts the Tansu broker, redis-server and SecantusDB (`deploy/infra.py`), creates every
topic with its partition count, starts the five services as separate processes, seeds a
demo chatbot (Human Handoff tool on) and a demo agent, and prints the dashboard URL, the
widget test page and the login. Mongo data lives in `.data/` between runs; Redis is the
queue's index and is rebuilt from Mongo at start; the broker keeps topics in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deploy.infra import Infra, Server, local_env, port_is_free, start_kafka, start_mongo, start_redis, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("HANDOFF_DATA_DIR", ROOT / ".data"))
# Where the runner records its PIDs and logs; separate runs (e.g. tests) use their own.
RUN_DIR = Path(os.environ.get("HANDOFF_RUN_DIR", ROOT / ".run"))
STATE_FILE = RUN_DIR / "stack.json"
LOG_DIR = RUN_DIR / "logs"

DEMO_CHATBOT = "demo"
DEMO_EMAIL = os.environ.get("HANDOFF_DEMO_EMAIL", "agent@demo.test")
DEMO_PASSWORD = os.environ.get("HANDOFF_DEMO_PASSWORD", "handoff-demo")


@dataclass(frozen=True)
class Ports:
    kafka: int
    redis: int
    mongo: int
    gateway: int
    channels: int
    queue: int
    intake: int
    summarizer: int

    @classmethod
    def from_env(cls) -> Ports:
        base = int(os.environ.get("HANDOFF_PORT_BASE", "8000"))
        return cls(
            kafka=int(os.environ.get("HANDOFF_KAFKA_PORT", "19092")),
            redis=int(os.environ.get("HANDOFF_REDIS_PORT", "16379")),
            mongo=int(os.environ.get("HANDOFF_MONGO_PORT", "27018")),
            gateway=base, channels=base + 1, queue=base + 2, intake=base + 3, summarizer=base + 4,
        )


SERVICES = ("queue", "intake", "summarizer", "gateway", "channels")


def command_env(name: str, infra_env: dict[str, str]) -> dict[str, str]:
    """What one service's process or command reads on this stack: the servers, and the
    service's own database and Redis prefix."""
    return {
        **os.environ,
        **infra_env,
        "MONGODB_DB": f"handoff_{name}",
        "REDIS_PREFIX": f"handoff:{name}",
        "LOG_JSON": os.environ.get("LOG_JSON", "false"),
    }


def service_env(name: str, infra: Infra, ports: Ports) -> dict[str, str]:
    env = {
        **command_env(name, infra.env()),
        "SERVICE_NAME": name,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(getattr(ports, name)),
        "PYTHONUNBUFFERED": "1",
        # Fetch waits are each service's own default (short on the path to an agent's screen,
        # longer off it): the embedded broker never answers a waiting fetch early, and every
        # idle poll costs it CPU. KAFKA_FETCH_MAX_WAIT_MS in the environment overrides them.
        **({"KAFKA_FETCH_MAX_WAIT_MS": os.environ["KAFKA_FETCH_MAX_WAIT_MS"]}
           if "KAFKA_FETCH_MAX_WAIT_MS" in os.environ else {}),
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    }
    gateway_url = f"http://127.0.0.1:{ports.gateway}"
    channels_url = f"http://127.0.0.1:{ports.channels}"
    if name == "gateway":
        env.setdefault("QUEUE_URL", f"http://127.0.0.1:{ports.queue}")
        env.setdefault("ALLOWED_ORIGINS", f"{gateway_url},http://localhost:{ports.gateway}")
    if name == "channels":
        env.setdefault("CHANNELS_PUBLIC_URL", channels_url)
    return env


def _start_service(name: str, env: dict[str, str]) -> subprocess.Popen:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"{name}.log", "ab") as out:
        return subprocess.Popen([sys.executable, "-m", f"services.{name}"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:  # noqa: S310 - loopback
            return r.status == 200
    except Exception:  # noqa: BLE001
        return False


def _wait_ready(name: str, port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (LOG_DIR / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}; log tail:\n{tail}")
        if _ready(port):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{name} not ready on port {port} after {timeout}s (see {LOG_DIR / (name + '.log')})")


def _run_cli(module: str, args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"`python -m {module} {' '.join(args[:1])}` failed:\n{result.stdout}\n{result.stderr}")


def _stop_pid(pid: int, timeout: float = 20) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)  # each child leads its own session: its group is just it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def up(detach: bool = False) -> int:
    ports = Ports.from_env()
    if STATE_FILE.exists():
        state = json.loads(STATE_FILE.read_text())
        if any(_alive(p) for p in state.get("pids", {}).values()):
            print("The stack is already running (see `./handoff status`); `./handoff stop` first.", file=sys.stderr)
            return 1
    busy = [f"{k}={v}" for k, v in vars(ports).items() if not port_is_free(v)]
    if busy:
        print(f"Ports in use: {', '.join(busy)}. Set HANDOFF_PORT_BASE / HANDOFF_*_PORT to free ones.", file=sys.stderr)
        return 1

    RUN_DIR.mkdir(parents=True, exist_ok=True)
    pids: dict[str, int] = {}
    started_infra: list[Server] = []
    procs: dict[str, subprocess.Popen] = {}

    def record() -> None:
        STATE_FILE.write_text(json.dumps({"pids": pids, "ports": vars(ports)}, indent=2))

    try:
        print("Starting the broker (Tansu), Redis and the Mongo-wire server (SecantusDB)…", flush=True)
        started_infra.append(start_kafka(ports.kafka, LOG_DIR))
        pids["kafka"] = started_infra[-1].proc.pid
        started_infra.append(start_redis(ports.redis, LOG_DIR))
        pids["redis"] = started_infra[-1].proc.pid
        started_infra.append(start_mongo(ports.mongo, LOG_DIR, DATA_DIR / "mongo"))
        pids["mongo"] = started_infra[-1].proc.pid
        record()
        infra = Infra(*started_infra)

        from shared.bus import ensure_topics

        created = asyncio.run(ensure_topics(infra.kafka_bootstrap))
        print(f"Topics ready ({len(created)} created).", flush=True)

        # The queue first: it republishes every chatbot's settings from Mongo (the embedded
        # broker forgets topics on restart), which the others load as they start.
        first, rest = SERVICES[0], SERVICES[1:]
        for group in ((first,), rest):
            for name in group:
                procs[name] = _start_service(name, service_env(name, infra, ports))
                pids[name] = procs[name].pid
                record()
            for name in group:
                _wait_ready(name, getattr(ports, name), procs[name])
                print(f"  {name:<11} ready  (pid {procs[name].pid}, port {getattr(ports, name)})", flush=True)

        _run_cli("services.queue", ["seed-chatbot", "--id", DEMO_CHATBOT, "--name", "Demo Shop", "--handoff-on"],
                 command_env("queue", infra.env()))
        _run_cli("services.gateway", ["create-agent", "--email", DEMO_EMAIL, "--password", DEMO_PASSWORD,
                                      "--first-name", "Dana", "--chatbot", DEMO_CHATBOT],
                 command_env("gateway", infra.env()))
    except BaseException as exc:
        print(f"Start-up failed: {exc}", file=sys.stderr)
        _stop_all(pids)
        return 1

    gateway = f"http://127.0.0.1:{ports.gateway}"
    print(
        "\nHandoff is running.\n"
        f"  Dashboard:        {gateway}/   (login {DEMO_EMAIL} / {DEMO_PASSWORD})\n"
        f"  Widget test page: http://127.0.0.1:{ports.channels}/widget/test?chatbot={DEMO_CHATBOT}\n"
        f"  API docs:         {gateway}/docs\n"
        f"  Logs:             {LOG_DIR}/\n",
        flush=True,
    )
    if detach:
        print("Running in the background: `./handoff status`, `./handoff stop`.")
        return 0

    print("Press Ctrl-C to stop everything.", flush=True)
    stop = {"now": False}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop["now"]:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see {LOG_DIR / (name + '.log')}. Stopping.",
                          file=sys.stderr)
                    stop["now"] = True
                    break
            time.sleep(0.5)
    finally:
        print("\nStopping…", flush=True)
        _stop_all(pids)
        print("Stopped.")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _stop_all(pids: dict[str, int]) -> None:
    # Services first (they flush and commit), then the infrastructure they use.
    order = [n for n in reversed(SERVICES) if n in pids] + [n for n in ("mongo", "redis", "kafka") if n in pids]
    for name in order:
        _stop_pid(pids[name])
    with contextlib.suppress(FileNotFoundError):
        STATE_FILE.unlink()


def start_detached() -> int:
    """`up` in a new session, its output in .run/logs/stack.log; returns once it is ready."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / "stack.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.stack", "up"], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Press Ctrl-C" in text:
            print(text.replace("Press Ctrl-C to stop everything.", "Running in the background: `./handoff status`, `./handoff stop`."))
            state = json.loads(STATE_FILE.read_text())
            state["pids"]["runner"] = proc.pid
            STATE_FILE.write_text(json.dumps(state, indent=2))
            return 0
        if proc.poll() is not None:
            print(text, file=sys.stderr)
            return 1
        time.sleep(0.3)
    print(f"Not ready after 180 s; see {log}", file=sys.stderr)
    return 1


def stop() -> int:
    if not STATE_FILE.exists():
        print("Nothing to stop (no .run/stack.json).")
        return 0
    state = json.loads(STATE_FILE.read_text())
    pids = state.get("pids", {})
    runner = pids.pop("runner", None)
    if runner and _alive(runner):
        _stop_pid(runner, timeout=60)  # the runner stops its children itself
    _stop_all({k: v for k, v in pids.items() if _alive(v)})
    print("Stopped.")
    return 0


def status() -> int:
    if not STATE_FILE.exists():
        print("Not running.")
        return 3
    state = json.loads(STATE_FILE.read_text())
    ports = state.get("ports", {})
    code = 0
    for name, pid in state.get("pids", {}).items():
        alive = _alive(pid)
        ready = ""
        if name in SERVICES and alive:
            ready = "ready" if _ready(ports[name]) else "NOT READY"
        elif name in ("kafka", "redis", "mongo") and alive:
            try:
                wait_for_port(ports[name], timeout=1)
                ready = "listening"
            except TimeoutError:
                ready = "NOT LISTENING"
        print(f"{name:<11} pid {pid:<8} {'running' if alive else 'DEAD':<8} {ready}")
        if not alive or "NOT" in ready:
            code = 1
    return code


def create_topics() -> int:
    from shared.bus import ensure_topics

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    prefix = os.environ.get("KAFKA_TOPIC_PREFIX", "")
    for attempt in range(60):
        try:
            created = asyncio.run(ensure_topics(bootstrap, prefix=prefix))
            print(f"topics ready on {bootstrap} ({len(created)} created)")
            return 0
        except Exception as exc:  # noqa: BLE001 - the broker may still be starting
            print(f"waiting for the broker ({exc!r})", file=sys.stderr)
            time.sleep(2)
    return 1


def run_cli(service: str, args: list[str]) -> int:
    """`python -m services.<service> <args>` with the running local stack's connection settings."""
    if service not in SERVICES:
        print(f"Unknown service {service!r}; one of {', '.join(SERVICES)}.", file=sys.stderr)
        return 2
    if not STATE_FILE.exists():
        print("The stack is not running: `./handoff start` first.", file=sys.stderr)
        return 1
    ports = json.loads(STATE_FILE.read_text())["ports"]
    env = command_env(service, local_env(ports["kafka"], ports["redis"], ports["mongo"]))
    return subprocess.run([sys.executable, "-m", f"services.{service}", *args], cwd=ROOT, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cli"]:
        if len(argv) < 3:
            print("usage: handoff cli <service> <command> [args...]", file=sys.stderr)
            return 2
        return run_cli(argv[1], argv[2:])
    parser = argparse.ArgumentParser(prog="handoff", description="Run the Handoff stack locally.")
    parser.add_argument("command", choices=["up", "start", "stop", "status", "topics"])
    args = parser.parse_args(argv)
    return {"up": up, "start": start_detached, "stop": stop, "status": status, "topics": create_topics}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
