"""End to end through the real vLLM CPU engine: default model, n-gram drafter, tiny grid.

Checks the three promises of the profiler: greedy outputs with and without speculation are
identical token for token; step time grows with batch size; replaying r[pos] reproduces vLLM's
own acceptance counters (drafts, draft tokens, accepted tokens) for the same run within 2%.
One profiling run (two engines: K=0 and K=3) is shared by the whole module.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]

K = 3
MAX_TOKENS = 48


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    from specsim.profiler.costs import CostGrid
    from specsim.profiler.run import ProfileConfig, Profiler

    grid = CostGrid(batch_sizes=[1, 8], ks=[0, K], contexts=[32, 96], heldout_batches=[4], heldout_contexts=[64],
                    decode_tokens=12, min_samples=6, prefill_tokens=[16, 64, 128], prefill_repeats=2)
    # the default model as its own draft model: exercises the teacher-forced draft_model path
    cfg = ProfileConfig(model="default", drafters=["ngram", "draft_model:default"], prompts="builtin", num_prompts=6,
                        crosscheck_prompts=6, max_tokens=MAX_TOKENS, k_max=K, grid=grid)
    out = tmp_path_factory.mktemp("profile") / "p.json"
    prof = Profiler(cfg, out)
    profile = prof.run()
    return prof, profile, out


def test_greedy_outputs_identical_with_and_without_speculation(run) -> None:
    prof, profile, _ = run
    check = prof.ckpt.get("crosscheck/ngram")
    assert len(check["outputs"]) == 6
    for p, spec_out in zip(prof.prompts, check["outputs"], strict=True):
        ref = prof.ckpt.get(f"ref/{p.prompt_id}")["output_ids"]
        assert len(spec_out) >= 1
        assert spec_out == ref[: len(spec_out)], p.prompt_id
    assert profile.metadata.acceptance_check["ngram"]["identical_outputs"] == 6


def test_step_time_grows_with_batch(run) -> None:
    _, profile, _ = run
    dec = profile.target.decode
    assert dec.batch_sizes == [1, 8] and dec.ks == [0, K]
    for j in range(len(dec.ks)):
        assert dec.step_ms[1][j] > dec.step_ms[0][j]
    # verifying K+1 tokens per sequence costs more than one token at the larger batch
    assert dec.step_ms[1][1] > dec.step_ms[1][0]
    assert profile.target.prefill.step_ms[-1] > profile.target.prefill.step_ms[0]
    assert profile.metadata.fit["heldout_points"] >= 1


def test_replayed_traces_reproduce_vllm_counters(run) -> None:
    _, profile, _ = run
    check = profile.metadata.acceptance_check["ngram"]
    measured, replayed = check["vllm_counters"], check["replayed_counters"]
    assert measured["num_drafts"] > 0 and measured["num_accepted_tokens"] > 0
    for name in ("num_drafts", "num_draft_tokens", "num_accepted_tokens"):
        assert abs(replayed[name] - measured[name]) <= 0.02 * measured[name], (name, replayed, measured)
    # vLLM's per-request detailed metrics sum to its aggregate counters
    assert check["vllm_per_request_sums"] == {k: measured[k] for k in check["vllm_per_request_sums"]}
    assert check["step_agreement"] >= 0.9


def test_profile_is_complete_and_loadable(run, tmp_path: Path) -> None:
    from specsim.formats.profile import load_profile, save_profile

    _, profile, _ = run
    md = profile.metadata
    assert md.source == "measured" and md.device == "cpu" and md.engine_version.startswith("vllm")
    assert md.dtype == "float32" and md.threads
    engines = md.engine_args["engines"]
    assert engines["k0"]["llm_kwargs"]["enforce_eager"] is True
    assert engines[f"k{K}"]["llm_kwargs"]["speculative_config"]["method"] == "ngram"
    assert md.engine_args["environment"]["HF_HUB_OFFLINE"] == "1"
    ngram = profile.traces_for("ngram")
    assert len(ngram) == 6 and all(t.source == "replay" for t in ngram)
    assert any(max(t.r) > 0 for t in ngram)
    save_profile(profile, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == profile


def test_resume_uses_the_checkpoint_without_starting_an_engine(run, monkeypatch: pytest.MonkeyPatch) -> None:
    from specsim.profiler import run as run_mod
    from specsim.profiler.run import Profiler

    prof, profile, out = run

    def no_engine(*a, **k):
        raise AssertionError("an engine was started although every point was checkpointed")

    monkeypatch.setattr(run_mod, "build_llm", no_engine)
    again = Profiler(prof.cfg, out).run()
    assert again.target == profile.target and again.acceptance == profile.acceptance


def test_ngram_replay_matches_vllm_numba_proposer() -> None:
    import random

    import numpy as np
    from vllm.v1.spec_decode.ngram_proposer import _find_longest_matched_ngram_and_propose_tokens as vllm_find

    from specsim.profiler.ngram import propose

    rng = random.Random(1)
    for _ in range(300):
        toks = [rng.randrange(5) for _ in range(rng.randrange(1, 60))]
        lo = rng.randrange(1, 4)
        hi = lo + rng.randrange(0, 3)
        k = rng.randrange(1, 6)
        ref = vllm_find(np.asarray(toks, dtype=np.int32), lo, hi, 4096, k).tolist()
        assert propose(toks, lo, hi, k, 4096) == ref


def test_self_draft_model_accepts_everything(run) -> None:
    _, profile, _ = run
    traces = profile.traces_for("draft_model:default")
    assert len(traces) == 6 and all(t.source == "teacher-forced" for t in traces)
    spec = profile.drafters["draft_model:default"]
    assert spec.method == "draft_model" and spec.cost is not None
    # a 30-layer draft proposing K tokens costs real time, more at K=3 than the n-gram lookup
    assert min(v for row in spec.cost.step_ms for v in row) > 5 * max(
        v for row in profile.drafters["ngram"].cost.step_ms for v in row)
    # a model drafting for itself agrees with its own greedy choice (fp32 ties aside)
    hits = sum(r for t in traces for r in t.r[1:])
    best = sum(min(K, t.output_length + K + 1 - pos - 1) for t in traces for pos in range(1, t.output_length))
    assert hits >= 0.95 * best
