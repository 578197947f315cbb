"""One settings style for every service: pydantic-settings, environment variables only.

Infrastructure variables carry the conventional names (KAFKA_BOOTSTRAP_SERVERS,
MONGODB_URI, REDIS_URL) so the same environment works under compose, Kubernetes or the
local runner. Service-specific settings subclass `ServiceSettings` and add their own
fields; a field `foo_bar` is read from `FOO_BAR`.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # The name in every log line.
    service_name: str = "handoff"
    log_level: str = "INFO"
    # JSON logs for machines (compose, k8s); plain text is easier to read in a terminal.
    log_json: bool = True

    # Where the service's HTTP (health, readiness, its API) listens. Defaults: gateway 8000,
    # channels 8001, queue 8002, intake 8003, summarizer 8004.
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # When set, GET /metrics (Prometheus, on the HTTP port) needs `Authorization: Bearer
    # <token>`: gateway and channels are public. Empty: open (the local stack).
    metrics_token: str = Field(default="", repr=False)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # Prepended to every topic name: lets several stacks (or test runs) share one cluster.
    kafka_topic_prefix: str = ""
    # Copies of every partition when topics are created (`./handoff topics`, the Kubernetes
    # Job, a recovery); above 1, writes are acked by all copies but one (min.insync.replicas).
    # 1 for a single broker (local, compose); 3 on a production cluster.
    kafka_topic_replication: int = Field(default=1, ge=1)
    # Real Kafka: on (exactly-once per partition producer). The embedded Tansu broker
    # rejects idempotent producers, so the local runner turns it off.
    kafka_enable_idempotence: bool = False
    # Tansu never answers a waiting fetch early: every hop may wait this long. Keep it
    # small on the latency path (visitor -> dashboard), larger for background consumers.
    kafka_fetch_max_wait_ms: int = 25
    # Consumers off the latency path (the settings table) wait this long: an idle consumer
    # costs the broker one fetch per wait.
    kafka_table_fetch_max_wait_ms: int = 1000
    # After this long without a record a consumer fetches with the longer wait below: an idle
    # stack costs the broker a few fetches a second instead of forty per consumer; the first
    # message after a quiet spell may wait up to it on each hop (shared/bus/pacing.py). The
    # same value as KAFKA_FETCH_MAX_WAIT_MS turns this off; on real Kafka both can be long.
    kafka_idle_after_s: float = 30.0
    kafka_idle_fetch_max_wait_ms: int = 250
    # Idle consumers stop fetching and producers ring them through Redis pub/sub after each
    # acknowledged record (at most twice a second per topic), so the first record after a
    # quiet spell is fetched at once and an idle stack costs the broker next to nothing
    # (shared/bus/doorbell.py). Redis away: the long wait above. A sleeping consumer still
    # looks every KAFKA_SLEEP_POLL_S. On real Kafka (answers waiting fetches early) it may be off.
    kafka_doorbell: bool = True
    kafka_sleep_poll_s: float = Field(default=30.0, gt=0)
    # Under load a consumer commits its finished offsets at most this often (each commit is
    # a broker request; one per round trip was one per handled message). After a quiet spell
    # the first commit goes at once. A crash redelivers at most this much more, which the
    # handlers absorb (they are idempotent); 0 commits after every round trip.
    kafka_commit_interval_ms: int = Field(default=100, ge=0)
    # A consumer that stops heartbeating loses its partitions to the group after the session
    # timeout; members learn of a rebalance at their next heartbeat. Each heartbeat is broker
    # work: at 500 ms the five groups' heartbeats were a third of an idle stack's broker time.
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 2000
    # Consumers retry a failing handler this many times (with backoff) before the event
    # is parked on the topic's dead-letter topic, so one poison event never stalls a partition.
    kafka_handler_attempts: int = 4
    kafka_retry_backoff_s: float = 0.2
    # On shutdown, in-flight handlers get this long to finish; an unfinished one is
    # cancelled uncommitted, so its message is redelivered to whoever takes the partition.
    kafka_graceful_timeout_s: float = 15.0

    mongodb_uri: str = "mongodb://127.0.0.1:27017/?retryWrites=false"
    # Each service has its own database (handoff_<service>).
    mongodb_db: str = Field(default="handoff")

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every Redis key a service writes starts with this, so services can share a server.
    redis_prefix: str = "handoff"
