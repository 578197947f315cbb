"""docker-compose.yml is valid (Debian's docker-compose validates it without an engine) and
wired as the README promises: real Kafka/MongoDB/Redis, five services with healthchecks,
start-up ordered on health, scalable workers, and only settings the services read."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess

import pytest
import yaml

from shared.settings import ServiceSettings
from tests.harness import ROOT

SERVICES = ("queue", "intake", "summarizer", "gateway", "channels")


def compose_config(**env: str) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not installed (the README's test command installs it)")
    clean = {k: v for k, v in os.environ.items() if k not in ("QUEUE_API_TOKEN", "WIDGET_TOKEN_SECRET")}
    return subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, env={**clean, **env})


@pytest.fixture(scope="module")
def compose() -> dict:
    result = compose_config(QUEUE_API_TOKEN="compose-test-token-0123456789", WIDGET_TOKEN_SECRET="compose-widget-secret")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_queue_api_token_is_required_and_given_to_queue_and_gateway_only(compose):
    refused = compose_config()
    assert refused.returncode != 0 and "QUEUE_API_TOKEN" in refused.stderr
    holders = {name for name, svc in compose["services"].items()
               if "QUEUE_API_TOKEN" in (svc.get("environment") or {})}
    assert holders == {"queue", "gateway"}


def test_widget_token_secret_is_required_and_given_to_channels_only(compose):
    refused = compose_config(QUEUE_API_TOKEN="compose-test-token-0123456789")
    assert refused.returncode != 0 and "WIDGET_TOKEN_SECRET" in refused.stderr
    holders = {name for name, svc in compose["services"].items()
               if "WIDGET_TOKEN_SECRET" in (svc.get("environment") or {})}
    assert holders == {"channels"}


def test_infrastructure_is_real_kafka_mongo_redis(compose):
    images = {name: svc.get("image", "") for name, svc in compose["services"].items()}
    assert images["kafka"].startswith("apache/kafka")
    assert images["mongo"].startswith("mongo:")
    assert images["redis"].startswith("redis:")
    assert "KAFKA_PROCESS_ROLES" in compose["services"]["kafka"]["environment"]  # KRaft, no ZooKeeper


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_healthchecked_and_waits_for_healthy_dependencies(compose, name):
    svc = compose["services"][name]
    assert svc["command"][:3] == ["python", "-m", f"services.{name}"]
    assert "/readyz" in " ".join(svc["healthcheck"]["test"])
    deps = svc["depends_on"]
    for infra in ("kafka", "mongo", "redis"):
        assert deps[infra]["condition"] == "service_healthy"
    assert deps["topics"]["condition"] == "service_completed_successfully"
    assert (ROOT / "services" / name / "__main__.py").exists()


@pytest.mark.parametrize("name", ["queue", "intake", "summarizer"])
def test_workers_publish_no_host_ports_so_they_scale(compose, name):
    # `docker compose up --scale queue=2` must not fight over a host port.
    assert not compose["services"][name].get("ports")


@pytest.mark.parametrize("name", SERVICES)
def test_every_environment_variable_is_a_setting_of_the_service(compose, name):
    module = importlib.import_module(f"services.{name}.settings")
    classes = [c for c in vars(module).values()
               if isinstance(c, type) and issubclass(c, ServiceSettings) and c is not ServiceSettings]
    assert classes, f"services/{name}/settings.py defines no ServiceSettings subclass"
    fields = set().union(*(c.model_fields for c in classes))
    unknown = [k for k in compose["services"][name]["environment"] if k.lower() not in fields]
    assert not unknown, f"{name}: compose sets variables the service never reads: {unknown}"
