"""Identifiers shared by every service."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def derived_id(prefix: str, *parts: str, length: int = 32) -> str:
    """A stable id from stable inputs: `prefix` + a hash of `parts`. Whatever a service
    produces in answer to an input (messages, events, handoffs) gets an id derived from the
    input's, so a replayed input yields the same ids and every consumer drops the repeat."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return prefix + digest[:length]


def conversation_id_for(chatbot_id: str, channel: str, visitor_external_id: str) -> str:
    """One visitor on one channel of one chatbot is one conversation, for ever.

    Deterministic so that every edge (webhook retries included) computes the same key, and
    so that a visitor writing again after Close lands in the same (closed) conversation.
    """
    return derived_id("cv_", chatbot_id, channel, visitor_external_id, length=24)


def new_visitor_id() -> str:
    """The web widget's anonymous visitor id (kept in the visitor's browser)."""
    return "v_" + secrets.token_hex(8)


def short_visitor_label(visitor_external_id: str) -> str:
    """The 'short random identifier' shown when a visitor gave no name, e.g. 'Visitor 3F9A2C'.

    Derived (not stored) so that every service and every rebuild shows the same label.
    """
    digest = hashlib.sha256(visitor_external_id.encode()).hexdigest()[:6].upper()
    return f"Visitor {digest}"


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Remove every secret from a text that may reach a log line, a stored error or an
    agent's screen (some servers echo the credential they refused)."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "[redacted]")
    return text
