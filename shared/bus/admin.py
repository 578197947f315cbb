"""Creating this project's topics and their DLQs on the broker."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from shared.topics import ALL_TOPICS, Topic


async def ensure_topics(
    bootstrap_servers: str, prefix: str = "", topics: tuple[Topic, ...] = ALL_TOPICS, replication: int = 1
) -> list[str]:
    """Create every topic and its DLQ explicitly (the embedded broker does not auto-create)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [(prefix + t.name, t.partitions, t.compacted) for t in topics]
        wanted += [(prefix + t.dlq, 1, False) for t in topics]
        created: list[str] = []
        for name, partitions, compacted in wanted:  # one at a time: a concurrent creator makes one fail, not all
            if name not in existing and await create_topic(admin, name, partitions, compacted, replication):
                created.append(name)
        return created
    finally:
        await admin.close()


async def create_topic(admin: AIOKafkaAdminClient, name: str, partitions: int, compacted: bool,
                       replication: int = 1) -> bool:
    """Create a topic; False if it exists already. Replicated, a write is acknowledged
    (acks=all) only once all but one replica have it: one broker may be lost, no ack is."""
    configs = {"cleanup.policy": "compact"} if compacted else {}
    if replication > 1:
        configs["min.insync.replicas"] = str(replication - 1)
    try:
        response = await admin.create_topics([NewTopic(name, partitions, replication, topic_configs=configs)])
    except TopicAlreadyExistsError:
        return False
    for _, code, message in response.topic_errors:
        if code == TopicAlreadyExistsError.errno:
            return False
        if code:
            raise for_code(code)(f"creating {name}: {message}")
    return True


async def partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """Every topic and its partition count. One metadata request for all topics: naming a
    missing topic would make the embedded broker create it, with its default count."""
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}


async def remake_topic(admin: AIOKafkaAdminClient, name: str, partitions: int, compacted: bool,
                       replication: int = 1) -> None:
    """Make `name` exist, empty, with `partitions` partitions. A topic this creates is deleted
    and created once more: the embedded broker keeps what clients wrote to a topic it did not
    know, and under a plain create those partitions refuse writes (their offsets start again
    at 0 below the old records). One another process made with the right count is kept."""
    for _ in range(3):
        if not await create_topic(admin, name, partitions, compacted, replication):
            if (await partition_counts(admin)).get(name) == partitions:
                return
        await admin.delete_topics([name])
        if await create_topic(admin, name, partitions, compacted, replication):
            return
    raise KafkaError(f"could not recreate {name} with {partitions} partitions")
