"""Shared fixtures: paths to the real shared data (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CONV_TRACE = SHARED / "traces" / "AzureLLMInferenceTrace_conv.csv"
CODE_TRACE = SHARED / "traces" / "AzureLLMInferenceTrace_code.csv"
SPEC_BENCH = SHARED / "prompts" / "spec_bench_question.jsonl"


@pytest.fixture
def conv_trace_path() -> Path:
    if not CONV_TRACE.is_file():
        pytest.skip("shared Azure conv trace not present")
    return CONV_TRACE
