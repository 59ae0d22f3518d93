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


def _writable(folder: Path) -> bool:
    import os
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


@pytest.fixture
def unwritable_dir(tmp_path: Path):  # noqa: ANN201 - a generator fixture
    """A folder this process cannot create files in: a read-only folder, or /sys when running as root."""
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        found = next((d for d in (ro, Path("/sys/kernel"), Path("/sys")) if d.is_dir() and not _writable(d)), None)
        if found is None:
            pytest.skip("no unwritable folder on this machine")
        yield found
    finally:
        ro.chmod(0o700)
