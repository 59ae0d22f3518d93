"""`specsim verify`'s decision and its candidates, on synthetic measurements (no server): it ships
only what is significantly better than the best measured baseline, and it measures the tuner's
runners-up when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specsim.formats.policy import DrafterRef, Policy, Provenance
from specsim.metrics import metric
from specsim.profiler.analytic import constant_profile
from specsim.simulator.config import SimConfig
from specsim.verify.config import VerifyConfig
from specsim.verify.run import Candidate, _decide, candidates
from specsim.verify.stats import bootstrap, metric_value
from tests.tuner.helpers import poisson

DRAFT = DrafterRef(name="draft", method="draft_model", model="draft")
TPOT = metric("mean-tpot")


def _runs(tpot_mean: float, n: int = 60, repeats: int = 2, seed: int = 0, noise: float = 0.01) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        tpot = tpot_mean + rng.normal(0, noise, n)
        out.append({"arrival": np.arange(n, dtype=float), "input_length": np.full(n, 100.0),
                    "output_length": np.full(n, 64.0), "ttft": np.full(n, 0.2), "tpot": tpot,
                    "e2e": 0.2 + 63 * tpot})
    return out


def _decide_on(policy_tpot: float, off_tpot: float, seed: int = 0) -> tuple[str, dict]:
    cands = [Candidate("policy", Policy.static(DRAFT, 2), "policy"), Candidate("off", Policy(), "baseline")]
    runs = {"policy": _runs(policy_tpot, seed=seed, noise=0.002), "off": _runs(off_tpot, seed=seed + 1, noise=0.002)}
    pred = {"policy": off_tpot * 0.9, "off": off_tpot}  # the simulator predicted a 10% gain
    vcfg = VerifyConfig(bootstrap_samples=300)
    res = _decide(cands, runs, pred, TPOT, {}, None, vcfg, Path("."), False, 1.0)
    return res.verdict, res.candidates


def test_ships_a_policy_significantly_better_than_the_best_baseline() -> None:
    verdict, c = _decide_on(0.050, 0.060)  # 17% lower TPOT, noise 2 ms per request
    assert verdict == "ship"
    g = c["policy"]["gain_over_best_baseline"]
    assert g["low"] > 0.1 and abs(g["value"] - 1 / 6) < 0.02
    assert c["policy"]["predicted_gain"] is not None and c["off"]["gain_over_best_baseline"] is None


def test_does_not_ship_a_policy_within_the_noise_or_worse() -> None:
    assert _decide_on(0.0600, 0.0601)[0] == "don't ship"  # within the noise
    verdict, c = _decide_on(0.070, 0.060)  # measurably worse, though predicted better
    assert verdict == "don't ship"
    assert c["policy"]["gain_over_best_baseline"]["high"] < 0 < c["policy"]["predicted_gain"]


def test_bootstrap_interval_covers_the_point_and_narrows_with_requests() -> None:
    wide = bootstrap(TPOT, {"a": _runs(0.05, n=10, noise=0.01)}, {}, None, samples=400)[0]["a"]
    narrow = bootstrap(TPOT, {"a": _runs(0.05, n=400, noise=0.01)}, {}, None, samples=400)[0]["a"]
    assert wide.low <= wide.value <= wide.high and narrow.low <= narrow.value <= narrow.high
    assert narrow.high - narrow.low < 0.5 * (wide.high - wide.low)
    cols = _runs(0.05, n=20)[0]
    assert metric_value(metric("throughput"), cols, {}, None) == cols["output_length"].sum() / (
        cols["arrival"][-1] + cols["e2e"][-1])


def test_candidates_dedupe_baselines_and_include_runners_up() -> None:
    prof = constant_profile(10, 0.05, 0.7, k_max=4)
    traffic = poisson(40, 3.0, seed=1)
    ru = [Policy.static(DRAFT, 1).model_dump(mode="json", by_alias=True, exclude={"provenance"}),
          Policy(drafter=DRAFT, k_schedule=[(1, 8, 3)]).model_dump(mode="json", by_alias=True, exclude={"provenance"})]
    pol = Policy(drafter=DRAFT, k_schedule=[(1, 16, 4)], provenance=Provenance(runners_up=ru, objective="mean-tpot"))
    cands = candidates(pol, prof, traffic, SimConfig(), 2, TPOT, {}, None)
    names = [c.name for c in cands]
    assert names[:2] == ["policy", "off"] and any(n.startswith("static-k") for n in names)
    assert [c.role for c in cands].count("runner-up") >= 1  # one may equal the best static K and be dropped
    assert len({c.policy.model_dump_json(exclude={"provenance"}) for c in cands}) == len(cands)
    assert candidates(pol, prof, traffic, SimConfig(), 0, TPOT, {}, None)[-1].role != "runner-up"
