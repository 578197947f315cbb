"""The local stack runner: the whole system on embedded infrastructure, one command.

    ./handoff up        # foreground: start everything, print the URLs, Ctrl-C stops it all
    ./handoff up --scale queue=2,intake=2,gateway=2,channels=2   # several processes per service
    ./handoff start     # the same in the background (detached); then:
    ./handoff status    # what runs, with PIDs, readiness and restarts
    ./handoff stop      # stop what `start` started (by the PIDs it recorded)
    ./handoff topics    # create the topics on KAFKA_BOOTSTRAP_SERVERS (compose's init job)
    ./handoff cli queue set-channels --chatbot demo ...   # a service's command, against the running stack

It starts the Tansu broker, redis-server and SecantusDB (`deploy/infra.py`), creates every
topic with its partition count, starts the five services as separate processes, seeds a
demo chatbot (Human Handoff tool on) and a demo agent, and prints the dashboard URL, the
widget test page and the login. Mongo data lives in `.data/` between runs; Redis is the
queue's index and is rebuilt from Mongo at start; the broker keeps topics in memory.

`--scale service=N,...` (or HANDOFF_SCALE) runs N processes of a service, `queue-1`,
`queue-2` …: one consumer group shares the partitions among them, every gateway hears every
dashboard update, the gateways fail over between the queue's replicas (QUEUE_URL lists them).
Replica i listens on the service's port + 10 * (i - 1) (queue: 8002, 8012 …).

Then it supervises: a service that exits is started again (same environment and port) after
a backoff, and counted in `.run/stack.json`; an infrastructure server that exits is started
again at once on its port, with a loud note of what it lost (the broker: everything; the
services recreate their topics and report) — unless it keeps dying, then everything stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from deploy.infra import (Infra, Server, free_port, free_port_block, local_env, port_is_free, start_kafka,
                          start_mongo, start_redis, stop_process, wait_for_port)

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

    def of(self, service: str, index: int = 1) -> int:
        """The port of a service's index-th replica (from 1): the first keeps the service's port."""
        return getattr(self, service) + REPLICA_PORT_STRIDE * (index - 1)


SERVICES = ("queue", "intake", "summarizer", "gateway", "channels")
# The queue's internal API answers the gateway only, with this token: one per runner process,
# random unless QUEUE_API_TOKEN is set, given to the queue and the gateway and no one else.
QUEUE_API_TOKEN = os.environ.get("QUEUE_API_TOKEN") or secrets.token_urlsafe(32)
TOKEN_HOLDERS = ("queue", "gateway")
INFRA = ("kafka", "redis", "mongo")

# Replica i of a service listens on the service's port + (i - 1) * REPLICA_PORT_STRIDE: the first
# keeps the usual port, further ones take blocks of their own above the five (8010-8014 for the
# second replicas, 8020-8024 for the third …), so no two processes ever ask for one port.
REPLICA_PORT_STRIDE = 10
MAX_REPLICAS = 9


def parse_scale(text: str) -> dict[str, int]:
    """`queue=2,intake=2` (the --scale flag, HANDOFF_SCALE) -> processes per service; 1 for the
    services it does not name."""
    scale = dict.fromkeys(SERVICES, 1)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = (x.strip() for x in part.partition("="))
        if name not in SERVICES:
            raise ValueError(f"--scale: unknown service {name!r} in {part!r}; one of {', '.join(SERVICES)}.")
        if not count.isdigit() or not 1 <= int(count) <= MAX_REPLICAS:
            raise ValueError(f"--scale: {part!r} needs a number of processes from 1 to {MAX_REPLICAS}, "
                             f"e.g. {name}=2.")
        scale[name] = int(count)
    return scale


@dataclass(frozen=True)
class Replica:
    """One process of a service: named `queue` while it runs alone, `queue-1`, `queue-2` … when scaled."""

    name: str
    service: str
    index: int  # from 1
    port: int


def replicas(ports: Ports, scale: Mapping[str, int] | None = None) -> list[Replica]:
    """Every service process of the stack, in start-up order."""
    found = []
    for service in SERVICES:
        n = (scale or {}).get(service, 1)
        found += [Replica(service if n == 1 else f"{service}-{i}", service, i, ports.of(service, i))
                  for i in range(1, n + 1)]
    return found


def service_of(name: str) -> str | None:
    """The service a process name of the state file runs (`queue-2` -> `queue`); None for the
    infrastructure and the runner."""
    base, _, index = name.rpartition("-")
    return name if name in SERVICES else base if base in SERVICES and index.isdigit() else None

# A service that exits is started again after 1 s, then 2, 4 … up to 30 s while it keeps
# failing (a crash loop must not eat the machine); once it stayed up a minute, its next
# failure is a fresh one and waits 1 s again.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 60.0
READY_TIMEOUT_S = 90.0


@dataclass
class Supervised:
    """A service process the runner watches, with what it takes to start it again."""

    name: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen | None  # None while waiting out the backoff
    started: float = 0.0  # monotonic: when the current process was started
    ready_since: float | None = None  # monotonic: when its /readyz first answered; None while starting
    restart_at: float | None = None  # monotonic: when the next process is due (no process meanwhile)
    streak: int = 0  # failures in a row, without a long enough run between them
    restarts: int = 0
    last_restart: str | None = None  # wall clock, for `status`
    next_restart: str | None = None
    service: str = ""  # the module it runs (`queue` for `queue-2`); the name when empty

    def __post_init__(self) -> None:
        self.service = self.service or self.name

    def history(self) -> dict:
        return {"count": self.restarts, "last": self.last_restart, "next": self.next_restart}


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


def service_env(name: str, infra: Infra, ports: Ports, scale: Mapping[str, int] | None = None,
                index: int = 1) -> dict[str, str]:
    """The environment of the index-th process of service `name` (`scale`: processes per service)."""
    port = ports.of(name, index)
    env = {
        **{k: v for k, v in command_env(name, infra.env()).items() if k != "QUEUE_API_TOKEN"},
        **({"QUEUE_API_TOKEN": QUEUE_API_TOKEN} if name in TOKEN_HOLDERS else {}),
        "SERVICE_NAME": name,
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
        # Fetch waits are each service's own default (short on the path to an agent's screen,
        # longer off it): the embedded broker never answers a waiting fetch early, and every
        # idle poll costs it CPU. KAFKA_FETCH_MAX_WAIT_MS in the environment overrides them.
        **({"KAFKA_FETCH_MAX_WAIT_MS": os.environ["KAFKA_FETCH_MAX_WAIT_MS"]}
           if "KAFKA_FETCH_MAX_WAIT_MS" in os.environ else {}),
    }
    channels_url = f"http://127.0.0.1:{ports.channels}"  # the public address: one, whichever replica answers
    if name == "gateway":
        # Every queue replica, a different one first for each gateway (the load is shared);
        # the gateway fails over to the next when one does not answer.
        queues = [f"http://127.0.0.1:{ports.of('queue', i)}" for i in range(1, (scale or {}).get("queue", 1) + 1)]
        first = (index - 1) % len(queues)
        env.setdefault("QUEUE_URL", ",".join(queues[first:] + queues[:first]))
        env.setdefault("ALLOWED_ORIGINS", f"http://127.0.0.1:{port},http://localhost:{port}")
        # The local stack is plain http on 127.0.0.1: the explicit opt-out of Secure cookies.
        env.setdefault("COOKIE_SECURE", "false")
    if name == "channels":
        env.setdefault("CHANNELS_PUBLIC_URL", channels_url)
        env["WIDGET_TOKEN_SECRET"] = widget_token_secret()
    else:
        env.pop("WIDGET_TOKEN_SECRET", None)  # it signs visitor tokens: channels' alone
    return env


def widget_token_secret() -> str:
    """WIDGET_TOKEN_SECRET, or a random one kept in the data directory: widgets' tokens then
    survive restarts of the stack (a new key would start every visitor over)."""
    if os.environ.get("WIDGET_TOKEN_SECRET"):
        return os.environ["WIDGET_TOKEN_SECRET"]
    path = DATA_DIR / "widget-token-secret"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError), os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _start_service(name: str, env: dict[str, str], service: str | None = None) -> subprocess.Popen:
    """Process `name` (its log: <name>.log) running `python -m services.<service>`."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"{name}.log", "ab") as out:
        return subprocess.Popen([sys.executable, "-m", f"services.{service or name}"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def separate_stack_env(data_dir: Path, replicas: int = 1) -> dict[str, str]:
    """The environment of another local stack beside any running one (tests, benchmarks):
    free ports (for up to `replicas` processes per service), its data and run files under
    `data_dir`, no AI model (offline mode)."""
    block = REPLICA_PORT_STRIDE * (replicas - 1) + len(SERVICES)
    return {**{k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
            "HANDOFF_PORT_BASE": str(free_port_block(block)), "HANDOFF_KAFKA_PORT": str(free_port()),
            "HANDOFF_REDIS_PORT": str(free_port()), "HANDOFF_MONGO_PORT": str(free_port()),
            "HANDOFF_DATA_DIR": str(data_dir), "HANDOFF_RUN_DIR": str(data_dir / "run")}


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:  # noqa: S310 - loopback
            return r.status == 200
    except Exception:  # noqa: BLE001
        return False


def _wait_ready(name: str, port: int, proc: subprocess.Popen, timeout: float = READY_TIMEOUT_S) -> None:
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


def _stop_pid(pid: int, timeout: float = 20, group: bool = True) -> None:
    # Each child leads its own session: its group is just it. The runner is signalled alone
    # (group=False): a foreground `up` shares its group with the shell that started it.
    kill = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError):
        kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        kill(pid, signal.SIGKILL)


def _write_state(state: dict) -> None:
    # Replaced, never rewritten in place: `status`, `stop` and `start` read it while the
    # runner records a restart.
    tmp = STATE_FILE.with_name(STATE_FILE.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, STATE_FILE)


def _read_state() -> dict:
    try:
        return json.loads(STATE_FILE.read_text())
    except FileNotFoundError:
        return {}


def restart_delay(streak: int) -> float:
    """The wait before the streak-th restart in a row: 1, 2, 4 … capped."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (streak - 1))


def _schedule_restart(svc: Supervised, why: str, now: float) -> None:
    # A run that lasted makes this a fresh failure, not one more in a row.
    if svc.ready_since is not None and now - svc.ready_since >= BACKOFF_RESET_AFTER_S:
        svc.streak = 0
    svc.streak += 1
    svc.restarts += 1
    delay = restart_delay(svc.streak)
    svc.proc, svc.ready_since, svc.restart_at = None, None, now + delay
    svc.next_restart = datetime.fromtimestamp(time.time() + delay).isoformat(timespec="seconds")
    print(f"{svc.name} {why}; restarting in {delay:g}s (restart {svc.restarts}); "
          f"see {LOG_DIR / (svc.name + '.log')}", flush=True)


def _supervise(svc: Supervised, now: float) -> bool:
    """One look at a service: restart it when due, notice it exited or came back. True when
    its process changed (the state file then needs rewriting)."""
    if svc.proc is None:
        if now < svc.restart_at:
            return False
        svc.proc = _start_service(svc.name, svc.env, svc.service)
        svc.started, svc.restart_at, svc.next_restart = now, None, None
        svc.last_restart = datetime.now().isoformat(timespec="seconds")
        return True
    if svc.proc.poll() is not None:
        _schedule_restart(svc, f"exited with code {svc.proc.returncode}", now)
        return True
    if svc.ready_since is None:
        # Back only once ready, as at start-up: a process that listens but cannot reach the
        # broker or the stores is still starting.
        if _ready(svc.port):
            svc.ready_since = time.monotonic()
            print(f"  {svc.name:<11} ready again  (pid {svc.proc.pid}, port {svc.port}; restart {svc.restarts})",
                  flush=True)
        elif now - svc.started > READY_TIMEOUT_S:
            stop_process(svc.proc, timeout=20)
            _schedule_restart(svc, f"was not ready after {READY_TIMEOUT_S:g}s", now)
            return True
    return False


# What a restarted server comes back without, and who puts it back (the services, by themselves).
INFRA_AFTERMATH = {
    "kafka": "the embedded broker keeps everything in memory: its topics, offsets and messages are "
             "gone. The services recreate their topics, the queue republishes the chatbots' settings, "
             "and each service logs a BROKER LOST DATA report of what it knows was lost",
    "redis": "the queue rebuilds its index from Mongo on its next read; the widget histories, "
             "channels' dedupe keys and the login throttles start empty",
    "mongo": "its data is on disk and comes back as it was; handlers waited for it meanwhile",
}
# An infrastructure server that dies this often in a row, each within a minute of its start,
# is not coming back by itself: stop everything instead of looping.
INFRA_RESTARTS_MAX = 3


@dataclass
class InfraServer:
    """An infrastructure server the runner restarts in place (same port, same data)."""

    server: Server
    start: Callable[[], Server]
    restarts: int = 0
    streak: int = 0
    started: float = field(default_factory=time.monotonic)
    last_restart: str | None = None

    def history(self) -> dict:
        return {"count": self.restarts, "last": self.last_restart, "next": None}


def _supervise_infra(infra: InfraServer, now: float) -> bool:
    """Restart a dead infrastructure server, loudly. False when it keeps dying (give up)."""
    server = infra.server
    if server.proc.poll() is None:
        return True
    infra.streak = infra.streak + 1 if now - infra.started < BACKOFF_RESET_AFTER_S else 1
    print(f"\n*** {server.name} (infrastructure) exited with code {server.proc.returncode}; see {server.log_path}.",
          file=sys.stderr, flush=True)
    if infra.streak > INFRA_RESTARTS_MAX:
        print(f"*** it died {infra.streak} times in a row: stopping everything. Start again with `./handoff up`.",
              file=sys.stderr, flush=True)
        return False
    try:
        infra.server = infra.start()
    except Exception as exc:  # noqa: BLE001 - reported, and the stack stops
        print(f"*** could not start it again ({exc}): stopping everything.", file=sys.stderr, flush=True)
        return False
    infra.restarts += 1
    infra.started = time.monotonic()
    infra.last_restart = datetime.now().isoformat(timespec="seconds")
    print(f"*** restarted {server.name} on port {server.port} (pid {infra.server.proc.pid}, restart {infra.restarts}): "
          f"{INFRA_AFTERMATH.get(server.name, 'the services reconnect by themselves')}.", file=sys.stderr, flush=True)
    return True


def _supervision_loop(services: dict[str, Supervised], infra: list[InfraServer], stop: dict[str, bool],
                      record: Callable[[], None]) -> int:
    """Until Ctrl-C / SIGTERM: keep the services and the infrastructure running. Returns the
    exit code of `up`."""
    while not stop["now"]:
        for server in infra:
            pid = server.server.proc.pid
            if not _supervise_infra(server, time.monotonic()):
                record()
                return 1
            if server.server.proc.pid != pid:
                record()
        now = time.monotonic()
        changed = [svc.name for svc in services.values() if _supervise(svc, now)]  # each one, every time
        if changed:
            record()
        time.sleep(0.5)
    return 0


def up(detach: bool = False, scale: Mapping[str, int] | None = None) -> int:
    ports = Ports.from_env()
    layout = replicas(ports, scale)
    # Every process's port, by its name in the state file (`status` asks each one's /readyz).
    wanted = {**{name: getattr(ports, name) for name in INFRA}, **{r.name: r.port for r in layout}}
    if STATE_FILE.exists():
        state = _read_state()
        if any(_alive(p) for p in state.get("pids", {}).values()):
            print("The stack is already running (see `./handoff status`); `./handoff stop` first.", file=sys.stderr)
            return 1
    busy = [f"{k}={v}" for k, v in wanted.items() if not port_is_free(v)]
    if busy:
        print(f"Ports in use: {', '.join(busy)}. Set HANDOFF_PORT_BASE / HANDOFF_*_PORT to free ones.", file=sys.stderr)
        return 1

    RUN_DIR.mkdir(parents=True, exist_ok=True)
    started_infra: list[InfraServer] = []
    services: dict[str, Supervised] = {}

    def live_pids() -> dict[str, int]:
        # Only processes that run: a dead one's PID may soon belong to someone else.
        return {**{s.server.name: s.server.proc.pid for s in started_infra if s.server.proc.poll() is None},
                **{n: s.proc.pid for n, s in services.items() if s.proc is not None}}

    def record() -> None:
        # The runner records itself: `stop` signals it first, and it stops the rest, a
        # service it is restarting included.
        _write_state({"pids": {**live_pids(), "runner": os.getpid()}, "ports": wanted,
                      "restarts": {**{s.server.name: s.history() for s in started_infra},
                                   **{n: s.history() for n, s in services.items()}}})

    def infra_server(start: Callable[[], Server]) -> None:
        started_infra.append(InfraServer(start(), start))
        record()

    # Until the supervision loop takes over, SIGTERM (`./handoff stop` during start-up) unwinds
    # like Ctrl-C, so that start-up's clean-up stops what was started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print("Starting the broker (Tansu), Redis and the Mongo-wire server (SecantusDB)…", flush=True)
        infra_server(lambda: start_kafka(ports.kafka, LOG_DIR))
        infra_server(lambda: start_redis(ports.redis, LOG_DIR))
        infra_server(lambda: start_mongo(ports.mongo, LOG_DIR, DATA_DIR / "mongo"))
        infra = Infra(*(s.server for s in started_infra))

        from shared.bus import ensure_topics

        created = asyncio.run(ensure_topics(infra.kafka_bootstrap))
        print(f"Topics ready ({len(created)} created).", flush=True)

        # The queue first: it republishes every chatbot's settings from Mongo (the embedded
        # broker forgets topics on restart), which the others load as they start.
        first, rest = SERVICES[0], SERVICES[1:]
        for group in ((first,), rest):
            members = [r for r in layout if r.service in group]
            for r in members:
                env = service_env(r.service, infra, ports, scale, r.index)
                services[r.name] = Supervised(r.name, r.port, env, _start_service(r.name, env, r.service),
                                              started=time.monotonic(), service=r.service)
                record()
            for r in members:
                svc = services[r.name]
                _wait_ready(r.name, svc.port, svc.proc)
                svc.ready_since = time.monotonic()
                print(f"  {r.name:<11} ready  (pid {svc.proc.pid}, port {svc.port})", flush=True)

        _run_cli("services.queue", ["seed-chatbot", "--id", DEMO_CHATBOT, "--name", "Demo Shop", "--handoff-on"],
                 command_env("queue", infra.env()))
        _run_cli("services.gateway", ["create-agent", "--email", DEMO_EMAIL, "--password", DEMO_PASSWORD,
                                      "--first-name", "Dana", "--chatbot", DEMO_CHATBOT],
                 command_env("gateway", infra.env()))
    except BaseException as exc:
        print(f"Start-up failed: {exc!r}" if isinstance(exc, KeyboardInterrupt) else f"Start-up failed: {exc}",
              file=sys.stderr)
        _stop_all(live_pids())
        return 1

    stop = {"now": False}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["now"] = True  # a flag, not an exception: a restart in progress finishes, then all stop

    code = 0
    try:
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        _print_running(layout)
        if detach:
            print("Running in the background: `./handoff status`, `./handoff stop`.")
            return 0
        print("Press Ctrl-C to stop everything.", flush=True)
        code = _supervision_loop(services, started_infra, stop, record)
    finally:
        if not detach:
            print("\nStopping…", flush=True)
            _stop_all(live_pids())
            print("Stopped.")
    return code


def _print_running(layout: list[Replica]) -> None:
    def url(r: Replica) -> str:
        return f"http://127.0.0.1:{r.port}"

    gateways = [r for r in layout if r.service == "gateway"]
    channels = [r for r in layout if r.service == "channels"]
    pad = " " * 20
    lines = ["\nHandoff is running.",
             f"  Dashboard:        {url(gateways[0])}/   (login {DEMO_EMAIL} / {DEMO_PASSWORD})",
             *(f"{pad}{url(r)}/   ({r.name})" for r in gateways[1:]),
             f"  Widget test page: {url(channels[0])}/widget/test?chatbot={DEMO_CHATBOT}",
             *(f"{pad}{url(r)}/widget/test?chatbot={DEMO_CHATBOT}   ({r.name})" for r in channels[1:]),
             f"  API docs:         {url(gateways[0])}/docs"]
    scaled = [s for s in SERVICES if sum(r.service == s for r in layout) > 1]
    for i, service in enumerate(scaled):
        label = "  Replicas:         " if i == 0 else pad
        lines.append(label + ", ".join(f"{r.name} {url(r)}" for r in layout if r.service == service))
    lines.append(f"  Logs:             {LOG_DIR}/\n")
    print("\n".join(lines), flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # A zombie (exited, not yet reaped by whoever adopted it) answers kill(0) but is gone.
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _order(name: str) -> tuple[int, int, int]:
    """The infrastructure, then each service's processes (queue-1, queue-2, intake …), then the rest."""
    if name in INFRA:
        return 0, INFRA.index(name), 0
    if (service := service_of(name)) is not None:
        return 1, SERVICES.index(service), int(name.rpartition("-")[2]) if name != service else 1
    return 2, 0, 0


def _stop_all(pids: dict[str, int]) -> None:
    # Services first (they flush and commit), then the infrastructure they use.
    services = sorted((n for n in pids if service_of(n)), key=_order, reverse=True)
    order = services + [n for n in reversed(INFRA) if n in pids]
    for name in order:
        _stop_pid(pids[name])
    with contextlib.suppress(FileNotFoundError):
        STATE_FILE.unlink()


def start_detached(scale: str = "") -> int:
    """`up` in a new session, its output in .run/logs/stack.log; returns once it is ready."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / "stack.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.stack", "up", *(["--scale", scale] if scale else [])],
                                cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "Press Ctrl-C" in text:  # the runner has recorded itself (as "runner") by now
            print(text.replace("Press Ctrl-C to stop everything.", "Running in the background: `./handoff status`, `./handoff stop`."))
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
    pids = _read_state().get("pids", {})
    runner = pids.pop("runner", None)
    if runner and _alive(runner):
        # The runner stops its children itself (a service it is restarting included); if it had
        # to be killed, what it started last is in the file it last wrote.
        _stop_pid(runner, timeout=60, group=False)
        pids = _read_state().get("pids", {})
        pids.pop("runner", None)
    _stop_all({k: v for k, v in pids.items() if _alive(v)})
    print("Stopped.")
    return 0


def status() -> int:
    if not STATE_FILE.exists():
        print("Not running.")
        return 3
    state = _read_state()
    ports, pids, restarts = state.get("ports", {}), state.get("pids", {}), state.get("restarts", {})
    code = 0
    # A service waiting out its backoff has no process, so no PID, but still its line.
    names = [*pids, *(n for n in restarts if n not in pids and (n in INFRA or service_of(n)))]
    for name in sorted(names, key=_order):
        pid = pids.get(name)
        alive = pid is not None and _alive(pid)
        ready = ""
        if service_of(name) and alive:
            ready = "ready" if _ready(ports[name]) else "NOT READY"
        elif name in INFRA and alive:
            try:
                wait_for_port(ports[name], timeout=1)
                ready = "listening"
            except TimeoutError:
                ready = "NOT LISTENING"
        elif pid is None:
            ready = f"restart due {restarts[name].get('next') or 'now'}"
        line = f"{name:<11} pid {pid or '-':<8} {'running' if alive else 'DOWN' if pid is None else 'DEAD':<8} {ready:<13}"
        if service_of(name) and name in ports:
            line += f" port {ports[name]:<5}"
        if name in restarts:
            line += _restarts_text(restarts[name])
        print(line.rstrip())
        if not alive or "NOT" in ready:
            code = 1
    return code


def _restarts_text(history: dict) -> str:
    count = history.get("count", 0)
    return f" restarts {count}" + (f" (last {history['last']})" if count and history.get("last") else "")


def create_topics() -> int:
    from shared.bus import ensure_topics

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    prefix = os.environ.get("KAFKA_TOPIC_PREFIX", "")
    # The services' setting (shared/settings.py), read here without the rest of their settings.
    replication = os.environ.get("KAFKA_TOPIC_REPLICATION", "1")
    if not replication.isdigit() or int(replication) < 1:
        print(f"KAFKA_TOPIC_REPLICATION must be a whole number of brokers, at least 1 (got {replication!r}).",
              file=sys.stderr)
        return 2
    for attempt in range(60):
        try:
            created = asyncio.run(ensure_topics(bootstrap, prefix=prefix, replication=int(replication)))
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
    parser.add_argument("--scale", default=os.environ.get("HANDOFF_SCALE", ""), metavar="SERVICE=N,...",
                        help="up/start: run N processes of a service, e.g. queue=2,intake=2,gateway=2,channels=2")
    args = parser.parse_args(argv)
    if args.command in ("up", "start"):
        try:
            scale = parse_scale(args.scale)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        return up(scale=scale) if args.command == "up" else start_detached(args.scale)
    return {"stop": stop, "status": status, "topics": create_topics}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
