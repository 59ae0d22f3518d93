"""The public API (`import specsim`): lazy names, and the README's Python example run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import specsim
from specsim.formats.policy import load_policy
from specsim.formats.profile import save_profile
from specsim.formats.traffic import save_traffic
from specsim.profiler.analytic import constant_profile
from tests.tuner.helpers import poisson

REPO = Path(__file__).resolve().parents[1]
NAMES = ("simulate", "tune", "sweep", "load_profile", "load_traffic", "load_policy", "save_policy", "SimConfig")


def readme_example() -> str:
    """The README's Python example: the first ```python block under its `## Python` heading."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python", 1)[1]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README.md has no ```python block under `## Python`"
    return m.group(1)


def test_import_specsim_is_light() -> None:
    """`import specsim` loads no stage module (nor numpy, Optuna or SimPy) until a name is used."""
    code = ("import sys, specsim; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'optuna', 'simpy', 'numba') or m.startswith('specsim.')]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", NAMES)
def test_each_public_name_imports_and_is_documented(name: str) -> None:
    obj = getattr(specsim, name)
    assert name in specsim.__all__ and name in dir(specsim)
    assert obj.__doc__ and len(obj.__doc__.strip()) > 40
    if name != "SimConfig":
        assert "Example" in obj.__doc__, f"specsim.{name} has no example in its docstring"
    exec(f"from specsim import {name}")  # the `from specsim import X` form works too


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        specsim.nope  # noqa: B018


def test_readme_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The README's example on a tiny synthetic trace and a textbook profile written to its file names."""
    code = readme_example()
    assert len(code.strip().splitlines()) <= 12, "the README example should stay about ten lines"
    save_profile(constant_profile(step_ms=20.0, draft_ratio=0.05, alpha=0.7, k_max=4), tmp_path / "P.json")
    save_traffic(poisson(40, 4.0, seed=3, inp=(16, 64), out=(16, 48)), tmp_path / "T.jsonl")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "p99 TPOT" in out
    pol = load_policy(tmp_path / "POL.json")
    assert pol.provenance.objective == "goodput" and pol.provenance.predicted
