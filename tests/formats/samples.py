"""Small valid traffic, profile and policy documents for the contract tests, and file writers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VALID_TRAFFIC: list[dict[str, Any]] = [
    {"schema": "specsim.traffic", "version": 1, "source": "test"},
    {"timestamp": 0.0, "input_length": 10, "output_length": 5, "category": "conv", "request_id": "a"},
    {"timestamp": 0.5, "input_length": 20, "output_length": 7, "request_id": 2},
    {"timestamp": 0.5, "input_length": 1, "output_length": 1},
]

VALID_PROFILE: dict[str, Any] = {
    "schema": "specsim.profile",
    "version": 1,
    "metadata": {"source": "analytic", "hardware": "test GPU", "target_model": "tiny"},
    "k_max": 2,
    "target": {
        "decode": {
            "batch_sizes": [1, 4],
            "ks": [0, 1, 2],
            "step_ms": [[10.0, 11.0, 12.0], [12.0, 14.0, 16.0]],
            "reference_context": 128,
            "context_ms_per_token": 0.001,
        },
        "prefill": {"tokens": [16, 256], "step_ms": [5.0, 20.0]},
    },
    "drafters": {
        "ngram": {
            "method": "ngram",
            "params": {"prompt_lookup_max": 4},
            "k_max": 2,
            "cost": {"batch_sizes": [1], "ks": [0, 2], "step_ms": [[0.0, 0.5]]},
        },
        "draft_model": {"method": "draft_model", "model": "/models/draft", "k_max": 2},
    },
    "acceptance": [
        {
            "prompt_id": "p0",
            "category": "conv",
            "drafter": "ngram",
            "prompt_length": 10,
            "output_length": 4,
            "k_max": 2,
            "r": [0, 2, 1, 0],
        },
        {
            "prompt_id": "p1",
            "drafter": "draft_model",
            "prompt_length": 3,
            "output_length": 2,
            "k_max": 2,
            "mode": "sampled",
            "p": [0.5, 0.9],
        },
    ],
}

VALID_POLICY: dict[str, Any] = {
    "schema": "specsim.policy",
    "version": 1,
    "drafter": {"name": "ngram", "method": "ngram", "params": {"prompt_lookup_max": 4}},
    "k_schedule": [[1, 4, 2], [5, 16, 1], [17, 256, 0]],
    "hysteresis": 1,
    "acceptance_floor": {"min_rate": 0.2},
    "provenance": {"objective": "goodput"},
}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    """Write records (dicts or raw strings) one per line."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_json(path: Path, doc: Any) -> Path:
    """Write one JSON document."""
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path
