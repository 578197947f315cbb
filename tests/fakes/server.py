"""What every fake external API has in common: an ASGI app served on a free 127.0.0.1 port
in the test's event loop, used as `async with Fake() as fake:`."""

from __future__ import annotations

from typing import Any

from tests.harness import LoopServer


class FakeHttpServer:
    """Subclasses set `self.app` and `self.port` (e.g. `deploy.infra.free_port()`)."""

    app: Any
    port: int
    _loop_server: LoopServer | None = None

    async def start(self) -> Any:
        # A scripted slow answer must not hold the test up at shutdown.
        self._loop_server = LoopServer(self.app, self.port, type(self).__name__, lifespan="off", graceful_timeout=1)
        await self._loop_server.start(timeout=10)
        return self

    async def stop(self) -> None:
        if self._loop_server is not None:
            await self._loop_server.stop(timeout=10)

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
