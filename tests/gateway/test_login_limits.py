"""Sign-in limits against real Redis: the per-e-mail wait grows with each failure and a
success clears it, the real agent gets in once an attacker's wait has passed (no long
lock-out), one address spraying many e-mails is refused, every refusal is a 429 with
Retry-After, and argon2 checks run a few at a time (a 503 with Retry-After when none is
free for too long)."""

from __future__ import annotations

import asyncio
import re
import threading
import uuid

import httpx
import pytest

from services.gateway import domain
from tests.gateway.conftest import PASSWORD, add_agent, gateway


async def attempt(client: httpx.AsyncClient, email: str, password: str = "wrong password",
                  **headers: str) -> httpx.Response:
    return await client.post("/api/login", json={"email": email, "password": password}, headers=headers)


def retry_after(r: httpx.Response) -> int:
    assert r.status_code == 429, r.text
    assert re.fullmatch(r"Too many sign-in attempts\. Try again in \d+ seconds?\.", r.json()["detail"]), r.text
    return int(r.headers["retry-after"])


async def after_the_wait(client: httpx.AsyncClient, email: str, password: str = "wrong password") -> httpx.Response:
    """The attempt made once the e-mail's wait has passed (as the Retry-After says)."""
    for _ in range(5):
        r = await attempt(client, email, password)
        if r.status_code != 429:
            return r
        await asyncio.sleep(retry_after(r))
    raise AssertionError("still waiting after five Retry-Afters")


async def test_the_wait_grows_with_each_failure_and_a_success_clears_it(stack):
    limits = {"LOGIN_FREE_FAILURES": "1", "LOGIN_BACKOFF_BASE_S": "4", "LOGIN_BACKOFF_MAX_S": "300"}
    settings = stack.gateway_settings(**limits)
    await add_agent(settings, "grow@example.com", ["alpha"])
    async with gateway(stack, **limits) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        assert (await attempt(client, "grow@example.com")).status_code == 401  # free
        assert (await attempt(client, "grow@example.com")).status_code == 401  # checked; 4 s wait now
        first = retry_after(await attempt(client, "grow@example.com"))
        assert 1 <= first <= 4
        assert (await after_the_wait(client, "grow@example.com")).status_code == 401  # an 8 s wait now
        second = retry_after(await attempt(client, "grow@example.com"))
        assert 4 < second <= 8
        # The real password, once that wait has passed: signed in, and the count starts over.
        assert (await after_the_wait(client, "grow@example.com", PASSWORD)).status_code == 200
        assert (await attempt(client, "grow@example.com")).status_code == 401  # free again
        assert (await attempt(client, "grow@example.com")).status_code == 401
        assert 1 <= retry_after(await attempt(client, "grow@example.com")) <= 4  # the shortest wait again


async def test_the_real_agent_gets_in_after_an_attackers_guesses(stack):
    """Twelve wrong guesses (more than the old hard limit of ten): the real agent waits at
    most LOGIN_BACKOFF_MAX_S after the last one, not a fixed quarter of an hour."""
    limits = {"LOGIN_FREE_FAILURES": "2", "LOGIN_BACKOFF_BASE_S": "1", "LOGIN_BACKOFF_MAX_S": "2"}
    settings = stack.gateway_settings(**limits)
    await add_agent(settings, "victim@example.com", ["alpha"])
    async with gateway(stack, **limits) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        guesses = [await attempt(client, "victim@example.com", f"guess {i}") for i in range(12)]
        assert {r.status_code for r in guesses} == {401, 429}
        assert all(1 <= retry_after(r) <= 2 for r in guesses if r.status_code == 429)
        agent = await after_the_wait(client, "victim@example.com", PASSWORD)
        assert agent.status_code == 200, agent.text


async def test_one_address_spraying_many_emails_is_refused(stack):
    limits = {"LOGIN_ATTEMPTS_PER_IP": "5/minute", "TRUSTED_PROXIES": "127.0.0.1"}
    settings = stack.gateway_settings(**limits)
    await add_agent(settings, "sprayed@example.com", ["alpha"])
    async with gateway(stack, **limits) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        for _ in range(5):  # five different e-mails: none of them has failed before
            assert (await attempt(client, f"{uuid.uuid4().hex}@example.com")).status_code == 401
        refused = await attempt(client, f"{uuid.uuid4().hex}@example.com")
        assert 1 <= retry_after(refused) <= 60
        # The address is refused whatever the e-mail, the right password included.
        assert (await attempt(client, "sprayed@example.com", PASSWORD)).status_code == 429
        # Behind a trusted proxy, each client forwarded for is counted on its own.
        forwarded = await attempt(client, "sprayed@example.com", PASSWORD, **{"X-Forwarded-For": "203.0.113.7"})
        assert forwarded.status_code == 200, forwarded.text


@pytest.fixture
def instrumented_checks(monkeypatch):
    """`domain.verify_password`, recording how many run at once; `hold` keeps the first call
    waiting until `release` is set."""
    real = domain.verify_password
    state = {"running": 0, "most": 0, "calls": 0, "hold": False}
    lock = threading.Lock()
    entered, release = threading.Event(), threading.Event()

    def verify(password_hash, password):
        with lock:
            state["calls"] += 1
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
            first = state["calls"] == 1
        try:
            entered.set()
            if state["hold"] and first:
                release.wait(30)
            else:
                threading.Event().wait(0.1)  # long enough for parallel requests to overlap
            return real(password_hash, password)
        finally:
            with lock:
                state["running"] -= 1

    monkeypatch.setattr(domain, "verify_password", verify)
    state.update(entered=entered, release=release)
    yield state
    release.set()


async def test_password_checks_run_a_few_at_a_time(stack, instrumented_checks):
    limits = {"LOGIN_CHECKS_AT_ONCE": "2", "LOGIN_CHECK_WAIT_S": "60"}
    async with gateway(stack, **limits) as gw, httpx.AsyncClient(base_url=gw.url, timeout=60) as client:
        # Unknown e-mails: still checked (against a dummy hash), so they take as long as a
        # wrong password for a real one.
        answers = await asyncio.gather(*(attempt(client, f"{uuid.uuid4().hex}@example.com") for _ in range(10)))
    assert [r.status_code for r in answers] == [401] * 10
    assert instrumented_checks["calls"] == 10
    assert instrumented_checks["most"] == 2


async def test_no_free_password_check_for_too_long_is_a_503_with_retry_after(stack, instrumented_checks):
    instrumented_checks["hold"] = True
    limits = {"LOGIN_CHECKS_AT_ONCE": "1", "LOGIN_CHECK_WAIT_S": "0.5"}
    async with gateway(stack, **limits) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        held = asyncio.create_task(attempt(client, "first@example.com"))
        assert await asyncio.to_thread(instrumented_checks["entered"].wait, 20)
        busy = await attempt(client, "second@example.com")
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1"
        assert busy.json() == {"detail": "Too many sign-ins at once. Try again in 1 second."}
        instrumented_checks["release"].set()
        assert (await held).status_code == 401
        # The slot is free again.
        assert (await attempt(client, "second@example.com")).status_code == 401
