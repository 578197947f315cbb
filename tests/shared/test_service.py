"""What every service's app does with a request that does not validate: a 422 in FastAPI's
shape, also when the input it repeats cannot be encoded as UTF-8 (a lone surrogate)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from shared.service import install_request_error_handler


class _Body(BaseModel):
    count: int


async def test_invalid_input_with_a_lone_surrogate_is_a_422_not_a_500():
    app = FastAPI()
    install_request_error_handler(app)

    @app.post("/things")
    async def things(body: _Body) -> dict:
        return {"count": body.count}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post("/things", content=b'{"count": "\\ud800"}', headers={"content-type": "application/json"})
        assert r.status_code == 422
        [error] = r.json()["detail"]
        assert error["loc"] == ["body", "count"] and error["input"] == "\ud800"
        assert (await client.post("/things", json={"count": 3})).json() == {"count": 3}


_SERVE_AND_REPORT = """
import gc, json, sys
from fastapi import FastAPI
from shared import service
from shared.settings import ServiceSettings

def run(self, **_):  # stands in for the server: what does the heap look like when it starts?
    print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold(),
                      "app": isinstance(self.config.app, FastAPI)}))

service.QuietServer.run = run
service.serve(lambda settings: FastAPI(), ServiceSettings(service_name="probe"))
"""


def test_a_served_process_keeps_its_startup_heap_out_of_full_collections():
    """Full collections in a busy gateway (1,000 sockets) took 70-200 ms every few seconds and
    were the fan-out's p99: a serving process freezes what it built at startup and lets young
    objects die before the collector looks (bench/bench_fanout.py measures the effect)."""
    import json
    import subprocess
    import sys

    from shared.service import YOUNG_GC_THRESHOLD

    out = subprocess.run([sys.executable, "-c", _SERVE_AND_REPORT], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    heap = json.loads(out.strip().splitlines()[-1])
    assert heap["app"] is True
    assert heap["frozen"] > 10_000  # the imports and the app: the bulk of a service's objects
    assert heap["threshold"][0] == YOUNG_GC_THRESHOLD > 700


async def test_the_server_wakes_once_a_second_while_idle_and_stops_at_once_when_told():
    """uvicorn's own loop wakes ten times a second to see whether it should stop, which was
    most of what an idle service did; the Date header it refreshes has one-second resolution."""
    import asyncio
    import signal
    import time

    import uvicorn

    from deploy.infra import free_port
    from shared.service import QuietServer
    from tests.support import eventually

    server = QuietServer(uvicorn.Config(FastAPI(), host="127.0.0.1", port=free_port(), log_config=None,
                                        lifespan="off"))
    ticks = 0
    tick = server.on_tick

    async def counted(counter: int) -> bool:
        nonlocal ticks
        ticks += 1
        return await tick(counter)

    server.on_tick = counted  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: asyncio.sleep(0, result=server.started), timeout=10)
    ticks = 0
    await asyncio.sleep(2.0)
    assert 1 <= ticks <= 3
    asked = time.monotonic()
    server.handle_exit(signal.SIGTERM, None)
    server._captured_signals.clear()  # noqa: SLF001 - uvicorn would raise it again in this test process
    await asyncio.wait_for(serving, 5)
    assert time.monotonic() - asked < 0.5
