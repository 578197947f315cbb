"""The Grafana dashboard (deploy/grafana/handoff.json) against the metrics the code defines
and docs/contracts.md lists: every query names a metric that exists, every metric is on the
dashboard and in the docs, and the data source is the dashboard's variable."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "handoff.json"
# Defined by the gateway's live fan-out (services/gateway/metrics.py).
GATEWAY = {"handoff_gateway_open_sockets", "handoff_gateway_subscriptions", "handoff_gateway_frames_sent_total",
           "handoff_gateway_dropped_slow_clients_total"}
MODULES = ("shared.metrics", "shared.bus.metrics", "shared.llm", "services.queue.metrics", "services.channels.metrics")


def _defined() -> dict[str, str]:
    """Every handoff_ metric of the registry: its exposed family name -> type."""
    for module in MODULES:
        importlib.import_module(module)
    if (ROOT / "services" / "gateway" / "metrics.py").exists():
        importlib.import_module("services.gateway.metrics")
    found = {}
    for family in REGISTRY.collect():
        if family.name.startswith("handoff_"):
            found[family.name + ("_total" if family.type == "counter" else "")] = family.type
    return found


def _targets(panels: list[dict]) -> list[dict]:
    out = []
    for panel in panels:
        out += panel.get("targets", []) + _targets(panel.get("panels", []))
    return out


def _used(expr: str) -> set[str]:
    names = set(re.findall(r"\bhandoff_[a-z_]+", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def test_every_query_names_a_defined_metric_and_every_metric_is_shown_and_documented():
    dashboard = json.loads(DASHBOARD.read_text())
    defined = _defined()
    targets = _targets(dashboard["panels"])
    used = set().union(*(_used(t["expr"]) for t in targets))
    assert used - set(defined) - GATEWAY == set()  # no query of a metric nobody defines
    assert set(defined) | GATEWAY <= used  # every metric has a panel
    for name in used:
        if defined.get(name) == "histogram":
            assert any(f"{name}_bucket" in t["expr"] for t in targets), name
    section = (ROOT / "docs" / "contracts.md").read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(handoff_[a-z_]+)`", section, re.MULTILINE))
    assert documented == set(defined) | GATEWAY


def test_the_data_source_is_a_variable_so_the_dashboard_imports_anywhere():
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    ref = {"type": "prometheus", "uid": "${" + variable["name"] + "}"}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"] == ref for p in panels)
    assert all(t["datasource"] == ref for t in _targets(dashboard["panels"]))
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_local_scrape_config_has_one_job_per_service_on_its_port(monkeypatch):
    import yaml

    from deploy.stack import SERVICES, Ports

    config = yaml.safe_load((ROOT / "deploy" / "grafana" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: [t for c in j["static_configs"] for t in c["targets"]] for j in config["scrape_configs"]}
    monkeypatch.delenv("HANDOFF_PORT_BASE", raising=False)
    ports = Ports.from_env()  # the local runner's defaults
    assert jobs == {name: [f"127.0.0.1:{ports.of(name)}"] for name in SERVICES}
