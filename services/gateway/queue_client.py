"""The queue's internal query API, through one shared httpx.AsyncClient carrying the
queue's service token; with several queue replicas (QUEUE_URL lists them), a call goes to
the one that answered last and fails over to the others in turn."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import HTTPException
from pydantic import SecretStr

from services.gateway.domain import QUEUE_FAILED, QUEUE_UNREACHABLE
from services.gateway.settings import queue_base_urls
from shared.chatbots import ChatbotView

log = logging.getLogger("handoff.gateway.queue_client")


class QueueError(Exception):
    """What the gateway answers when the queue did not give a usable answer."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class QueueClient:
    """`base_url`: QUEUE_URL, one base URL or several comma-separated (replicas of the queue)."""

    def __init__(self, base_url: str, timeout_s: float, token: SecretStr | None) -> None:
        if token is None or not token.get_secret_value():
            raise RuntimeError("QUEUE_API_TOKEN must be set: the queue's internal API answers only with "
                               "its service token (the local runner sets it; compose and Kubernetes take it "
                               "from their secrets).")
        self.bases = queue_base_urls(base_url)
        self._current = 0  # the replica that answered last: asked first
        self.http = httpx.AsyncClient(timeout=timeout_s,
                                      headers={"Authorization": f"Bearer {token.get_secret_value()}"})

    async def close(self) -> None:
        await self.http.aclose()

    async def get(self, path: str, params: dict[str, Any] | None = None) -> bytes:
        """The body of a 200 answer; 404/422 pass through, the rest becomes a 503."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        response = await self._ask(path, clean)
        if response.status_code == 200:
            return response.content
        if response.status_code in (400, 404, 422):
            raise QueueError(response.status_code, _detail(response))
        if response.status_code == 401:
            log.error("the queue refused the service token: QUEUE_API_TOKEN differs between gateway and queue")
        raise QueueError(503, QUEUE_FAILED)

    async def _ask(self, path: str, params: dict[str, Any]) -> httpx.Response:
        """The first usable answer, from the replica that answered last, then the others in
        turn: one that refuses the connection, times out or answers 5xx (it died, is starting,
        or lost a store) is skipped — these are reads, safe to ask again elsewhere."""
        response: httpx.Response | None = None
        for attempt in range(len(self.bases)):
            i = (self._current + attempt) % len(self.bases)
            try:
                response = await self.http.get(self.bases[i] + path, params=params)
            except httpx.TransportError as exc:
                log.warning("queue %s did not answer (%r)%s", self.bases[i], exc, self._next(attempt))
                continue
            if response.status_code < 500:
                self._current = i
                return response
            log.warning("queue %s answered %d%s", self.bases[i], response.status_code, self._next(attempt))
        if response is None:
            raise QueueError(503, QUEUE_UNREACHABLE)
        return response

    def _next(self, attempt: int) -> str:
        return "; asking the next replica" if attempt + 1 < len(self.bases) else ""

    async def chatbot_settings(self, chatbot_id: str) -> ChatbotView:
        """The chatbot's settings as the queue serves them: no channel secret."""
        return ChatbotView.model_validate_json(await self.get(internal_path(chatbot_id, "settings")))


def internal_path(chatbot_id: str, *rest: str) -> str:
    """The queue's path for these ids, each quoted as one segment (no "..", no "/")."""
    segments = [chatbot_id, *rest]
    if any(s in (".", "..") for s in segments):
        raise HTTPException(404, "Not found.")
    return "/internal/chatbots/" + "/".join(quote(s, safe="") for s in segments)


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    return body.get("detail", body) if isinstance(body, dict) else body
