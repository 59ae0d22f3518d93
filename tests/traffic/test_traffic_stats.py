"""Traffic statistics: exact values on a hand-made trace."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from specsim.formats.traffic import Traffic
from specsim.traffic.stats import NO_CATEGORY, burstiness, stats_table, traffic_stats


def test_stats_values() -> None:
    """Count, duration, rate, CV and percentiles match hand computation."""
    ts = [0.0, 1.0, 1.0, 4.0]  # gaps 1, 0, 3: mean 4/3, std sqrt(14/9)
    inp = [10, 20, 30, 100]
    out = [1, 2, 3, 4]
    tr = Traffic.from_arrays(ts, inp, out, ["a", "b", "a", None])
    s = traffic_stats(tr)
    assert s["requests"] == 4
    assert s["duration_s"] == 4.0
    assert s["rate_rps"] == pytest.approx(0.75)
    assert s["burstiness_cv"] == pytest.approx(np.sqrt(14 / 9) / (4 / 3))
    assert s["input_length"]["mean"] == 40.0
    assert s["input_length"]["p50"] == 25.0
    assert s["input_length"]["p90"] == pytest.approx(79.0)
    assert s["input_length"]["p99"] == pytest.approx(97.9)
    assert s["input_length"]["max"] == 100
    assert s["output_length"]["total"] == 10
    assert s["categories"] == {"a": 2, "b": 1, NO_CATEGORY: 1}


def test_poisson_cv_near_one() -> None:
    """Exponential gaps have CV close to 1."""
    gaps = np.random.default_rng(0).exponential(1.0, 100_000)
    assert burstiness(np.cumsum(gaps)) == pytest.approx(1.0, abs=0.02)
    assert burstiness(np.array([0.0, 1.0])) is None


def test_single_request_and_table() -> None:
    """One request has zero rate, no CV, and the table still renders."""
    s = traffic_stats(Traffic.from_arrays([0.0], [5], [7]))
    assert s["rate_rps"] == 0.0 and s["burstiness_cv"] is None
    buf = io.StringIO()
    Console(file=buf, width=100).print(stats_table(s))
    text = buf.getvalue()
    assert "requests" in text and "output length p50 / p90 / p99" in text
