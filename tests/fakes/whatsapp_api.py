"""A fake Meta Graph API (WhatsApp Cloud API) on 127.0.0.1, reached by the channels'
httpx client through GRAPH_API_BASE_URL.

POST /{version}/{phone_number_id}/messages is recorded (path, Authorization header, JSON
body, time) and answered with a fresh wamid, or with a scripted `Answer` (429 with
Retry-After, 5xx, a 4xx Graph error).

    async with FakeGraph() as graph:
        settings.graph_api_base_url = graph.base_url
"""

from __future__ import annotations

import itertools
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
class Answer:
    status: int = 200
    retry_after: int | None = None
    message: str = "(#100) Invalid parameter"
    code: int = 100


@dataclass
class Sent:
    version: str
    phone_number_id: str
    authorization: str | None
    body: dict[str, Any]
    wamid: str | None
    at: float = field(default_factory=time.monotonic)


class FakeGraph(FakeHttpServer):
    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Sent] = []
        self._script: deque[Answer] = deque()
        self._ids = itertools.count(1)
        self.app = Starlette(routes=[Route("/{version}/{phone_number_id}/messages", self._send, methods=["POST"])])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *answers: Answer) -> None:
        self._script.extend(answers)

    def sent_to(self, wa_id: str) -> list[Sent]:
        return [r for r in self.requests if r.body.get("to") == wa_id]

    async def _send(self, request: Request) -> JSONResponse:
        body = await request.json()
        answer = self._script.popleft() if self._script else Answer()
        wamid = f"wamid.FAKE{next(self._ids):06d}" if answer.status == 200 else None
        self.requests.append(Sent(request.path_params["version"], request.path_params["phone_number_id"],
                                  request.headers.get("authorization"), body, wamid))
        if answer.status != 200:
            headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else {}
            return JSONResponse({"error": {"message": answer.message, "type": "OAuthException", "code": answer.code}},
                                status_code=answer.status, headers=headers)
        return JSONResponse({"messaging_product": "whatsapp",
                             "contacts": [{"input": body.get("to"), "wa_id": body.get("to")}],
                             "messages": [{"id": wamid}]})

