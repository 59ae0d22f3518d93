"""Shared fixtures: paths to the real shared data (skipped cleanly when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from specsim.shared_data import azure_trace_path, shared_data_dir, spec_bench_path

REPO = Path(__file__).resolve().parents[1]
SHARED = shared_data_dir()
CONV_TRACE = azure_trace_path("conv")
CODE_TRACE = azure_trace_path("code")
SPEC_BENCH = spec_bench_path()


@pytest.fixture
def conv_trace_path() -> Path:
    if not CONV_TRACE.is_file():
        pytest.skip("shared Azure conv trace not present")
    return CONV_TRACE
