"""Logging for every service: JSON lines carrying the service, chatbot and conversation id.

`bind_event(event)` puts the ids of the event being handled into a context variable, so
every log line written while handling it carries them without passing them around.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("handoff_log_context", default={})


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for k, v in _context.get().items():
            setattr(record, k, v)
        return True


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    token = _context.set({**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind_event(event: Any) -> contextlib.AbstractContextManager[None]:
    return bind(
        event_id=getattr(event, "event_id", None),
        chatbot_id=getattr(event, "chatbot_id", None),
        conversation_id=getattr(event, "conversation_id", None),
    )


def configure_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s [%(service)s] %(name)s: %(message)s"))
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Kafka client is chatty at INFO (every rebalance, every coordinator lookup).
    for noisy in ("aiokafka", "kafka", "faststream.access.kafka", "pymongo", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
