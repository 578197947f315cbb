"""What every use case of the queue works with: the record, the dashboard feed, the chatbot
catalog, the AI turns, the visitors' line and the publishers (declared once, in `parts.build_queue`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.queue.ai import AiTurns
from services.queue.chatbots import ChatbotCatalog
from services.queue.feed import DashboardFeed
from services.queue.line import VisitorLine
from services.queue.store import QueueRecord
from shared.bus import EventPublisher
from shared.ids import utcnow


class UseCases:
    def __init__(self, record: QueueRecord, feed: DashboardFeed, chatbots: ChatbotCatalog, ai: AiTurns, *,
                 line: VisitorLine, state_out: EventPublisher, outbound_out: EventPublisher,
                 answers_out: EventPublisher, clock: Callable[[], datetime] = utcnow) -> None:
        self.record = record
        self.feed = feed
        self.chatbots = chatbots
        self.ai = ai
        self.line = line  # the visitor's place in line
        self.state_out = state_out
        self.outbound_out = outbound_out
        self.answers_out = answers_out  # command results, on dashboard.updates
        self.clock = clock
