"""Synthetic traffic: arrival rate and burstiness within tolerance, lengths, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specsim.errors import SpecsimError
from specsim.formats.traffic import Traffic
from specsim.traffic.stats import burstiness
from specsim.traffic.synth import LengthDist, synthesize

FIXED = {"input_dist": LengthDist(100), "output_dist": LengthDist(20)}


def _source() -> Traffic:
    ts = np.arange(100, dtype=np.float64) * 0.5  # 2 req/s over 49.5 s
    inp = np.arange(1, 101) * 10
    out = np.arange(1, 101)
    cats = ["a" if i % 2 else "b" for i in range(100)]
    return Traffic.from_arrays(ts, inp, out, cats, metadata={"source": "src"})


@pytest.mark.parametrize(
    ("arrival", "cv"), [("poisson", 1.0), ("gamma", 0.5), ("gamma", 1.0), ("gamma", 3.0)]
)
def test_rate_and_cv(arrival: str, cv: float) -> None:
    """For 200k arrivals the empirical rate is within 1% and the gap CV within 3%."""
    tr = synthesize(rate=20.0, num_requests=200_000, arrival=arrival, cv=cv, seed=7, **FIXED)  # type: ignore[arg-type]
    assert len(tr) == 200_000
    assert tr.timestamps[0] == 0.0
    assert tr.rate == pytest.approx(20.0, rel=0.01)
    cv_hat = burstiness(tr.timestamps)
    assert cv_hat is not None and cv_hat == pytest.approx(cv, rel=0.03)


def test_duration_mode() -> None:
    """With a duration every arrival lies in [0, D) and the count is about rate * D."""
    tr = synthesize(rate=50.0, duration=2000.0, seed=1, **FIXED)
    assert tr.timestamps[-1] < 2000.0
    assert len(tr) == pytest.approx(100_000, rel=0.02)
    assert np.all(np.diff(tr.timestamps) >= 0)


def test_same_seed_same_output_and_different_seed_differs() -> None:
    """The seed fixes every column."""
    kw = {"rate": 3.0, "duration": 500.0, "arrival": "gamma", "cv": 2.0, "source": _source()}
    a = synthesize(seed=42, **kw)  # type: ignore[arg-type]
    b = synthesize(seed=42, **kw)  # type: ignore[arg-type]
    c = synthesize(seed=43, **kw)  # type: ignore[arg-type]
    assert a.digest() == b.digest() and a.request_ids == b.request_ids
    assert a.digest() != c.digest()


def test_empirical_resampling_keeps_pairs_and_categories() -> None:
    """Resampled requests are whole source requests: (input, output, category) stay together."""
    src = _source()
    tr = synthesize(num_requests=5000, source=src, seed=3)
    assert tr.rate == pytest.approx(src.rate, rel=0.05)
    assert np.all(tr.input_lengths == tr.output_lengths * 10)
    for out, cat in zip(tr.output_lengths.tolist(), tr.categories, strict=True):
        assert cat == ("a" if (out - 1) % 2 else "b")
    assert len(set(tr.output_lengths.tolist())) > 90  # draws cover the source


def test_rate_scale_and_default_duration() -> None:
    """rate_scale multiplies the source rate; the duration defaults to the source's."""
    src = _source()
    tr = synthesize(rate_scale=4.0, source=src, seed=0)
    assert tr.timestamps[-1] < src.duration
    assert len(tr) == pytest.approx(4 * src.rate * src.duration, rel=0.15)
    assert tr.metadata["generator"]["rate"] == pytest.approx(4 * src.rate)


def test_lognormal_lengths() -> None:
    """Lognormal lengths hit the requested mean and median; fixed lengths are constant."""
    d = LengthDist(mean=500.0, median=300.0)
    rng = np.random.default_rng(0)
    x = d.sample(rng, 400_000)
    assert x.min() >= 1
    assert x.mean() == pytest.approx(500.0, rel=0.02)
    assert np.median(x) == pytest.approx(300.0, rel=0.02)
    assert LengthDist(mean=64.4).sample(rng, 5).tolist() == [64] * 5
    assert LengthDist(mean=500.0, median=300.0, max=400).sample(rng, 1000).max() == 400
    sigma = math.sqrt(2 * math.log(500 / 300))
    assert np.std(np.log(x)) == pytest.approx(sigma, rel=0.03)


def test_distribution_lengths_with_category() -> None:
    """Distribution lengths get the given category."""
    tr = synthesize(rate=1.0, num_requests=10, category="chat", seed=0, **FIXED)
    assert set(tr.categories) == {"chat"}
    assert tr.input_lengths.tolist() == [100] * 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 1.0, "rate_scale": 2.0, "num_requests": 5, **FIXED},
        {"rate": 1.0, "duration": 5.0, "num_requests": 5, **FIXED},
        {"rate": -1.0, "num_requests": 5, **FIXED},
        {"rate": 1.0, "num_requests": 0, **FIXED},
        {"rate": 1.0, "duration": float("inf"), **FIXED},
        {"rate": 1.0, "num_requests": 5, "arrival": "poisson", "cv": 2.0, **FIXED},
        {"rate": 1.0, "num_requests": 5, "arrival": "gamma", "cv": 0.0, **FIXED},
        {"rate": 1.0, "num_requests": 5, "arrival": "weibull", **FIXED},
        {"rate": 1.0, "num_requests": 5},
        {"num_requests": 5, **FIXED},
        {"rate": 1.0, **FIXED},
        {"rate": 1.0, "num_requests": 5, "input_dist": LengthDist(10)},
        {"rate": 1e9, "duration": 1e9, **FIXED},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    """Contradictory or impossible arguments are SpecsimErrors."""
    with pytest.raises(SpecsimError):
        synthesize(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"mean": 0.5}, {"mean": 10, "median": 20}, {"mean": 10, "max": 0}])
def test_bad_length_dist(kwargs: dict[str, float]) -> None:
    """Impossible length distributions are SpecsimErrors."""
    with pytest.raises(SpecsimError):
        LengthDist(**kwargs)  # type: ignore[arg-type]


def test_empirical_resampling_keeps_prompt_ids() -> None:
    """A resampled request keeps the prompt it names, so its acceptance trace follows it."""
    n = 50
    src = Traffic.from_arrays(np.arange(n, dtype=float), np.arange(1, n + 1), np.arange(1, n + 1),
                              prompt_ids=[f"p{i + 1}" for i in range(n)])
    tr = synthesize(num_requests=300, source=src, seed=1)
    assert tr.prompt_ids is not None
    assert all(pid == f"p{inp}" for pid, inp in zip(tr.prompt_ids, tr.input_lengths.tolist(), strict=True))
