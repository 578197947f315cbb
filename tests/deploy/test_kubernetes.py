"""deploy/kubernetes renders with `kubectl kustomize`, every object is valid for the newest
Kubernetes API that kubernetes-validate knows (strict: unknown fields fail), and the rendered
objects do what the README promises: a Deployment per service with /healthz and /readyz
probes, resources and a non-root, read-only security context; a PodDisruptionBudget and an
autoscaler each; the topic Job; Secrets for every secret a service reads and only for those
that need it; only settings the services read; and NetworkPolicies under which only the gateway
reaches the queue and only gateway and channels are reachable from outside (checked by a small
evaluator of the rendered policies)."""

from __future__ import annotations

import base64
import importlib
import inspect
import ipaddress
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from shared import topics
from shared.settings import ServiceSettings
from tests.harness import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
SERVICES = ("queue", "intake", "summarizer", "gateway", "channels")
PUBLIC = {"gateway", "channels"}
SECRET_HOLDERS = {  # the secret settings, and the services that need each
    "QUEUE_API_TOKEN": {"queue", "gateway"},
    "WIDGET_TOKEN_SECRET": {"channels"},
    "OPENAI_API_KEY": {"intake", "summarizer"},
    "MONGODB_URI": {"queue", "summarizer", "gateway", "channels"},
    "REDIS_URL": {"queue", "summarizer", "gateway", "channels"},
    "METRICS_TOKEN": set(SERVICES),
}
# The topics each consumer group shares among its replicas (services/<name>/app.py): more
# replicas than the fewest partitions would idle.
GROUP_TOPICS = {
    "queue": (topics.VISITOR_MESSAGES, topics.CONVERSATION_EVENTS, topics.AGENT_COMMANDS,
              topics.HANDOFF_SUMMARIES, topics.DELIVERY_STATUS),
    "intake": (topics.AI_TURNS,),
    "summarizer": (topics.CONVERSATION_STATE,),
}
CRD_GROUPS = {"monitoring.coreos.com"}  # kubernetes-validate has no schemas for these


# ------------------------------------------------------------------ rendering


def kustomize(directory: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.fail("kubectl is not installed (it carries kustomize)")
    return subprocess.run([exe, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)


def render(directory: Path) -> list[dict]:
    result = kustomize(directory)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/kubernetes with every overlay's secrets/*.env filled from its
    committed *.env.example (what an operator does with real values), and `everything`:
    production with the optional components."""
    root = tmp_path_factory.mktemp("kubernetes") / "kubernetes"
    shutil.copytree(KUBERNETES, root, ignore=shutil.ignore_patterns("*.env"))
    for example in root.glob("overlays/*/secrets/*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    # As the README says to: the components added to the overlay that generates the Secrets
    # (a layer above it could not point the ServiceMonitor at the generated Secret's name).
    everything = root / "overlays" / "everything"
    shutil.copytree(root / "overlays" / "production", everything)
    kustomization = yaml.safe_load((everything / "kustomization.yaml").read_text())
    kustomization["components"] += ["../../components/service-monitor", "../../components/consumer-lag-autoscaling"]
    (everything / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return root


@pytest.fixture(scope="module")
def production(workdir: Path) -> list[dict]:
    return render(workdir / "overlays" / "production")


@pytest.fixture(scope="module")
def everything(workdir: Path) -> list[dict]:
    return render(workdir / "overlays" / "everything")


def the(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = the(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def config_data(docs: list[dict], name: str) -> dict[str, str]:
    return one(docs, "ConfigMap", name)["data"]


def secret_data(docs: list[dict], name: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in one(docs, "Secret", name).get("data", {}).items()}


def environment(docs: list[dict], spec: dict) -> dict[str, str | tuple[str, str]]:
    """A container's environment as the kubelet builds it: envFrom ConfigMaps/Secrets, then
    env; a value from a Secret is ("secret", "<name>/<key>")."""
    env: dict[str, str | tuple[str, str]] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env |= config_data(docs, source["configMapRef"]["name"])
        else:
            name = source["secretRef"]["name"]
            env |= {k: ("secret", f"{name}/{k}") for k in secret_data(docs, name)}
    for var in spec.get("env", []):
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            env[var["name"]] = ("secret", f"{ref['secretKeyRef']['name']}/{ref['secretKeyRef']['key']}")
        elif "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            data = config_data(docs, key["name"])
            if key["key"] in data or not key.get("optional"):
                env[var["name"]] = data[key["key"]]
        else:
            env[var["name"]] = var["value"]
    return env


def settings_class(name: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{name}.settings")
    classes = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, ServiceSettings)
               and c.__module__ == module.__name__]
    assert len(classes) == 1, f"services/{name}/settings.py: expected one settings class"
    return classes[0]


# ------------------------------------------------------------------ validity


def newest_kubernetes() -> str:
    return kubernetes_validate.latest_version()


@pytest.mark.parametrize("overlay", ["production", "everything"])
def test_every_object_is_valid_for_the_newest_kubernetes(request, overlay):
    docs = request.getfixturevalue(overlay)
    for doc in docs:
        if doc["apiVersion"].split("/")[0] in CRD_GROUPS:
            continue
        kubernetes_validate.validate(doc, newest_kubernetes(), strict=True)
    assert {d["kind"] for d in docs} >= {"Namespace", "Deployment", "Service", "PodDisruptionBudget",
                                        "HorizontalPodAutoscaler", "Job", "NetworkPolicy", "Ingress",
                                        "Secret", "ConfigMap"}


def test_the_validation_is_strict(production):
    # A misspelt field is an error, not silently dropped: the check above means something.
    deployment = one(production, "Deployment", "queue")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    container(broken)["readinesProbe"] = container(broken).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, newest_kubernetes(), strict=True)


def test_base_renders_without_secrets_or_namespace():
    docs = render(KUBERNETES / "base")
    assert not the(docs, "Secret") and not the(docs, "Namespace") and not the(docs, "Ingress")
    assert {d["metadata"]["name"] for d in the(docs, "Deployment")} == set(SERVICES)


def test_production_refuses_to_render_without_its_secret_files(workdir, tmp_path):
    bare = tmp_path / "kubernetes"
    shutil.copytree(workdir, bare, ignore=shutil.ignore_patterns("*.env"))
    result = kustomize(bare / "overlays" / "production")
    assert result.returncode != 0 and "secrets/" in result.stderr


def test_real_secret_files_are_never_committed():
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/kubernetes/overlays/production/secrets/stores.env"],
                             cwd=ROOT, capture_output=True)
    assert ignored.returncode == 0, "deploy/kubernetes/overlays/*/secrets/*.env must be git-ignored"
    committed = subprocess.run(["git", "ls-files", "deploy/kubernetes"], cwd=ROOT, capture_output=True, text=True)
    assert not [f for f in committed.stdout.split() if f.endswith(".env")]


# ------------------------------------------------------------------ workloads


@pytest.mark.parametrize("name", SERVICES)
def test_service_deployment_probes_resources_and_security(production, name):
    deployment = one(production, "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    spec = container(deployment)
    assert spec["command"] == ["python", "-m", f"services.{name}"]
    assert (ROOT / "services" / name / "__main__.py").exists()
    port = environment(production, spec)["HTTP_PORT"]
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports == {"http": int(port)}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = spec[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == int(port), probe
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(spec["resources"][kind]), f"{name}: {kind}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # deploy/Dockerfile's user
    assert "--uid 10001" in (ROOT / "deploy" / "Dockerfile").read_text()
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    context = spec["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"


def test_namespace_enforces_the_restricted_pod_security_standard(production):
    namespace = one(production, "Namespace", "handoff")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {d["metadata"].get("namespace") for d in production if d["kind"] != "Namespace"} == {"handoff"}


def selects(selector: Mapping, labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a set of labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def pod_labels(docs: list[dict], name: str) -> dict[str, str]:
    return one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_a_disruption_budget_and_a_cpu_autoscaler(production, name):
    labels = pod_labels(production, name)
    budgets = [b for b in the(production, "PodDisruptionBudget") if selects(b["spec"]["selector"], labels)]
    assert len(budgets) == 1, f"{name}: {len(budgets)} PodDisruptionBudgets"
    spec = budgets[0]["spec"]
    assert spec.get("maxUnavailable") == 1 or spec.get("minAvailable") == 1
    others = [d["metadata"]["name"] for d in the(production, "Deployment")
              if d["metadata"]["name"] != name and selects(budgets[0]["spec"]["selector"], pod_labels(production, d["metadata"]["name"]))]
    assert not others, f"{name}'s budget also counts {others}"

    autoscalers = [h for h in the(production, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name]
    assert len(autoscalers) == 1
    hpa = autoscalers[0]["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["metrics"])
    if name in {"queue", "intake", "channels", "gateway"}:
        assert hpa["minReplicas"] >= 2, f"{name}: production runs two at least"
    if name in GROUP_TOPICS:
        cap = min(t.partitions for t in GROUP_TOPICS[name])
        assert hpa["maxReplicas"] <= cap, f"{name}: replicas beyond {cap} partitions would idle"


def test_topics_job_creates_the_topics_on_the_configured_brokers(production):
    from deploy.stack import create_topics

    job = one(production, "Job", "topics")
    pod = job["spec"]["template"]["spec"]
    spec = container(job)
    assert spec["command"] == ["python", "-m", "deploy.stack", "topics"]
    assert job["spec"]["backoffLimit"] >= 1 and pod["restartPolicy"] in ("OnFailure", "Never")
    env = environment(production, spec)
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == config_data_named(production, "handoff-config")["KAFKA_BOOTSTRAP_SERVERS"]
    assert env["KAFKA_TOPIC_REPLICATION"] == "3"  # a production cluster keeps three copies
    source = inspect.getsource(create_topics)
    assert all(f'"{var}"' in source for var in env), f"the topics command reads none of {set(env)}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False


def test_topics_job_command_works_with_the_job_environment_alone(production, infra):
    # What the Job's container runs, with nothing but the environment the Job gives it
    # (brokers and a topic prefix of this test's own), twice: a rerun is harmless.
    job_env = environment(production, container(one(production, "Job", "topics")))
    env = {"PATH": os.environ["PATH"], **job_env, "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
           "KAFKA_TOPIC_PREFIX": f"k8s{uuid.uuid4().hex[:8]}."}
    command = [sys.executable, *container(one(production, "Job", "topics"))["command"][1:]]
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    assert f"({2 * len(topics.ALL_TOPICS)} created)" in first.stdout  # every topic and its DLQ
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "(0 created)" in again.stdout, again.stderr


def test_replicated_topics_are_acked_only_by_all_but_one_copy(monkeypatch):
    # The single embedded broker cannot hold three copies: what the command asks for is
    # taken from the admin request it sends.
    from aiokafka.admin import AIOKafkaAdminClient

    from deploy.stack import create_topics

    sent = []

    async def create(self, new_topics, *args, **kwargs):
        sent.extend(new_topics)
        return type("Response", (), {"topic_errors": [(t.name, 0, None) for t in new_topics]})()

    async def nothing(self, *args, **kwargs):
        return []

    monkeypatch.setattr(AIOKafkaAdminClient, "start", nothing)
    monkeypatch.setattr(AIOKafkaAdminClient, "close", nothing)
    monkeypatch.setattr(AIOKafkaAdminClient, "list_topics", nothing)
    monkeypatch.setattr(AIOKafkaAdminClient, "create_topics", create)
    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION", "3")
    assert create_topics() == 0
    assert len(sent) == 2 * len(topics.ALL_TOPICS)
    assert {t.replication_factor for t in sent} == {3}
    assert {t.topic_configs["min.insync.replicas"] for t in sent} == {"2"}
    assert any(t.topic_configs.get("cleanup.policy") == "compact" for t in sent)  # kept beside it

    sent.clear()
    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION", "1")
    assert create_topics() == 0
    assert {t.replication_factor for t in sent} == {1}
    assert not any("min.insync.replicas" in t.topic_configs for t in sent)

    monkeypatch.setenv("KAFKA_TOPIC_REPLICATION", "three")
    assert create_topics() == 2 and len(sent) == 2 * len(topics.ALL_TOPICS)  # refused before asking


def config_data_named(docs: list[dict], prefix: str) -> dict[str, str]:
    """A generated ConfigMap by its name before kustomize's hash suffix."""
    found = [d for d in the(docs, "ConfigMap") if d["metadata"]["name"].rsplit("-", 1)[0] == prefix]
    assert len(found) == 1
    return found[0]["data"]


# ------------------------------------------------------------------ settings and secrets


@pytest.mark.parametrize("name", SERVICES)
def test_every_variable_is_a_setting_the_service_reads_and_is_valid(production, name):
    cls = settings_class(name)
    env = environment(production, container(one(production, "Deployment", name)))
    unknown = sorted(k for k in env if k.lower() not in cls.model_fields)
    assert not unknown, f"{name}: the manifests set variables the service never reads: {unknown}"
    # The values parse as the service's settings (types, validators), secrets from the
    # rendered example Secrets.
    values = {k: secret_value(production, v) if isinstance(v, tuple) else v for k, v in env.items()}
    settings = cls(**{k.lower(): v for k, v in values.items()})
    assert settings.http_host == "0.0.0.0" and settings.kafka_enable_idempotence is True


def secret_value(docs: list[dict], ref: tuple[str, str]) -> str:
    name, key = ref[1].split("/")
    return secret_data(docs, name)[key]


def test_secrets_reach_exactly_the_services_that_need_them(production):
    for variable, holders in SECRET_HOLDERS.items():
        given = {name for name in SERVICES
                 if variable in environment(production, container(one(production, "Deployment", name)))}
        assert given == holders, f"{variable}: given to {sorted(given)}, needed by {sorted(holders)}"
        for name in holders:
            value = environment(production, container(one(production, "Deployment", name)))[variable]
            assert isinstance(value, tuple), f"{name}: {variable} must come from a Secret, not plain config"


def test_every_secret_reference_is_provided(production, everything):
    for docs in (production, everything):
        secrets = {s["metadata"]["name"]: set(secret_data(docs, s["metadata"]["name"])) for s in the(docs, "Secret")}
        for workload in the(docs, "Deployment") + the(docs, "Job"):
            for var in container(workload).get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in secrets.get(ref["name"], set()), (
                        f"{workload['metadata']['name']}: {var['name']} needs key {ref['key']} of Secret {ref['name']}")


def test_no_secret_in_plain_configuration(production):
    for config in the(production, "ConfigMap"):
        assert not set(config["data"]) & set(SECRET_HOLDERS), config["metadata"]["name"]


def test_channel_credentials_example_names_what_set_channels_reads():
    # Telegram and WhatsApp credentials are per chatbot, stored by the queue: set with
    # `python -m services.queue set-channels`, which reads them from its environment.
    from services.queue.__main__ import CHANNEL_SECRETS_FROM_ENV

    lines = (KUBERNETES / "channels.env.example").read_text().splitlines()
    keys = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert keys == set(CHANNEL_SECRETS_FROM_ENV.values())


# ------------------------------------------------------------------ network policies


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod (namespace and labels) or an address outside."""

    name: str
    ip: str
    namespace: str | None = None  # None: outside the cluster
    labels: Mapping[str, str] = field(default_factory=dict)
    named_ports: Mapping[str, int] = field(default_factory=dict)


def namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def peer_matches(peer: Mapping, policy_namespace: str, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(endpoint.ip)
        block = peer["ipBlock"]
        within = lambda cidr: address.version == ipaddress.ip_network(cidr).version and address in ipaddress.ip_network(cidr)  # noqa: E731
        return within(block["cidr"]) and not any(within(c) for c in block.get("except", []))
    if endpoint.namespace is None:
        return False
    if "namespaceSelector" in peer:
        namespace_ok = selects(peer["namespaceSelector"], namespace_labels(endpoint.namespace))
    else:
        namespace_ok = endpoint.namespace == policy_namespace
    return namespace_ok and selects(peer.get("podSelector", {}), endpoint.labels)


def port_matches(ports: list[Mapping] | None, port: int, protocol: str, destination: Endpoint) -> bool:
    if not ports:
        return True
    for rule in ports:
        if rule.get("protocol", "TCP") != protocol:
            continue
        if "port" not in rule:
            return True
        first = destination.named_ports.get(rule["port"]) if isinstance(rule["port"], str) else rule["port"]
        if first is not None and first <= port <= rule.get("endPort", first):
            return True
    return False


def policy_types(policy: Mapping) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def side_allows(policies: list[dict], subject: Endpoint, direction: str, other: Endpoint,
                port: int, protocol: str, destination: Endpoint) -> bool:
    """Whether the policies selecting `subject` for `direction` (Ingress/Egress) let the
    connection through on the subject's side; a pod no such policy selects is open."""
    if subject.namespace is None:
        return True
    applying = [p for p in policies if p["metadata"]["namespace"] == subject.namespace
                and direction in policy_types(p) and selects(p["spec"]["podSelector"], subject.labels)]
    if not applying:
        return True
    peers_key = "from" if direction == "Ingress" else "to"
    for policy in applying:
        for rule in policy["spec"].get(direction.lower()) or []:
            peers = rule.get(peers_key)
            if (not peers or any(peer_matches(p, policy["metadata"]["namespace"], other) for p in peers)) \
                    and port_matches(rule.get("ports"), port, protocol, destination):
                return True
    return False


def may_connect(policies: list[dict], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """May `source` open a connection to `destination` on `port`: the source's egress and the
    destination's ingress must both allow it."""
    return (side_allows(policies, source, "Egress", destination, port, protocol, destination)
            and side_allows(policies, destination, "Ingress", source, port, protocol, destination))


@pytest.fixture(scope="module")
def network(production) -> tuple[list[dict], dict[str, Endpoint]]:
    namespace = "handoff"
    pods = {name: Endpoint(name, f"10.1.0.{i + 10}", namespace, pod_labels(production, name), {"http": 8000})
            for i, name in enumerate(SERVICES)}
    topics_job = one(production, "Job", "topics")["spec"]["template"]["metadata"]["labels"]
    pods |= {
        "topics": Endpoint("topics", "10.1.0.30", namespace, topics_job),
        "outside": Endpoint("a browser on the internet", "203.0.113.7"),
        "telegram": Endpoint("api.telegram.org", "149.154.167.220"),
        "cluster-address": Endpoint("a private address", "10.9.9.9"),
        "kafka": Endpoint("kafka broker", "10.2.0.1", "kafka", {"app": "kafka"}),
        "mongo": Endpoint("mongodb", "10.2.0.2", "databases", {"app": "mongodb"}),
        "redis": Endpoint("redis", "10.2.0.3", "databases", {"app": "redis"}),
        "dns": Endpoint("kube-dns", "10.2.0.4", "kube-system", {"k8s-app": "kube-dns"}),
        "prometheus": Endpoint("prometheus", "10.2.0.5", "monitoring", {"app": "prometheus"}),
        "other-namespace": Endpoint("a pod of another application", "10.2.0.6", "default", {"app": "other"}),
        "handoff-stranger": Endpoint("another pod in handoff's namespace", "10.1.0.99", namespace, {"app": "debug"}),
    }
    return the(production, "NetworkPolicy"), pods


REACHABILITY = [
    # The queue's internal API: the gateway only.
    ("gateway", "queue", 8000, True),
    ("channels", "queue", 8000, False),
    ("intake", "queue", 8000, False),
    ("summarizer", "queue", 8000, False),
    ("topics", "queue", 8000, False),
    ("outside", "queue", 8000, False),
    ("other-namespace", "queue", 8000, False),
    ("handoff-stranger", "queue", 8000, False),
    # From outside: gateway and channels only, on their HTTP port only.
    ("outside", "gateway", 8000, True),
    ("outside", "channels", 8000, True),
    ("outside", "gateway", 9000, False),
    ("outside", "intake", 8000, False),
    ("outside", "summarizer", 8000, False),
    ("other-namespace", "intake", 8000, False),
    # Prometheus scrapes every service.
    *[("prometheus", name, 8000, True) for name in SERVICES],
    ("prometheus", "queue", 9092, False),
    # Infrastructure: Kafka for everyone, the stores for all but the stateless intake.
    *[(name, "kafka", 9092, True) for name in (*SERVICES, "topics")],
    *[(name, "mongo", 27017, name not in ("intake", "topics")) for name in (*SERVICES, "topics")],
    *[(name, "redis", 6379, name not in ("intake", "topics")) for name in (*SERVICES, "topics")],
    # The internet (HTTPS): Telegram/WhatsApp and the AI model, from those that call them.
    *[(name, "telegram", 443, name in ("channels", "intake", "summarizer")) for name in (*SERVICES, "topics")],
    ("channels", "telegram", 80, False),
    ("channels", "cluster-address", 443, False),
    # No service calls another one but gateway -> queue.
    ("gateway", "channels", 8000, False),
    ("channels", "gateway", 8000, False),
    ("queue", "gateway", 8000, False),
]


@pytest.mark.parametrize(("source", "destination", "port", "allowed"), REACHABILITY,
                         ids=[f"{s}->{d}:{p}" for s, d, p, _ in REACHABILITY])
def test_network_policies(network, source, destination, port, allowed):
    policies, pods = network
    assert may_connect(policies, pods[source], pods[destination], port) is allowed


@pytest.mark.parametrize("name", [*SERVICES, "topics"])
def test_dns_is_allowed(network, name):
    policies, pods = network
    assert may_connect(policies, pods[name], pods["dns"], 53, "UDP")
    assert may_connect(policies, pods[name], pods["dns"], 53, "TCP")


def test_everything_in_the_namespace_is_denied_unless_allowed(network):
    policies, _ = network
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
            and not p["spec"].get("egress")]
    assert deny and set(policy_types(deny[0])) == {"Ingress", "Egress"}


# ------------------------------------------------------------------ ingress


def test_only_gateway_and_channels_are_behind_an_ingress(production):
    ingresses = the(production, "Ingress")
    backends = {path["backend"]["service"]["name"] for i in ingresses for rule in i["spec"]["rules"]
                for path in rule["http"]["paths"]}
    assert backends == PUBLIC
    for ingress in ingresses:
        annotations = ingress["metadata"]["annotations"]
        # Dashboard and widget sockets stay open far longer than nginx's 60 s default.
        assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
        assert ingress["spec"]["tls"], ingress["metadata"]["name"]


def test_public_urls_match_the_ingress_hosts(production):
    hosts = {rule["backend"]: rule["host"] for rule in (
        {"backend": path["backend"]["service"]["name"], "host": r["host"]}
        for i in the(production, "Ingress") for r in i["spec"]["rules"] for path in r["http"]["paths"])}
    gateway = environment(production, container(one(production, "Deployment", "gateway")))
    channels = environment(production, container(one(production, "Deployment", "channels")))
    assert gateway["ALLOWED_ORIGINS"] == f"https://{hosts['gateway']}"
    assert channels["CHANNELS_PUBLIC_URL"] == f"https://{hosts['channels']}"


# ------------------------------------------------------------------ optional components


def test_metrics_are_scraped_with_the_token(everything):
    secret = [s["metadata"]["name"] for s in the(everything, "Secret") if "METRICS_TOKEN" in secret_data(everything, s["metadata"]["name"])]
    assert len(secret) == 1
    (monitor,) = the(everything, "ServiceMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    assert endpoint["authorization"]["credentials"] == {"name": secret[0], "key": "METRICS_TOKEN"}
    services = [s for s in the(everything, "Service") if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert {s["metadata"]["name"] for s in services} == set(SERVICES)
    assert all("http" in {p["name"] for p in s["spec"]["ports"]} for s in services)
    for name in SERVICES:
        deployment = one(everything, "Deployment", name)
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


def test_lag_autoscaling_names_the_real_metric_and_consumer_groups(everything):
    from services.channels.settings import ChannelsSettings
    from services.intake.app import GROUP as INTAKE_GROUP
    from services.queue.settings import QueueSettings
    from services.summarizer.app import GROUP as SUMMARIZER_GROUP

    groups = {"queue": QueueSettings().queue_consumer_group, "intake": INTAKE_GROUP,
              "summarizer": SUMMARIZER_GROUP, "channels": ChannelsSettings().outbound_group_id}
    metric = "handoff_bus_consumer_lag"
    assert f'"{metric}"' in (ROOT / "shared" / "bus" / "metrics.py").read_text()
    adapter = yaml.safe_load((KUBERNETES / "components" / "consumer-lag-autoscaling" / "prometheus-adapter-values.yaml").read_text())
    assert [rule["name"]["as"] for rule in adapter["rules"]["external"]] == [metric]
    for name, group in groups.items():
        hpa = one(everything, "HorizontalPodAutoscaler", name)["spec"]
        external = [m["external"] for m in hpa["metrics"] if m["type"] == "External"]
        assert [(e["metric"]["name"], e["metric"]["selector"]["matchLabels"]["group"]) for e in external] == [(metric, group)]
        assert any(m["type"] == "Resource" for m in hpa["metrics"]), f"{name}: CPU still counts"
