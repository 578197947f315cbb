"""The queue's parts wired together (publishers declared once, here): what the service's
composition root (`app.py`), its internal API and its command line all use."""

from __future__ import annotations

from dataclasses import dataclass

from services.queue.ai import AiTurns
from services.queue.chatbots import ChatbotCatalog
from services.queue.commands import AgentCommands
from services.queue.feed import DashboardFeed
from services.queue.history import loop_rule_of
from services.queue.incoming import Incoming
from services.queue.line import LineRecord, VisitorLine
from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from shared.bus import Bus
from shared.topics import (
    AI_TURNS,
    CHATBOT_SETTINGS,
    CONVERSATION_STATE,
    DASHBOARD_UPDATES,
    OUTBOUND_MESSAGES,
    VISITOR_LINE,
)


@dataclass
class Queue:
    """The queue's parts, as the API and the command line use them."""

    settings: QueueSettings
    record: QueueRecord
    chatbots: ChatbotCatalog
    feed: DashboardFeed
    incoming: Incoming
    commands: AgentCommands
    line: VisitorLine


def build_queue(settings: QueueSettings, bus: Bus, record: QueueRecord, index: HandoffIndex) -> Queue:
    """Every part wired to its publishers (declared here once)."""
    dashboard_out = bus.publisher(DASHBOARD_UPDATES)
    state_out, outbound_out = bus.publisher(CONVERSATION_STATE), bus.publisher(OUTBOUND_MESSAGES)
    chatbots = ChatbotCatalog(record, bus.publisher(CHATBOT_SETTINGS))
    feed = DashboardFeed(record, index, chatbots, dashboard_out)
    ai = AiTurns(record, chatbots, bus.publisher(AI_TURNS), settings.ai_context_messages)
    line = VisitorLine(LineRecord(record.conversations), chatbots, bus.publisher(VISITOR_LINE), outbound_out,
                       history_hours=settings.line_history_hours, min_samples=settings.line_min_samples,
                       interval_s=settings.line_interval_s, max_places=settings.line_max_places)
    ports = dict(record=record, feed=feed, chatbots=chatbots, ai=ai, line=line, state_out=state_out,
                 outbound_out=outbound_out, answers_out=dashboard_out)
    incoming = Incoming(**ports)
    incoming.loop_rule = loop_rule_of(settings)
    return Queue(settings=settings, record=record, chatbots=chatbots, feed=feed,
                 incoming=incoming, commands=AgentCommands(**ports), line=line)
