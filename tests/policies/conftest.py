"""Policies and a profile for the live-serving tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from specsim.formats.policy import Policy
from tests.formats.samples import VALID_PROFILE

NGRAM = {"name": "ngram", "method": "ngram", "params": {"prompt_lookup_min": 2, "prompt_lookup_max": 4}}


def policy(**kw: Any) -> Policy:
    """An ngram policy with the given fields."""
    data: dict[str, Any] = {"schema": "specsim.policy", "version": 2, "drafter": NGRAM}
    data.update(kw)
    return Policy.model_validate(data)


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as JSON and return the path."""
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def profile_doc() -> dict[str, Any]:
    """A valid profile for the default model with an ngram drafter (k_max 2)."""
    doc = copy.deepcopy(VALID_PROFILE)
    doc["metadata"]["target_model"] = "SmolLM2-135M-Instruct"
    doc["acceptance"] = [t for t in doc["acceptance"] if t.get("mode", "greedy") == "greedy"]
    return doc
