"""`python -m services.channels` as a real process: it starts from environment variables
alone, becomes ready (broker, Mongo, Redis) and serves the widget and the webhooks."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import ServiceProcess

pytestmark = pytest.mark.e2e


async def test_service_process_serves_and_stops(isolated, tmp_path):
    proc = ServiceProcess("channels", isolated.env("channels"), tmp_path).start()
    try:
        await proc.wait_ready()
        async with httpx.AsyncClient() as client:
            ready = (await client.get(proc.url + "/readyz")).json()
            js = await client.get(proc.url + "/widget.js")
            refused = await client.post(proc.url + "/telegram/unknown/webhook", json={"update_id": 1})
        assert ready["ready"] is True and all(ready["checks"].values())
        assert {"broker", "topics", "mongo", "redis"} <= set(ready["checks"])
        assert js.status_code == 200 and "data-chatbot" in js.text
        assert refused.status_code == 404
    finally:
        proc.stop()
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean exit too.
    assert proc.proc.returncode in (0, -15), proc.logs()[-2000:]
    assert "channels stopped" in proc.logs()
