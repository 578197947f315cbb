"""Shared by the fuzz tests (issue 12, item 6): bounded and reproducible generation settings,
the services' admin commands, and a schemathesis pass over an OpenAPI document in which every
generated request must get no response >= 500, and every 2xx a body that matches the
documented schema.

Bounded: a fixed number of examples per operation (and generation mode). Reproducible:
derandomized (the same examples every run) with a fixed schemathesis seed. No example
database, so nothing is written into the checkout.

The passes drive hypothesis themselves (an operation's `as_strategy()` under `@given`, one
subtest per operation and mode) rather than `schemathesis.pytest.from_fixture(...).parametrize()`:
that lazy loader sets `Function._nodeid`, which pytest 9.2 no longer has (AttributeError), and
the document is only known once the service runs, so it cannot be loaded at import time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, reject, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from shared.bus import Bus, ensure_topics
from shared.events import Envelope
from shared.settings import ServiceSettings
from shared.topics import Topic
from tests.conftest import InfraEndpoints, Isolated
from tests.harness import ROOT, ServiceProcess, settings_from_env

SEED = 12
# hypothesis keeps caches of its own (unicode tables, constants found in the code) in
# ./.hypothesis by default: outside the checkout instead.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "handoff-hypothesis")


def bounded(max_examples: int) -> settings:
    """hypothesis settings for a fuzz test: `max_examples`, the same examples every run, no
    deadline (a busy CI machine is slow), no example database."""
    return settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
                    print_blob=False, suppress_health_check=list(HealthCheck))


def load_schema(url: str) -> schemathesis.BaseSchema:
    """The OpenAPI document a running service serves. Response bodies are checked for their
    structure, types and required fields, not string formats: pydantic documents a `time`
    field as format "time" (RFC 3339, which wants an offset) and writes "09:00:00"."""
    config = schemathesis.Config.from_dict({
        "seed": SEED, "generation": {"database": "none"},
        "checks": {"response_schema_conformance": {"validate-formats": False}}})
    return schemathesis.openapi.from_url(url + "/openapi.json", config=config)


def call_checked(case: schemathesis.Case, service: ServiceProcess, **kwargs: Any) -> schemathesis.Response:
    """Send `case` to the running service; fail on a 5xx (with the request and the service's
    log, where the traceback is) and on a 2xx body that does not match the documented one."""
    try:
        response = case.call(base_url=service.url, timeout=30, **kwargs)
    except UnicodeEncodeError:
        # A lone surrogate where HTTP cannot carry it (a header, a non-JSON body): the client
        # cannot send this request at all, so it says nothing about the service.
        reject()
    if response.status_code >= 500:
        raise AssertionError(
            f"{response.status_code} for {case.as_curl_command()}\nresponse: {response.text[:2000]}\n"
            f"--- {service.name} log (last lines) ---\n{service.logs()[-6000:]}")
    if 200 <= response.status_code < 300:
        case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])
    return response


# Lone surrogates, controls, format marks (right-to-left override, zero-width), private-use and
# combining characters, line separators: rare in st.characters() unless asked for.
ODD_CHARACTERS = st.characters(categories=["Cs", "Cc", "Cf", "Co", "Mn", "Zl", "Zp", "So"])
LONE_SURROGATES = st.sampled_from(["\ud800", "\udfff", "\ud83d"])  # JSON can escape them; UTF-8 cannot hold them
ODD_TEXT = st.one_of(
    st.text(st.one_of(st.characters(), ODD_CHARACTERS), min_size=1, max_size=30),
    # Not in the alphabet above: hypothesis merges character strategies, and picks a surrogate seldom.
    st.tuples(st.text(max_size=5), LONE_SURROGATES, st.text(max_size=5)).map("".join))

# Any JSON value, small (requests refuses to encode NaN and infinities).
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | ODD_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
BODY_METHODS = {"post", "put", "patch"}


def property_names(document: Any) -> set[str]:
    """Every property name in an OpenAPI document: keys a generated JSON object may use."""
    if isinstance(document, list):
        return set().union(*map(property_names, document)) if document else set()
    if not isinstance(document, dict):
        return set()
    names = set(document["properties"]) if isinstance(document.get("properties"), dict) else set()
    return names.union(*map(property_names, document.values()))


def with_json_body(case: schemathesis.Case, body: Any) -> schemathesis.Case:
    case.body = body
    case.media_type = "application/json"
    return case


def fuzz_operations(schema: schemathesis.BaseSchema, send: Callable[[schemathesis.Case], Any],
                    subtests: pytest.Subtests, max_examples: int,
                    path_parameters: Iterable[dict[str, str]] = ({},)) -> list[str]:
    """Every operation of `schema`, `max_examples` valid and as many invalid requests each,
    passed to `send` (which asserts); and for a POST, PUT or PATCH as many requests with any
    JSON body (an object, mostly, with the document's property names): some routes parse their
    body by hand and document it loosely or not at all. `path_parameters`: alternative sets of
    fixed path parameters (e.g. a real chatbot id), each used for the operations that have
    them; the others are generated. The labels of the operations run."""
    ran = []
    keys = st.sampled_from(sorted(property_names(schema.raw_schema)) or ["x"]) | st.text(max_size=12)
    any_body = st.dictionaries(keys, JSON, max_size=6) | JSON
    for result in schema.get_all_operations():
        operation = result.ok()
        fixed = [{k: v for k, v in p.items() if "{" + k + "}" in operation.path} for p in path_parameters]
        modes = ["positive", "negative"] + (["any JSON body"] if operation.method.lower() in BODY_METHODS else [])
        for mode in modes:
            if mode == "any JSON body":
                cases = st.one_of([st.tuples(operation.as_strategy(path_parameters=p or None), any_body)
                                   .map(lambda pair: with_json_body(*pair)) for p in fixed])
            else:
                cases = st.one_of([operation.as_strategy(GenerationMode(mode), path_parameters=p or None)
                                   for p in fixed])

            @bounded(max_examples)
            @given(case=cases)
            def run(case: schemathesis.Case) -> None:
                send(case)

            with subtests.test(msg=f"{operation.label} ({mode})"):
                try:
                    run()
                except Unsatisfiable:
                    # No invalid request exists for an operation that takes nothing (GET /healthz).
                    if mode != "negative":
                        raise
        ran.append(operation.label)
    return ran


async def module_names(infra: InfraEndpoints) -> Isolated:
    """Names of its own on the session's servers for a module's services (the `isolated`
    fixture is per test), with the topics created."""
    iso = Isolated(infra, uuid.uuid4().hex[:8])
    await ensure_topics(infra.kafka_bootstrap, prefix=iso.topic_prefix)
    return iso


async def publish(iso: Isolated, topic: Topic, event: Envelope) -> None:
    """Publish one event as another service would, with a throwaway bus."""
    bus = Bus(settings_from_env(ServiceSettings, iso.env("fuzzpublisher")), client_id="fuzzpublisher")
    await bus.broker.start()
    try:
        await bus.publisher(topic).publish(event)
    finally:
        await bus.broker.stop()


@contextlib.asynccontextmanager
async def running(name: str, env: dict[str, str], log_dir: Path) -> AsyncIterator[ServiceProcess]:
    """`python -m services.<name>` with `env`, ready (its /readyz answered 200) until the block ends."""
    proc = ServiceProcess(name, env, log_dir).start()
    try:
        await proc.wait_ready()
        yield proc
    finally:
        proc.stop()


async def run_cli(module: str, args: list[str], env: dict[str, str]) -> str:
    """`python -m <module> <args>` (a service's admin command) with the service's environment."""
    result = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", module, *args], cwd=ROOT,
                                     env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{module} {args}: {result.stdout}\n{result.stderr}"
    return result.stdout
