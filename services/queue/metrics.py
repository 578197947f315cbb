"""The queue's metrics: open handoffs per chatbot (read from the Redis index at scrape time)
and how long visitors waited for an agent's first reply."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Gauge, Histogram

from services.queue.chatbots import ChatbotCatalog
from services.queue.store import HandoffIndex

OPEN_HANDOFFS = Gauge("handoff_queue_open_handoffs",
                      "Open handoffs (handed off, waiting for or talking with a human) per chatbot, from "
                      "the Redis index; every queue instance reports the same figure.", ["chatbot_id"])
FIRST_REPLY_SECONDS = Histogram(
    "handoff_queue_first_reply_seconds",
    "From the start of a waiting period (the handoff, or a reopen) to the first agent reply in it, by channel.",
    ["channel"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400),
)


class OpenHandoffsGauge:
    """Refreshes `handoff_queue_open_handoffs` before a scrape: one pipelined ZCARD per known
    chatbot on the index (never a Mongo count)."""

    def __init__(self, chatbots: ChatbotCatalog, index: HandoffIndex) -> None:
        self.chatbots, self.index = chatbots, index

    async def refresh(self) -> None:
        for chatbot_id, count in (await self.index.open_counts(sorted(self.chatbots.ids()))).items():
            OPEN_HANDOFFS.labels(chatbot_id).set(count)


def first_reply(channel: str, waiting_since: datetime | None, replied_at: datetime) -> None:
    """An agent's first reply since the visitor began waiting."""
    if waiting_since is not None:
        FIRST_REPLY_SECONDS.labels(channel).observe(max(0.0, (replied_at - waiting_since).total_seconds()))
