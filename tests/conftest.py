"""Hypothesis profiles for the property-based tests.

``ci`` (the default) keeps the whole suite fast; ``fuzz`` runs the same
properties with far more examples.  Pick a profile with the environment
variable ``RADICAL_EDGE_HYPOTHESIS_PROFILE`` or with Hypothesis' own pytest
option ``--hypothesis-profile=fuzz`` (the option wins: the plugin loads it
after this file is imported).
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncIterator

import anyio
import pytest
import trustme
from hypothesis import HealthCheck, settings

from radical_edge_bridge import Bridge, BridgeConfig

from .slurm_helpers import _slurm_cluster, slurm  # noqa: F401 - the real Slurm for every test module (tests/slurm_helpers.py)

PROFILE_ENV = "RADICAL_EDGE_HYPOTHESIS_PROFILE"

# The suite tests the pure-Python path (the design's default), in this process and in every bridge
# or edge it starts; tests/test_speedups.py turns the optional accelerators on where it checks them.
os.environ.setdefault("RADICAL_EDGE_PURE_PYTHON", "1")

settings.register_profile(
    "ci",
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=100_000,
    stateful_step_count=100,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get(PROFILE_ENV, "ci"))


@pytest.fixture
def anyio_backend() -> str:
    """The async tests run on asyncio (the backend the bridge and edge ship with)."""
    return "asyncio"


# ---------------------------------------------------------------- a bridge over real TLS (trustme)

#: the bridge token of the ``bridge`` fixture
TOKEN = "test-token-123"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca, tmp_path):
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def client_ssl(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@contextlib.asynccontextmanager
async def running_bridge(config: BridgeConfig) -> AsyncIterator[Bridge]:
    """An in-process bridge serving ``config`` (give ``port=0``) for the block, stopped on exit."""
    b = Bridge(config)
    async with anyio.create_task_group() as tg:
        await tg.start(b.serve)
        try:
            yield b
        finally:
            b.stop()


@pytest.fixture
async def bridge(tls_files) -> AsyncIterator[Bridge]:
    cert, key = tls_files
    async with running_bridge(
        BridgeConfig(port=0, cert=cert, key=key, token=TOKEN, request_timeout=5, heartbeat_interval=5)
    ) as b:
        yield b
