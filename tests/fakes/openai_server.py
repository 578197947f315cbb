"""A fake OpenAI-compatible chat server on 127.0.0.1 for tests, reached by the real
`openai` client through its base URL.

POST /v1/chat/completions answers from a script the test sets: plain replies, tool calls,
errors (429 with Retry-After, 500), slow answers. Every request body is recorded so tests
can assert the system prompt and the tools offered.

    async with FakeOpenAI() as fake:
        fake.enqueue(Reply("Hello!"), ToolCall("request_human_handoff", {"reason": "refund"}))
        fake.when("SLOW-MARKER", Slow(5.0, Reply("late")))   # by text in the request
        settings.openai_base_url = fake.base_url
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deploy.infra import free_port
from tests.fakes.server import FakeHttpServer


@dataclass
class Reply:
    text: str


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] | str  # a str is sent as is (e.g. broken JSON)


@dataclass
class Error:
    status: int
    retry_after: float | None = None
    message: str = "fake error"


@dataclass
class Slow:
    delay_s: float
    then: Reply | ToolCall | Error


Script = Reply | ToolCall | Error | Slow


@dataclass
class FakeOpenAI(FakeHttpServer):
    """The server and its script. `default` answers when nothing queued or matched."""

    default: Script = field(default_factory=lambda: Reply("Hello from the fake model."))
    requests: list[dict[str, Any]] = field(default_factory=list)
    _queue: deque[Script] = field(default_factory=deque)
    _rules: list[tuple[str, deque[Script] | Script]] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._completions, methods=["POST"])])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------ scripting
    def enqueue(self, *steps: Script) -> None:
        """Answer the next requests with these, in order (after matching rules)."""
        self._queue.extend(steps)

    def when(self, marker: str, *steps: Script) -> None:
        """Requests whose messages contain `marker` get these answers in order (the last one repeats)."""
        self._rules.append((marker, deque(steps)))

    def requests_containing(self, marker: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if marker in json.dumps(r.get("messages", []))]

    def _next(self, body: dict[str, Any]) -> Script:
        text = json.dumps(body.get("messages", []))
        for marker, steps in self._rules:
            if marker in text:
                assert isinstance(steps, deque)
                return steps.popleft() if len(steps) > 1 else steps[0]
        if self._queue:
            return self._queue.popleft()
        return self.default

    # ------------------------------------------------------------ the endpoint
    async def _completions(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        step = self._next(body)
        if isinstance(step, Slow):
            await asyncio.sleep(step.delay_s)
            step = step.then
        if isinstance(step, Error):
            headers = {"retry-after": str(step.retry_after)} if step.retry_after is not None else {}
            return JSONResponse({"error": {"message": step.message, "type": "fake", "code": step.status}},
                                status_code=step.status, headers=headers)
        n = next(self._ids)
        if isinstance(step, ToolCall):
            args = step.arguments if isinstance(step.arguments, str) else json.dumps(step.arguments)
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{n}", "type": "function", "function": {"name": step.name, "arguments": args}}]}
            finish = "tool_calls"
        else:
            message = {"role": "assistant", "content": step.text}
            finish = "stop"
        return JSONResponse({
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })

