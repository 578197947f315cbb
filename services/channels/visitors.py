"""Widget visitor tokens: the server-issued credential of an anonymous web visitor.

A token names a chatbot, a visitor id and an expiry, signed with HMAC-SHA256
(`WIDGET_TOKEN_SECRET`): `w1.<chatbot_id>.<visitor_id>.<expires_at>.<signature>`. Every widget
endpoint and the widget socket take it instead of a bare visitor id, so knowing (or
guessing) a visitor id is no longer enough to read or write that visitor's conversation.
Checking one costs no store read.

Tokens are short-lived (`WIDGET_TOKEN_TTL_S`) and renewed by the widget from the second half
of their life on, or up to `WIDGET_TOKEN_RENEW_GRACE_S` after they expired (a visitor coming
back after a week keeps the conversation). Only the newest token of a visitor can be renewed:
Redis keeps, per visitor, the expiry of the newest token handed out, and a renewal must
present that one. So a copied token is renewable only until its owner renews (or, if the
thief renews first, the owner's next renewal fails and the widget starts over, which shows),
and never past the grace period.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from shared.ids import new_visitor_id

log = logging.getLogger("handoff.channels.visitors")

VERSION = "w1"
_TOKEN = re.compile(r"^w1\.([A-Za-z0-9_-]{1,64})\.(v_[0-9a-f]{16})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")
# A renewal repeated this soon (its answer was lost, or two tabs renewed at once) gets the
# token the first one got, instead of being taken for a stale token.
REPLAY_S = 120


class BadToken(Exception):
    """Why a token was refused, in words for the visitor's widget (and its developer)."""


@dataclass(frozen=True)
class VisitorSession:
    chatbot_id: str
    visitor_id: str
    expires_at: int  # unix seconds
    token: str

    def answer(self, now: float, ttl_s: int) -> dict[str, object]:
        """The JSON the widget keeps. Durations as well as instants: a visitor's clock may be off."""
        renew_after = renew_from(self.expires_at, ttl_s)
        return {"token": self.token, "visitor_id": self.visitor_id, "expires_at": self.expires_at,
                "expires_in": max(0, int(self.expires_at - now)), "renew_in": max(0, int(renew_after - now))}


def renew_from(expires_at: int, ttl_s: int) -> int:
    """Renewal is worth it once half the token's life has passed."""
    return expires_at - ttl_s // 2


def secret_or_random(configured: str) -> bytes:
    if configured:
        return configured.encode()
    log.warning("WIDGET_TOKEN_SECRET is not set: widget tokens are signed with a random key of this "
                "process, so they stop working when it restarts and on other instances. Set it.")
    return secrets.token_bytes(32)


class NewestTokens:
    """Per visitor, the expiry of the newest token handed out (Redis), advanced atomically:
    two renewals of the same token cannot both win."""

    # KEYS[1]: the visitor's key; ARGV: the presented token's expiry, the new one, the key's TTL.
    # Returns the newest expiry after the call: the new one when the presented token was the
    # newest (or nothing was recorded: lost keys must not lock visitors out), else what is there.
    _ADVANCE = """
local current = redis.call('GET', KEYS[1])
if current == false or tonumber(current) <= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return ARGV[2]
end
return current
"""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix
        self._advance = redis.register_script(self._ADVANCE)

    async def advance(self, chatbot_id: str, visitor_id: str, presented: int, new: int, ttl_s: int) -> int:
        key = f"{self.prefix}:widget:newest:{chatbot_id}:{visitor_id}"
        return int(await self._advance(keys=[key], args=[presented, new, max(1, ttl_s)]))


class WidgetTokens:
    def __init__(self, secret: bytes, newest: NewestTokens, ttl_s: int, grace_s: int) -> None:
        self._secret, self.newest, self.ttl_s, self.grace_s = secret, newest, ttl_s, grace_s

    def _sign(self, chatbot_id: str, visitor_id: str, expires_at: int) -> VisitorSession:
        body = f"{VERSION}.{chatbot_id}.{visitor_id}.{expires_at}"
        mac = hmac.new(self._secret, body.encode(), hashlib.sha256).digest()
        signature = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        return VisitorSession(chatbot_id, visitor_id, expires_at, f"{body}.{signature}")

    def issue(self, chatbot_id: str, now: float | None = None, visitor_id: str | None = None) -> VisitorSession:
        """A token for a new visitor (or, for tests and tools, a given one)."""
        now = time.time() if now is None else now
        return self._sign(chatbot_id, visitor_id or new_visitor_id(), int(now) + self.ttl_s)

    def verify(self, token: str | None, chatbot_id: str, now: float | None = None, grace_s: int = 0) -> VisitorSession:
        now = time.time() if now is None else now
        if not token:
            raise BadToken("Missing widget token: start a session first (POST /web/{chatbot_id}/session).")
        match = _TOKEN.match(token)
        if match is None:
            raise BadToken("Invalid widget token.")
        token_bot, visitor_id, expires_at = match[1], match[2], int(match[3])
        if not hmac.compare_digest(self._sign(token_bot, visitor_id, expires_at).token, token):
            raise BadToken("Invalid widget token.")
        if token_bot != chatbot_id:
            raise BadToken("This widget token belongs to another chatbot.")
        if now >= expires_at + grace_s:
            raise BadToken("The widget token has expired: renew it (POST /web/{chatbot_id}/session/renew)."
                           if not grace_s else "The widget token expired too long ago: start a new session.")
        return VisitorSession(chatbot_id, visitor_id, expires_at, token)

    async def renew(self, token: str | None, chatbot_id: str, now: float | None = None) -> VisitorSession:
        """The visitor's next token: the same one while renewal is not due yet (nothing stored),
        else a fresh one, if `token` is the newest of its visitor and expired at most the
        grace period ago."""
        now = time.time() if now is None else now
        old = self.verify(token, chatbot_id, now, grace_s=self.grace_s)
        if now < renew_from(old.expires_at, self.ttl_s):
            return old
        wanted = int(now) + self.ttl_s
        # The record lives as long as any token it could refuse might still be renewed.
        newest = await self.newest.advance(chatbot_id, old.visitor_id, old.expires_at, wanted, self.ttl_s + self.grace_s)
        if newest == wanted or (newest > old.expires_at and newest - self.ttl_s >= now - REPLAY_S):
            return self._sign(chatbot_id, old.visitor_id, newest)
        raise BadToken("This widget token was already renewed: use the newer one, or start a new session.")
