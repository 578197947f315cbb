"""What services are given to reach the embedded servers (deploy/infra.py)."""

from __future__ import annotations

from pymongo import AsyncMongoClient

from deploy.infra import local_env


async def test_services_poll_the_embedded_mongo_wire_server_instead_of_holding_a_streamed_hello():
    """SecantusDB holds each client's streamed `hello` by waking every 250 ms: with five
    services that was most of its idle CPU. Polled, a client asks once per heartbeat."""
    client = AsyncMongoClient(local_env(9092, 6379, 27017)["MONGODB_URI"], connect=False)
    assert client.options.server_monitoring_mode == "poll"
    assert client.options.retry_writes is False
    await client.close()
