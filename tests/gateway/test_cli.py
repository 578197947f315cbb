"""`python -m services.gateway create-agent ...` as a process: creates, then updates in place."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from services.gateway.domain import verify_password
from services.gateway.settings import GatewaySettings
from shared.stores import open_mongo
from tests.gateway.conftest import gateway
from tests.harness import ROOT, settings_from_env


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.gateway", "create-agent", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)


async def test_create_agent_is_idempotent_and_the_agent_can_sign_in(stack):
    env = stack.isolated.env("gateway")
    first = run_cli(env, "--email", "Demo@Example.com", "--password", "demo1234", "--first-name", "Dana",
                    "--chatbot", "alpha", "--chatbot", "beta")
    assert first.returncode == 0, first.stderr
    second = run_cli(env, "--email", "demo@example.com", "--password", "newpass99", "--first-name", "Dana",
                     "--chatbot", "beta")
    assert second.returncode == 0, second.stderr
    bad = run_cli(env, "--email", "not-an-email", "--password", "x")
    assert bad.returncode != 0 and "--email" in bad.stderr

    settings = settings_from_env(GatewaySettings, env)
    client, db = open_mongo(settings)
    try:
        agents = await db["agents"].find({}).to_list()
        assert len(agents) == 1 and agents[0]["email_key"] == "demo@example.com"
        assert verify_password(agents[0]["password_hash"], "newpass99")
        memberships = await db["memberships"].find({}).to_list()
        assert [m["chatbot_id"] for m in memberships] == ["beta"]
    finally:
        await client.close()

    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        assert (await http.post("/api/login", json={"email": "demo@example.com", "password": "demo1234"})).status_code == 401
        r = await http.post("/api/login", json={"email": "DEMO@example.com", "password": "newpass99"})
        assert r.status_code == 200
        me = (await http.get("/api/me")).json()
        assert [c["chatbot_id"] for c in me["chatbots"]] == ["beta"]
