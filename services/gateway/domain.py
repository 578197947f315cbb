"""The gateway's rules, without I/O: agents and sessions, who may see what, the live
protocol's frames, and how a queue CommandResult becomes an HTTP answer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from shared.events import AgentRef, ChatbotSettingsChanged, CommandResult
from shared.http_limits import nested_deeper_than
from shared.views import REPLY_MAX_CHARS, reply_too_long

INVALID_LOGIN = "Invalid e-mail or password."
TOO_MANY_ATTEMPTS = "Too many sign-in attempts. Try again in {wait}."
SIGN_IN_BUSY = "Too many sign-ins at once. Try again in {wait}."
NOT_SIGNED_IN = "Not signed in."
NOT_A_MEMBER = "Not a member of this chatbot."
BAD_CSRF = "Missing or invalid CSRF token."
EMPTY_REPLY = "Reply text cannot be empty."
QUEUE_UNREACHABLE = "The queue service is unreachable. Try again in a moment."
QUEUE_FAILED = "The queue service could not answer. Try again in a moment."
COMMAND_PENDING = "The queue has not answered yet; the command will still be applied once."


# ---------------------------------------------------------------- agents
def email_key(email: str) -> str:
    """E-mails are unique case-insensitively: this is the key they are unique by."""
    return email.strip().lower()


def display_name(first_name: str | None, email: str) -> str:
    """What visitors and colleagues see: the first name, or the e-mail when there is none."""
    return first_name.strip() if first_name and first_name.strip() else email


class AgentView(BaseModel):
    agent_id: str
    email: str
    first_name: str | None = None
    display_name: str
    muted: bool = False

    def ref(self) -> AgentRef:
        return AgentRef(agent_id=self.agent_id, display_name=self.display_name)


_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("not a real password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def in_words(seconds: int) -> str:
    """A wait as people say it: "1 second", "40 seconds", "5 minutes" (rounded up)."""
    if seconds <= 1:
        return "1 second"
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{-(-seconds // 60)} minutes"


@dataclass(frozen=True)
class LoginBackoff:
    """How long an e-mail waits between sign-in attempts: the first `free_failures` failures
    cost nothing, each further one doubles the wait from `base_s`, up to `max_s`. Growing
    instead of a lock-out: guessing gets slow at once, yet the real agent waits `max_s` at
    most after the last guess, and a success clears it all."""

    free_failures: int
    base_s: int
    max_s: int

    def wait_after(self, failures: int) -> int:
        """Seconds before the next attempt, after this many failures (0: none)."""
        beyond = failures - self.free_failures
        if beyond <= 0:
            return 0
        return min(self.max_s, self.base_s * 2 ** min(beyond - 1, 40))

    def steps(self) -> list[int]:
        """Every wait `wait_after` can give, shortest first."""
        out, wait = [], self.base_s
        while wait < self.max_s:
            out.append(wait)
            wait *= 2
        return [*out, self.max_s]

    @property
    def failures_that_matter(self) -> int:
        """Past this many failures the wait no longer grows (the count can stop there)."""
        return self.free_failures + len(self.steps())


# ---------------------------------------------------------------- sessions
def new_secret() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """Sessions are stored by this digest: a leaked sessions collection opens no session."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and secrets.compare_digest(expected, given or "")


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Same-origin (Origin's host:port equals the Host header) or on the allow-list.

    A handshake without Origin comes from a non-browser client, which cannot be tricked into
    riding an agent's cookie, so it is let through (the cookie is still required)."""
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if origin in allowed:
        return True
    netloc = urlsplit(origin).netloc
    return bool(host) and netloc.lower() == (host or "").lower()


# ---------------------------------------------------------------- request bodies
class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command_id: str = Field(min_length=8, max_length=128)


class ReplyBody(CommandBody):
    text: str

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError(EMPTY_REPLY)
        if len(v) > REPLY_MAX_CHARS:
            raise ValueError(reply_too_long())
        return v


class LoginBody(BaseModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class PreferencesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    muted: bool


def validation_message(exc: ValidationError) -> str:
    """One clear sentence per problem, e.g. "End Time must be after Start Time."."""
    parts = []
    for err in exc.errors():
        msg = str(err.get("msg", "Invalid value."))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        else:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
            msg = f"{where}: {msg}" if where else msg
        parts.append(msg)
    return " ".join(parts) or "Invalid request body."


# ---------------------------------------------------------------- command results
def command_response(result: CommandResult) -> tuple[int, dict[str, Any]]:
    """The HTTP answer for one CommandResult: 200 with the result, or the queue's status
    code (404 unknown, 409 refused, 422 invalid) with `{"detail": error}`."""
    if result.ok:
        return 200, result.model_dump(mode="json")
    status = result.status_code if result.status_code >= 400 else 409
    return status, {"detail": result.error or "The command was refused."}


class PendingCommands:
    """REST calls waiting for their CommandResult, by command id. Register before
    publishing, so an answer that comes back quickly is never missed."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[CommandResult]]] = {}

    def expect(self, command_id: str) -> asyncio.Future[CommandResult]:
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(command_id, set()).add(fut)
        return fut

    def forget(self, command_id: str, fut: asyncio.Future[CommandResult]) -> None:
        waiters = self._waiting.get(command_id)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                del self._waiting[command_id]

    def resolve(self, result: CommandResult) -> int:
        waiters = self._waiting.pop(result.command_id, set())
        for fut in waiters:
            if not fut.done():
                fut.set_result(result)
        return len(waiters)

    def __len__(self) -> int:
        return len(self._waiting)


# ---------------------------------------------------------------- chatbots the gateway knows
@dataclass
class ChatbotInfo:
    chatbot_id: str
    name: str
    handoff_enabled: bool
    # The settings' version: the dashboard keeps the newest of what reaches it in any order
    # (/api/me, a "settings" frame, a save's own answer).
    version: int = 0


@dataclass
class ChatbotDirectory:
    """Names and Human Handoff switches from `chatbot.settings` (read from the beginning)."""

    chatbots: dict[str, ChatbotInfo] = field(default_factory=dict)

    def apply(self, event: ChatbotSettingsChanged) -> ChatbotInfo | None:
        """Record the change; returns the new info (None when the chatbot was deleted)."""
        cid = event.settings.chatbot_id
        if event.deleted:
            self.chatbots.pop(cid, None)
            return None
        info = ChatbotInfo(cid, event.settings.name, event.settings.human_handoff.enabled, event.settings.version)
        self.chatbots[cid] = info
        return info

    def describe(self, chatbot_id: str) -> dict[str, Any]:
        info = self.chatbots.get(chatbot_id)
        if info is None:  # a membership for a chatbot whose settings have not arrived (yet)
            return {"chatbot_id": chatbot_id, "name": chatbot_id, "handoff_enabled": False, "settings_version": None}
        return {"chatbot_id": info.chatbot_id, "name": info.name, "handoff_enabled": info.handoff_enabled,
                "settings_version": info.version}


# ---------------------------------------------------------------- live protocol frames
class SubscribeFrame(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["subscribe"]
    chatbot_id: str = Field(min_length=1, max_length=64)


class UnsubscribeFrame(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["unsubscribe"]
    chatbot_id: str = Field(min_length=1, max_length=64)


class PingFrame(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["ping"]


class PresenceFrame(BaseModel):
    """What the agent's pane shows (services/gateway/presence.py): viewing or typing in a
    conversation of the chatbot, or left (the pane closed)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["presence"]
    chatbot_id: str = Field(min_length=1, max_length=64)
    conversation_id: str = Field(min_length=1, max_length=128)
    state: Literal["viewing", "typing", "left"]


ClientFrame = Annotated[SubscribeFrame | UnsubscribeFrame | PingFrame | PresenceFrame, Field(discriminator="type")]
CLIENT_FRAME: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
MAX_CLIENT_FRAME = 4096


def parse_client_frame(text: str | None, max_depth: int = 32) -> ClientFrame | str:
    """The frame, or the error to answer with (the socket stays open)."""
    if text is None:
        return "Frames must be JSON text."
    if len(text) > MAX_CLIENT_FRAME:
        return "Frame too large."
    if nested_deeper_than(text, max_depth):
        return "Frame nested too deeply."
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return "Frames must be JSON objects."
    if not isinstance(data, dict):
        return "Frames must be JSON objects."
    kind = data.get("type")
    if kind not in ("subscribe", "unsubscribe", "ping", "presence"):
        return f"Unknown frame type: {kind!r}." if kind is not None else "Frame has no type."
    try:
        return CLIENT_FRAME.validate_python(data)
    except ValidationError as exc:
        return f"Invalid {kind} frame: {validation_message(exc)}"


def error_frame(error: str, chatbot_id: str | None = None, code: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error"}
    if chatbot_id is not None:
        frame["chatbot_id"] = chatbot_id
    if code is not None:
        frame["code"] = code
    frame["error"] = error
    return frame

