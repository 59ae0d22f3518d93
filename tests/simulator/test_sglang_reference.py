"""The SGLang family against SGLang 0.5.23's own AdaptiveSpeculativeParams: every K the simulator
chose is the step count SGLang's code chooses when fed the same verify batches, step by step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specsim.formats.policy import Policy, SGLangAdaptive, SGLangSlot
from specsim.profiler.analytic import constant_profile
from specsim.simulator import SimConfig, simulate
from tests.reference.engines import sglang_adaptive
from tests.simulator.helpers import DRAFT, poisson_traffic

SGL = sglang_adaptive()
pytestmark = pytest.mark.skipif(SGL is None, reason="SGLang 0.5.23 is not installed (make install adds it)")


def _config_file(sg: SGLangAdaptive, tmp_path: Path) -> str:
    """The adaptive config as SGLang reads it (`--speculative-adaptive-config`)."""
    from specsim.policies.export import sglang_adaptive_config

    path = tmp_path / "adaptive.json"
    path.write_text(json.dumps(sglang_adaptive_config(sg)))
    return str(path)


def _replay_in_sglang(res, sg: SGLangAdaptive, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Feed the simulator's verify batches to SGLang's controller; return (simulator K, SGLang K)."""
    ctl = SGL.AdaptiveSpeculativeParams(initial_steps=sg.start_steps,
                                        cfg_path=_config_file(sg, tmp_path))
    ctl.set_cuda_graph_bs(sg.cuda_graph_batch_sizes or None)
    st = res.steps
    live = st["scheduled"] > 0
    dec, acc, rows, k = (st[c][live] for c in ("decoding", "accepted", "draft_rows", "k"))
    ours, theirs = [], []
    prev_bs = None
    for t in range(len(dec)):
        if prev_bs is not None and dec[t] > 0:
            steps_now = ctl.get_steps_for_batch(prev_bs)
            if steps_now == 0:
                ctl.on_verify_complete([0] * int(dec[t]), batch_size=prev_bs)  # the trivial verify
            elif rows[t] > 0:
                ctl.on_verify_complete([acc[t] / rows[t]] * int(rows[t]), batch_size=prev_bs)
        theirs.append(ctl.get_steps_for_batch(int(dec[t])))
        ours.append(int(k[t]))
        prev_bs = int(dec[t])
    return np.array(ours), np.array(theirs)


CASES = {
    "pr24055-defaults": SGLangAdaptive(),
    "release-defaults": SGLangAdaptive.release(),
    "release-num-steps-3": SGLangAdaptive(slots=SGLangAdaptive.release().slots, initial_steps=3),
    "graphs-and-ceiling": SGLangAdaptive(
        slots=[SGLangSlot(lo=1, steps=[1, 2, 4, 6], up_hysteresis=-0.2, down_hysteresis=0.3, ceiling_coeff=1.5),
               SGLangSlot(lo=6, steps=[0, 2, 3], down_hysteresis=0.4)],
        cuda_graph_batch_sizes=[1, 2, 4, 8, 16], ema_alpha=0.35, update_interval=3, warmup_batches=4),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("alpha", [0.3, 0.85])
def test_every_step_count_matches_sglangs_controller(case: str, alpha: float, tmp_path: Path) -> None:
    sg = CASES[case]
    pol = Policy(drafter=DRAFT, family="sglang", sglang=sg)
    traffic = poisson_traffic(160, rate=6, inp=48, out=(20, 160), seed=11)  # batches from 1 to ~20
    res = simulate(constant_profile(10, 0.05, alpha=alpha, k_max=8), traffic, pol, SimConfig())
    ours, theirs = _replay_in_sglang(res, sg, tmp_path)
    assert len(set(ours)) > 1, "the case never changed K: it checks nothing"
    mismatch = np.flatnonzero(ours != theirs)
    assert mismatch.size == 0, f"first difference at step {mismatch[0]}: specsim {ours[mismatch[0]]}, " \
                               f"SGLang {theirs[mismatch[0]]}"


def test_release_defaults_are_sglangs_built_in_config() -> None:
    from specsim.policies.export import sglang_adaptive_config

    ours = sglang_adaptive_config(SGLangAdaptive.release())
    theirs = SGL.DEFAULT_ADAPTIVE_CONFIG
    assert {k: v["candidate_steps"] for k, v in ours.items() if k.isdigit()} == \
        {k: v["candidate_steps"] for k, v in theirs.items()}
    for key, entry in theirs.items():
        assert ours[key]["up_hysteresis"] == entry["up_hysteresis"]
        assert ours[key]["down_hysteresis"] == entry["down_hysteresis"]
