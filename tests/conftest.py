"""Hypothesis profiles for the property-based tests.

``ci`` (the default) keeps the whole suite fast; ``fuzz`` runs the same
properties with far more examples.  Pick a profile with the environment
variable ``RADICAL_EDGE_HYPOTHESIS_PROFILE`` or with Hypothesis' own pytest
option ``--hypothesis-profile=fuzz`` (the option wins: the plugin loads it
after this file is imported).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

PROFILE_ENV = "RADICAL_EDGE_HYPOTHESIS_PROFILE"

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
