"""Bounds on what a client can make a service read: request bodies (413 past a cap, before
reading more than the cap) and JSON nesting (Python's json module recurses, so a body of
100,000 `[` would otherwise end in a RecursionError, a 500). Every HTTP service uses these."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = "The request body is too large (at most {limit} bytes)."
TOO_DEEP = "The JSON body is nested too deeply (at most {limit} levels)."

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_TO_SQUARE = bytes.maketrans(b"{}", b"[]")


def nested_deeper_than(raw: bytes | str, limit: int) -> bool:
    """True when the JSON text's brackets nest deeper than `limit`. Linear and in C: strings
    removed, then the innermost pairs removed `limit` times; whatever is left was nested
    deeper. Text whose brackets do not balance counts as deeper only when its unclosed `[`
    could be (json.loads refuses it anyway, after recursing at most that deep)."""
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
    brackets = _STRING.sub(b"", data).translate(_TO_SQUARE, _NOT_BRACKETS)
    for removed in range(limit):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):  # unbalanced: what is left is `]]..[[`
            return removed + len(brackets) - len(brackets.rstrip(b"[")) > limit
        brackets = shorter
    return bool(brackets)


class UnusableJson(ValueError):
    """Not JSON, nested too deeply, or not an object; the text says which (no content)."""


class NestedTooDeeply(UnusableJson):
    """Refused before parsing: a 400 where a plain UnusableJson is a 422."""


def json_object(raw: bytes | str, max_depth: int) -> dict[str, Any]:
    if nested_deeper_than(raw, max_depth):
        raise NestedTooDeeply(TOO_DEEP.format(limit=max_depth))
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise UnusableJson("The request body must be JSON.") from None
    if not isinstance(data, dict):
        raise UnusableJson("The request body must be a JSON object.")
    return data


class BodyTooLarge(HTTPException):
    def __init__(self, cap: int) -> None:
        super().__init__(413, TOO_LARGE.format(limit=cap))


class BodyLimit:
    """ASGI middleware. A declared Content-Length over the cap is answered 413 at once, with
    nothing read; a chunked body is counted while it is read and refused as soon as it passes
    the cap. Bodies are read (at most the cap) before the app runs and, when `max_depth` is
    set, checked for JSON nesting (400 before any parser sees them).

    `streamed(scope)` names requests whose body goes to the app as it arrives, still counted:
    webhooks, whose endpoints check the body only after authenticating it (a signed body they
    cannot use is answered as ignored; a 4xx would make the platform redeliver it).
    `cap(scope)` may give some paths a larger cap."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int | None = None,
                 cap: Callable[[Scope], int] | None = None,
                 streamed: Callable[[Scope], bool] | None = None) -> None:
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth
        self.cap = cap or (lambda _scope: max_bytes)
        self.streamed = streamed or (lambda _scope: False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap(scope)
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await json_answer(send, 400, "Invalid Content-Length.")
                return
            if int(declared) > cap:
                await json_answer(send, 413, TOO_LARGE.format(limit=cap))
                return
        counted = _Counted(receive, cap)
        if self.streamed(scope) or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            downstream: Receive = counted
        else:
            try:
                body = await counted.read_all()
            except BodyTooLarge as exc:
                await json_answer(send, 413, exc.detail)
                return
            if body is None:
                return  # the client went away
            if self.max_depth is not None and body and nested_deeper_than(body, self.max_depth):
                await json_answer(send, 400, TOO_DEEP.format(limit=self.max_depth))
                return
            downstream = _Replay(body, receive)
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, downstream, tracked_send)
        except BodyTooLarge as exc:  # a streamed body passed the cap
            if started:
                raise
            await json_answer(send, 413, exc.detail)


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


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def json_answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
