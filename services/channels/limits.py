"""Bounds on what the outside world can make channels read: request bodies (413 past a cap,
before reading more than the cap) and JSON nesting (Python's json module recurses, so a
body of 100,000 `[` would otherwise end in a RecursionError)."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Telegram's and Meta's webhooks get the larger cap; everything else (the widget API) the smaller.
WEBHOOK_PATH = re.compile(r"^/(telegram|whatsapp)/[^/]+/webhook/?$")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_TO_SQUARE = bytes.maketrans(b"{}", b"[]")


class UnusableJson(ValueError):
    """Not JSON, nested too deeply, or not an object; the text says which (no content)."""


def nested_deeper_than(raw: bytes, limit: int) -> bool:
    """True when the JSON text's brackets nest deeper than `limit` (or do not balance, which
    json.loads would refuse anyway). Linear in C: strings removed, then the innermost pairs
    removed `limit` times; whatever is left was nested deeper."""
    brackets = _STRING.sub(b"", raw).translate(_TO_SQUARE, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return True  # unbalanced
        brackets = shorter
    return bool(brackets)


def json_object(raw: bytes, max_depth: int) -> dict[str, Any]:
    if nested_deeper_than(raw, max_depth):
        raise UnusableJson(f"the JSON is nested too deeply (at most {max_depth} levels)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise UnusableJson("the body is not JSON") from None
    if not isinstance(data, dict):
        raise UnusableJson("the body is not a JSON object")
    return data


class BodyTooLarge(HTTPException):
    def __init__(self, cap: int) -> None:
        super().__init__(413, f"The request body is too large (at most {cap} bytes).")


class BodyLimits:
    """ASGI middleware. A declared Content-Length over the cap is answered 413 at once, with
    nothing read; a chunked body is counted while it is read and refused as soon as it
    passes the cap. Bodies for the widget API (small, parsed by FastAPI) are also checked
    for JSON nesting here: 400 before any parser sees them. Webhook bodies are checked by
    their endpoints, after authentication, which answer a signed body they cannot use as
    ignored (a 4xx makes the platform redeliver it)."""

    def __init__(self, app: ASGIApp, api_cap: int, webhook_cap: int, max_depth: int) -> None:
        self.app, self.api_cap, self.webhook_cap, self.max_depth = app, api_cap, webhook_cap, max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        webhook = bool(WEBHOOK_PATH.match(scope["path"]))
        cap = self.webhook_cap if webhook else self.api_cap
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > cap:
            await _answer(send, 413, BodyTooLarge(cap).detail)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        counted = _Counted(receive, cap)
        if webhook or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            downstream = counted
        else:
            try:
                body = await counted.read_all()
            except BodyTooLarge as exc:
                await _answer(send, 413, exc.detail)
                return
            if body is None:
                return  # the client went away
            if body and nested_deeper_than(body, self.max_depth):
                await _answer(send, 400, f"The JSON is nested too deeply (at most {self.max_depth} levels).")
                return
            downstream = _Replay(body, receive)
        try:
            await self.app(scope, downstream, tracked_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _answer(send, 413, exc.detail)


class _Counted:
    def __init__(self, receive: Receive, cap: int) -> None:
        self.receive, self.cap, self.seen = receive, cap, 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.cap:
                raise BodyTooLarge(self.cap)
        return message

    async def read_all(self) -> bytes | None:
        chunks = []
        while True:
            message = await self()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


class _Replay:
    def __init__(self, body: bytes, receive: Receive) -> None:
        self.body, self.receive, self.done = body, receive, False

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()
        self.done = True
        return {"type": "http.request", "body": self.body, "more_body": False}


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
