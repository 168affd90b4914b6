"""Wrong credentials per peer address: a guesser gets 429 after 10 a minute; nobody else is slowed down."""

from __future__ import annotations

import anyio
import httpx
import pytest

from radical_edge_bridge import BridgeConfig
from radical_edge_bridge._throttle import AuthThrottle

from .conftest import TOKEN, running_bridge

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_peer_is_refused_after_max_failures_until_the_window_has_passed() -> None:
    clock = Clock()
    throttle = AuthThrottle(max_failures=3, window=60, clock=clock)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 60
    assert throttle.retry_after("10.0.0.2") is None  # another address: not slowed down
    clock.now += 45.5
    assert throttle.retry_after("10.0.0.1") == 15
    clock.now += 14.5
    assert throttle.retry_after("10.0.0.1") is None  # the window has passed: counting starts again
    assert len(throttle) == 0


def test_the_table_is_bounded_oldest_forgotten_first() -> None:
    throttle = AuthThrottle(max_failures=1, window=60, max_peers=100, clock=Clock())
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100
    assert throttle.retry_after("10.0.3.231") == 60  # the newest are kept
    assert throttle.retry_after("10.0.0.0") is None


def _client(port: int, client_ssl, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=client_ssl, headers=headers)


async def test_a_guesser_gets_429_and_the_right_token_is_not_confirmed_meanwhile(tls_files, client_ssl) -> None:
    cert, key = tls_files
    config = BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, auth_max_failures=5, auth_failure_window=2.0)
    async with running_bridge(config) as bridge:
        assert bridge.port is not None
        async with _client(bridge.port, client_ssl) as anonymous:
            # no credential at all: 401 as ever, and not counted
            for _ in range(20):
                assert (await anonymous.get("/edges")).status_code == 401
            # wrong guesses, in every form a credential takes
            guesses = [
                anonymous.get("/edges", headers={"Authorization": "Bearer guess"}),
                anonymous.get("/edges", headers={"Cookie": "radical_edge_token=guess"}),
                anonymous.post("/auth", json={"token": "guess"}),
                anonymous.get("/e1/sysinfo/x", headers={"Authorization": "Bearer guess"}),
                anonymous.post("/auth", json={"token": "guess"}),
            ]
            assert [(await g).status_code for g in guesses] == [401] * 5
            refused = await anonymous.get("/edges", headers={"Authorization": "Bearer guess"})
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["retry-after"]) <= 2
            assert "too many wrong credentials" in refused.json()["detail"]
            # the right token from the same address is not confirmed meanwhile
            assert (await anonymous.get("/edges", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 429
            assert (await anonymous.post("/auth", json={"token": TOKEN})).status_code == 429
            # the public routes stay open
            assert (await anonymous.get("/healthz")).status_code == 200
            await anyio.sleep(2.1)
            assert (await anonymous.get("/edges", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
