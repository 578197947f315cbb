"""The channels service's metrics: outbound deliveries by platform and outcome."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

DELIVERIES = Counter(
    "handoff_channels_deliveries_total",
    "Outbound messages settled, by platform (web, telegram, whatsapp) and outcome: sent (the platform "
    "took it), failed (refused, or given up after DELIVERY_ATTEMPTS), unknown (its sender died "
    "mid-call: reported failed, never sent twice).",
    ["platform", "outcome"],
)
# One child per (platform, outcome), made once: a delivery costs one increment.
_children: dict[tuple[str, str], Any] = {}


def delivered(platform: str, outcome: str) -> None:
    child = _children.get((platform, outcome))
    if child is None:
        child = _children[platform, outcome] = DELIVERIES.labels(platform, outcome)
    child.inc()
