"""Identifiers shared by every service."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def conversation_id_for(chatbot_id: str, channel: str, visitor_external_id: str) -> str:
    """One visitor on one channel of one chatbot is one conversation, for ever.

    Deterministic so that every edge (webhook retries included) computes the same key, and
    so that a visitor writing again after Close lands in the same (closed) conversation.
    """
    digest = hashlib.sha256(f"{chatbot_id}\x1f{channel}\x1f{visitor_external_id}".encode()).hexdigest()
    return f"cv_{digest[:24]}"


def new_visitor_id() -> str:
    """The web widget's anonymous visitor id (kept in the visitor's browser)."""
    return "v_" + secrets.token_hex(8)


def short_visitor_label(visitor_external_id: str) -> str:
    """The 'short random identifier' shown when a visitor gave no name, e.g. 'Visitor 3F9A2C'.

    Derived (not stored) so that every service and every rebuild shows the same label.
    """
    digest = hashlib.sha256(visitor_external_id.encode()).hexdigest()[:6].upper()
    return f"Visitor {digest}"
