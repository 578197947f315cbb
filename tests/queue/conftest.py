"""One queue service per test module, on its own namespace of the session's servers."""

from __future__ import annotations

import uuid

import pytest

from shared.bus import ensure_topics
from tests.conftest import Isolated
from tests.queue.support import queue_under_test


@pytest.fixture(scope="module")
async def queue(infra):
    iso = Isolated(infra, uuid.uuid4().hex[:8])
    await ensure_topics(infra.kafka_bootstrap, prefix=iso.topic_prefix)
    async with queue_under_test(iso) as running:
        yield running
