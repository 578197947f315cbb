"""Run services for tests: in this event loop (uvicorn.Server on a free port) or as real
processes (`python -m services.<name>`), both configured only by environment variables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn

from deploy.infra import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
S = TypeVar("S")


def settings_from_env(cls: type[S], env: dict[str, str]) -> S:
    """Build a settings object from an environment dict, as the process would read it."""
    fields = cls.model_fields  # type: ignore[attr-defined]
    return cls(**{k.lower(): v for k, v in env.items() if k.lower() in fields})


@dataclass
class RunningService:
    name: str
    url: str
    app: Any = None

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):]


class LoopServer:
    """uvicorn serving an ASGI app inside the test's own event loop on 127.0.0.1."""

    def __init__(self, app: Any, port: int, name: str, lifespan: str = "on", graceful_timeout: float = 5) -> None:
        self.name = name
        config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan, log_config=None,
                                access_log=False, ws="websockets-sansio", timeout_graceful_shutdown=graceful_timeout,
                                proxy_headers=False)  # as shared.service.serve: the peer is the client
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task: asyncio.Task | None = None

    async def start(self, timeout: float = 30) -> None:
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError(f"{self.name} stopped during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not start")
            await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 30) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, timeout)


@contextlib.asynccontextmanager
async def run_in_process(name: str, app_factory: Callable[[Any], Any], settings: Any) -> AsyncIterator[RunningService]:
    """Serve `app_factory(settings)` with uvicorn in this event loop until the block ends."""
    port = free_port()
    settings.http_port = port
    app = app_factory(settings)
    server = LoopServer(app, port, name)
    try:
        await server.start()
        yield RunningService(name, f"http://127.0.0.1:{port}", app)
    finally:
        await server.stop()


class ServiceProcess:
    """`python -m services.<name>` as a child process; stopped by its PID."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, module: str | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**os.environ, **env, "HTTP_PORT": str(self.port), "HTTP_HOST": "127.0.0.1"}
        self.module = module or f"services.{name}"
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.logs()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(self.url + "/readyz")
                    if r.status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout)
