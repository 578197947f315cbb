"""A fake Telegram Bot API on 127.0.0.1, reached by python-telegram-bot through
`Bot(base_url=...)` (the channels' TELEGRAM_API_BASE_URL).

Every call to /bot<token>/<method> is recorded (token, method, parameters, time). Answers
are scripted per method: queue `Answer`s with `fake.script("sendMessage", Answer(429,
retry_after=1))`; with nothing queued a method succeeds.

    async with FakeTelegram() as tg:
        settings.telegram_api_base_url = tg.base_url
"""

from __future__ import annotations

import asyncio

import itertools
import json
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deploy.infra import free_port
from tests.fakes.server import FakeHttpServer


@dataclass
class Answer:
    status: int = 200
    retry_after: int | None = None
    description: str = "Bad Request: fake error"
    delay_s: float = 0.0  # answer this much later (a slow Bot API)


@dataclass
class Call:
    token: str
    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeTelegram(FakeHttpServer):
    def __init__(self) -> None:
        self.port = free_port()
        self.calls: list[Call] = []
        self._scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self._ids = itertools.count(1000)
        self.app = Starlette(routes=[Route("/bot{token}/{method}", self._handle, methods=["GET", "POST"])])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    def script(self, method: str, *answers: Answer) -> None:
        self._scripts[method].extend(answers)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def _handle(self, request: Request) -> JSONResponse:
        token, method = request.path_params["token"], request.path_params["method"]
        params: dict[str, Any] = {}
        if request.headers.get("content-type", "").startswith("application/json"):
            params = await request.json()
        else:
            # PTB posts url-encoded form fields whose values are JSON-encoded.
            for k, v in parse_qsl((await request.body()).decode(), keep_blank_values=True):
                try:
                    params[k] = json.loads(v)
                except ValueError:
                    params[k] = v
        self.calls.append(Call(token, method, params))
        queued = self._scripts[method]
        if queued:
            answer = queued.popleft()
            if answer.delay_s:
                await asyncio.sleep(answer.delay_s)
            if answer.status != 200:
                body: dict[str, Any] = {"ok": False, "error_code": answer.status, "description": answer.description}
                if answer.retry_after is not None:
                    body["description"] = f"Too Many Requests: retry after {answer.retry_after}"
                    body["parameters"] = {"retry_after": answer.retry_after}
                return JSONResponse(body, status_code=answer.status)
        return JSONResponse({"ok": True, "result": self._result(method, params)})

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return {"id": 42, "is_bot": True, "first_name": "Fake", "username": "fake_bot"}
        if method == "sendMessage":
            return {"message_id": next(self._ids), "date": int(time.time()),
                    "chat": {"id": int(params["chat_id"]), "type": "private"}, "text": params.get("text", "")}
        return True

