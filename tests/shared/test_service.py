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
