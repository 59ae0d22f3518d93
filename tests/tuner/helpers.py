"""Small inputs for tuner tests: an analytic profile and short Poisson traces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from specsim.formats.profile import Profile, save_profile
from specsim.formats.traffic import Traffic, save_traffic
from specsim.profiler.analytic import analytic_profile

REPO = Path(__file__).resolve().parents[2]


def poisson(n: int, rate: float, seed: int = 0, inp: tuple[int, int] = (32, 160), out: tuple[int, int] = (50, 250),
            cat: str = "conv") -> Traffic:
    """n requests with Poisson arrivals and uniform lengths."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.exponential(1.0 / rate, n))
    ts -= ts[0]
    return Traffic.from_arrays(ts, rng.integers(*inp, n), rng.integers(*out, n), [cat] * n)


def small_profile(alpha: float = 0.65) -> Profile:
    """The analytic 70B target + 1B drafter on H100 (no n-gram drafter), one acceptance alpha; the plain
    roofline, on which these tests' load levels were chosen."""
    return analytic_profile(ngram=False, alphas={"conv": alpha}, calibrated=False)


def write_inputs(tmp: Path, n: int = 120, rate: float = 8.0) -> tuple[Path, Path]:
    """A profile file and a traffic file under tmp."""
    prof, traf = tmp / "profile.json", tmp / "traffic.jsonl"
    save_profile(small_profile(), prof)
    save_traffic(poisson(n, rate, seed=1), traf)
    return prof, traf


def specsim(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `python -m specsim ARGS` in a real subprocess."""
    return subprocess.run([sys.executable, "-m", "specsim", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=_env())


def popen(*args: str) -> subprocess.Popen[str]:
    """Start `python -m specsim ARGS` without waiting."""
    return subprocess.Popen([sys.executable, "-m", "specsim", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())
