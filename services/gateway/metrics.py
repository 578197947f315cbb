"""The gateway's websocket metrics (prometheus_client's default REGISTRY, served on /metrics).
Gauges move with the hub's own bookkeeping (live.py), so several hubs in one process (tests)
add up rather than overwrite each other."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

OPEN_SOCKETS = Gauge("handoff_gateway_open_sockets", "Dashboard websockets open on this gateway process.")
SUBSCRIPTIONS = Gauge("handoff_gateway_subscriptions",
                      "Chatbot subscriptions of the open dashboard websockets (one socket, one chatbot).")
FRAMES_SENT = Counter("handoff_gateway_frames_sent_total",
                      "Frames sent to dashboard websockets (a coalesced frame of several updates counts once).")
DROPPED_SLOW = Counter("handoff_gateway_dropped_slow_clients_total",
                       "Dashboard websockets closed with 4408 because they were stuck: further behind than "
                       "WS_CATCH_UP_UPDATES of a chatbot, or WS_SEND_QUEUE_SIZE other frames waiting.")
