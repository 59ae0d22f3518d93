"""Fixtures for the contract tests: fresh copies of the sample documents."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.formats.samples import VALID_POLICY, VALID_PROFILE, VALID_TRAFFIC


@pytest.fixture
def traffic_records() -> list[dict[str, Any]]:
    """A fresh copy of a valid traffic trace (header + 3 requests)."""
    return copy.deepcopy(VALID_TRAFFIC)


@pytest.fixture
def profile_doc() -> dict[str, Any]:
    """A fresh copy of a valid profile document."""
    return copy.deepcopy(VALID_PROFILE)


@pytest.fixture
def policy_doc() -> dict[str, Any]:
    """A fresh copy of a valid policy document."""
    return copy.deepcopy(VALID_POLICY)
