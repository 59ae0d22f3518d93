"""`tune --family` and `compare-engines`: every point the tuner samples in a family is a valid policy of
that family which its engine's export accepts unchanged, SGLang's defaults go first, and the comparison
reports each family's best rule against the same baselines."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from specsim.cli import main
from specsim.formats.policy import DrafterRef, Policy
from specsim.io import MANIFEST
from specsim.policies.export import to_sglang, to_trtllm, to_vllm
from specsim.profiler.analytic import constant_profile
from specsim.simulator.config import SimConfig
from specsim.tuner.compare_engines import compare_engines
from specsim.tuner.objectives import Objective
from specsim.tuner.space import SearchSpace
from specsim.tuner.study import StudySettings
from specsim.tuner.tune import tune
from tests.tuner.helpers import poisson, write_inputs

EAGLE3 = DrafterRef(name="e3", method="eagle3", model="/models/eagle3")


def _samples(family: str, n: int = 150, **kw: object) -> list[Policy]:
    prof = constant_profile(10, 0.05, 0.6, k_max=4)
    space = SearchSpace.for_profile(prof, max_batch=64, family=family, **kw)  # type: ignore[arg-type]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.policy(space.suggest(trial), prof))
        study.tell(trial, 0.0)
    return out


def test_sglang_samples_are_sglang_policies_its_export_takes() -> None:
    pols = _samples("sglang")
    fam = [p for p in pols if p.drafter is not None]
    assert len(fam) > 50 and all(p.family == "sglang" and p.sglang is not None for p in fam)
    assert len({len(p.sglang.slots) for p in fam}) == 3  # 1, 2 and 3 slots
    assert any(0 in s.steps for p in fam for s in p.sglang.slots)
    for p in fam:
        assert p.max_k <= 4
        exp = to_sglang(p.model_copy(update={"drafter": EAGLE3}))  # SGLang adapts EAGLE / EAGLE3 only
        assert "--speculative-adaptive" in exp.args


def test_trtllm_samples_are_exportable_without_loss() -> None:
    pols = [p for p in _samples("trtllm") if p.drafter is not None]
    assert all(p.family == "trtllm" and p.trtllm is not None for p in pols)
    assert any(p.trtllm.acceptance_rate_window_size for p in pols) and any(p.trtllm.draft_len_schedule for p in pols)
    for p in pols:
        t = p.trtllm
        ks = list(t.schedule().values())
        assert ks == sorted(ks, reverse=True) and ks[0] == t.max_draft_len
        assert t.min_draft_len == 1  # the profile's drafter is a draft model: Draft_Target keeps 1 token
        spec = to_trtllm(p).config["speculative_config"]  # refuses anything it cannot express
        assert spec["decoding_type"] == "Draft_Target"


def test_specsim_samples_carry_queue_or_context_rules_vllm_can_serve() -> None:
    pols = [p for p in _samples("specsim", max_hysteresis=4, floor=True) if p.drafter is not None]
    assert any(p.queue is not None for p in pols) and any(p.context_schedule for p in pols)
    ngram = DrafterRef(name="ng", method="ngram")
    for p in pols:
        assert p.family == "specsim"
        assert not (p.queue is not None and (p.hysteresis or p.acceptance_floor or p.context_schedule))
        to_vllm(p.model_copy(update={"drafter": ngram}))  # the proposer wraps n-gram only


def test_sglang_search_starts_from_sglangs_defaults() -> None:
    prof = constant_profile(10, 0.05, 0.6, k_max=4)
    space = SearchSpace.for_profile(prof, max_batch=256, family="sglang")
    res = tune(prof, poisson(60, 4.0, seed=2), Objective.parse("mean-tpot"), space, SimConfig(),
               StudySettings(n_trials=6, seed=0, progress=False), baselines=False, prefix_fraction=None)
    first = space.policy(res.study.trials[0].params, prof)
    assert first.sglang is not None
    assert [s.lo for s in first.sglang.slots] == [1, 64, 128]  # PR 24055's slots, steps capped at k_max 4
    assert [s.down_hysteresis for s in first.sglang.slots] == [-0.25, 0.0, 0.25]


def test_compare_engines_reports_each_familys_best_against_one_set_of_baselines() -> None:
    prof = constant_profile(10, 0.05, 0.7, k_max=4)
    res = compare_engines(prof, poisson(80, 3.0, seed=4), Objective.parse("mean-tpot"), [0.5, 2.0],
                          SimConfig(max_num_seqs=32), ("vllm", "sglang", "trtllm"), trials=10)
    assert [r.scale for r in res] == [0.5, 2.0]
    for lr in res:
        assert [r.family for r in lr.rows] == ["vllm", "sglang", "trtllm"]
        assert lr.available_gain is not None and lr.available_gain > 0  # alpha 0.7, a cheap drafter
        for r in lr.rows:
            assert r.policy.drafter is None or r.policy.family == r.family
            assert r.share is not None and r.share <= 1.0 + 1e-9
        assert max(r.share for r in lr.rows) >= 0.5


def test_cli_compare_engines_writes_table_plot_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof, traf = write_inputs(tmp_path, n=60, rate=4.0)
    out = tmp_path / "cmp"
    assert main(["compare-engines", "--profile", str(prof), "--traffic", str(traf), "--trials", "4",
                 "--scales", "1", "--families", "vllm,trtllm", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} - {MANIFEST} == {"comparison.json", "comparison.md", "comparison.png"}
    doc = json.loads((out / "comparison.json").read_text())
    assert [f["family"] for f in doc["loads"][0]["families"]] == ["vllm", "trtllm"]
    assert "share of available gain" in (out / "comparison.md").read_text()
    assert main(["compare-engines", "--profile", str(prof), "--traffic", str(traf), "--families", "vllm,mlc"]) == 2
    err = capsys.readouterr().err
    assert "unknown family mlc" in err and err.count("\n") == 1


def test_cli_tune_family_writes_a_policy_of_that_family(tmp_path: Path) -> None:
    prof, traf = write_inputs(tmp_path, n=60, rate=2.0)
    out = tmp_path / "p.json"
    assert main(["tune", "--profile", str(prof), "--traffic", str(traf), "--family", "trtllm", "--trials", "12",
                 "--objective", "mean-tpot", "--no-progress", "--no-baselines", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["family"] == "trtllm" or doc["drafter"] is None
    assert main(["tune", "--profile", str(prof), "--traffic", str(traf), "--family", "sglang", "--hysteresis", "2",
                 "--out", str(out)]) == 2
