"""Which request bodies channels bounds how: webhooks (Telegram's and Meta's) get the larger
cap and reach their endpoints as they arrive, to be checked after authentication; the widget
API gets the smaller cap and its JSON nesting checked before any parser sees it. The
mechanics are `shared.http_limits`."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Scope

from shared.http_limits import BodyLimit

WEBHOOK_PATH = re.compile(r"^/(telegram|whatsapp)/[^/]+/webhook/?$")


def is_webhook(scope: Scope) -> bool:
    return bool(WEBHOOK_PATH.match(scope["path"]))


def channel_body_limit(app: ASGIApp, api_cap: int, webhook_cap: int, max_depth: int) -> BodyLimit:
    return BodyLimit(app, api_cap, max_depth,
                     cap=lambda scope: webhook_cap if is_webhook(scope) else api_cap, streamed=is_webhook)
