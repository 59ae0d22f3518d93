"""Synthetic traffic: Poisson or Gamma (bursty) arrivals with lengths from a trace or a distribution.

Arrivals form a renewal process whose inter-arrival gaps have mean 1/rate and coefficient of
variation `cv` (Gamma with shape 1/cv^2; cv = 1 is the exponential, i.e. Poisson, and cv > 1 is
burstier). The first request arrives at t = 0. Lengths are either resampled from a source trace,
keeping each request's (input, output, category) triple together, or drawn independently from a
`LengthDist`. Everything comes from one seeded numpy Generator, so a seed fixes the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.traffic import Traffic

Arrival = Literal["poisson", "gamma"]
_MAX_REQUESTS = 50_000_000
MAX_LENGTH = 2**62
"""Largest token length drawn (the traffic contract allows up to 2^63 - 1; this leaves headroom)."""


@dataclass(frozen=True)
class LengthDist:
    """A token-length distribution: fixed at `mean`, or lognormal with the given mean and median."""

    mean: float
    median: float | None = None
    """None (or equal to mean): every request gets round(mean) tokens."""
    max: int | None = None
    """Optional upper clip applied after rounding."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and 1 <= self.mean <= MAX_LENGTH):
            raise SpecsimError(f"length mean must be a number in [1, 2^62] tokens, got {self.mean:g}")
        if self.median is not None:
            if not (math.isfinite(self.median) and self.median > 0):
                raise SpecsimError(f"length median must be a positive number, got {self.median}")
            if self.median > self.mean:
                raise SpecsimError(
                    f"a lognormal needs median <= mean (got median {self.median} > mean {self.mean})"
                )
        if self.max is not None and not 1 <= self.max <= MAX_LENGTH:
            raise SpecsimError(f"length max must lie in [1, 2^62], got {self.max}")

    @property
    def kind(self) -> str:
        """'fixed' or 'lognormal'."""
        return "fixed" if self.median is None or self.median == self.mean else "lognormal"

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw `n` integer lengths >= 1."""
        if self.kind == "fixed":
            vals = np.full(n, max(1, round(self.mean)), dtype=np.int64)
        else:
            assert self.median is not None
            mu = math.log(self.median)
            sigma = math.sqrt(2.0 * math.log(self.mean / self.median))  # mean = exp(mu + sigma^2/2)
            vals = np.clip(np.rint(rng.lognormal(mu, sigma, n)), 1, MAX_LENGTH).astype(np.int64)
        if self.max is not None:
            vals = np.minimum(vals, self.max)
        return vals

    def describe(self) -> dict[str, Any]:
        """Parameters for the trace metadata."""
        d: dict[str, Any] = {"kind": self.kind, "mean": self.mean}
        if self.kind == "lognormal":
            d["median"] = self.median
        if self.max is not None:
            d["max"] = self.max
        return d


def interarrivals(rng: np.random.Generator, n: int, rate: float, arrival: Arrival, cv: float) -> np.ndarray:
    """`n` inter-arrival gaps in seconds with mean 1/rate and coefficient of variation `cv`."""
    if arrival == "poisson":
        return rng.exponential(1.0 / rate, n)
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, 1.0 / (rate * shape), n)


def arrival_times(
    rng: np.random.Generator,
    rate: float,
    arrival: Arrival = "poisson",
    cv: float = 1.0,
    duration: float | None = None,
    num_requests: int | None = None,
) -> np.ndarray:
    """Arrival times starting at 0: `num_requests` of them, or all that fall before `duration`."""
    if num_requests is not None:
        gaps = interarrivals(rng, max(num_requests - 1, 0), rate, arrival, cv)
        return np.concatenate(([0.0], np.cumsum(gaps)))
    assert duration is not None
    if rate * duration > _MAX_REQUESTS:
        raise SpecsimError(f"synthetic trace would exceed {_MAX_REQUESTS} requests; lower rate or duration")
    chunk = min(max(1024, int(rate * duration * 1.1) + 16), 1 << 22)
    parts: list[np.ndarray] = [np.zeros(1)]
    last = 0.0
    total = 1
    while True:
        t = last + np.cumsum(interarrivals(rng, chunk, rate, arrival, cv))
        inside = t[t < duration]
        parts.append(inside)
        total += len(inside)
        if total > _MAX_REQUESTS:
            raise SpecsimError(f"synthetic trace would exceed {_MAX_REQUESTS} requests")
        if len(inside) < chunk:
            break
        last = float(t[-1])
    return np.concatenate(parts)


def synthesize(
    *,
    rate: float | None = None,
    rate_scale: float | None = None,
    duration: float | None = None,
    num_requests: int | None = None,
    arrival: Arrival = "poisson",
    cv: float = 1.0,
    source: Traffic | None = None,
    input_dist: LengthDist | None = None,
    output_dist: LengthDist | None = None,
    category: str | None = None,
    seed: int = 0,
) -> Traffic:
    """Generate a synthetic trace; the same arguments and seed give identical output.

    The rate is `rate` (req/s), or `rate_scale` times the source trace's rate, or the source's rate
    when neither is given. The length is `num_requests` requests, or every arrival in `duration`
    seconds (default: the source's duration). Lengths come from `source` (empirical resampling of
    whole requests) unless `input_dist` and `output_dist` are given.
    """
    if rate is not None and rate_scale is not None:
        raise SpecsimError("give either a rate or a rate scale, not both")
    if duration is not None and num_requests is not None:
        raise SpecsimError("give either a duration or a number of requests, not both")
    if arrival not in ("poisson", "gamma"):
        raise SpecsimError(f"arrival must be 'poisson' or 'gamma', got {arrival!r}")
    if not (math.isfinite(cv) and 1e-3 <= cv <= 1e3):
        raise SpecsimError(f"cv must lie in [0.001, 1000], got {cv:g}")
    if arrival == "poisson" and cv != 1.0:
        raise SpecsimError("Poisson arrivals have cv = 1; use --arrival gamma for another cv")
    if source is not None and len(source) == 0:
        raise SpecsimError("the source trace holds no requests")
    if seed < 0:
        raise SpecsimError(f"seed must be >= 0, got {seed}")

    if rate is None:
        if source is None:
            raise SpecsimError("need a rate (--rate), or a source trace to take (a scale of) its rate from")
        if source.rate <= 0:
            raise SpecsimError("the source trace has no measurable rate (needs two arrivals apart in time)")
        rate = source.rate * (1.0 if rate_scale is None else rate_scale)
    if not (math.isfinite(rate) and rate > 0):
        raise SpecsimError(f"rate must be a positive number, got {rate}")
    if num_requests is None and duration is None:
        if source is None or source.duration <= 0:
            raise SpecsimError("need a duration (--duration) or a number of requests (--num-requests)")
        duration = source.duration
    if num_requests is not None and not (1 <= num_requests <= _MAX_REQUESTS):
        raise SpecsimError(f"number of requests must be in 1..{_MAX_REQUESTS}, got {num_requests}")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise SpecsimError(f"duration must be a positive number of seconds, got {duration}")
    if (input_dist is None) != (output_dist is None):
        raise SpecsimError("give both input and output length distributions, or neither")
    if input_dist is None and source is None:
        raise SpecsimError("need lengths: a source trace (--lengths-from) or --input-mean/--output-mean")

    rng = np.random.default_rng(seed)
    ts = arrival_times(rng, rate, arrival, cv, duration=duration, num_requests=num_requests)
    n = len(ts)
    meta: dict[str, Any] = {
        "source": "synthetic",
        "generator": {
            "arrival": arrival,
            "cv": cv,
            "rate": rate,
            "rate_scale": rate_scale,
            "duration": duration,
            "num_requests": num_requests,
            "seed": seed,
        },
    }
    if input_dist is not None and output_dist is not None:
        inp = input_dist.sample(rng, n)
        out = output_dist.sample(rng, n)
        cats: list[str | None] = [category] * n
        pids: list[str | None] | None = None
        meta["lengths"] = {"input": input_dist.describe(), "output": output_dist.describe()}
    else:
        assert source is not None
        pick = rng.integers(0, len(source), n)
        inp = source.input_lengths[pick]
        out = source.output_lengths[pick]
        src_cats = source.categories
        cats = [category if category is not None else src_cats[i] for i in pick.tolist()]
        # a resampled request keeps its prompt (and so its own acceptance) with its lengths
        pids = [source.prompt_ids[i] for i in pick.tolist()] if source.prompt_ids is not None else None
        meta["lengths"] = {"kind": "empirical", "from": str(source.metadata.get("source", "trace"))}
    ids = [f"synth-{i}" for i in range(n)]
    return Traffic.from_arrays(ts, inp, out, cats, ids, meta, prompt_ids=pids)
