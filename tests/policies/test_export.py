"""`specsim export`: every field of the vLLM, SGLang and TensorRT-LLM mappings."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.policies.export import (
    POLICY_ENV,
    PROPOSER_CLASS,
    SCHEDULE_CAP,
    expand_schedule,
    export,
    to_sglang,
    to_trtllm,
    to_vllm,
    vllm_schedule,
)
from tests.policies.conftest import NGRAM, policy, write_json


def test_vllm_every_field() -> None:
    p = policy(k_schedule=[[1, 4, 3], [5, 16, 1], [17, 256, 0]], engine={"max_num_seqs": 64,
                                                                          "max_num_batched_tokens": 2048})
    exp = to_vllm(p)
    assert exp.config == {
        "method": "ngram",
        "num_speculative_tokens": 3,
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 4,
        "num_speculative_tokens_per_batch_size": [[1, 4, 3], [5, 16, 1], [17, 256, 0]],
    }
    assert exp.args[:4] == ["--max-num-seqs", "64", "--max-num-batched-tokens", "2048"]
    i = exp.args.index("--speculative-config")
    assert json.loads(exp.args[i + 1]) == exp.config
    assert exp.env == {} and exp.unsupported == []
    assert exp.command("/m").startswith("vllm serve /m --max-num-seqs 64")


def test_vllm_gaps_and_tail_become_explicit_zeros() -> None:
    # specsim: uncovered batch sizes are off; vLLM would carry the previous K forward.
    p = policy(k_schedule=[[2, 4, 3], [10, 16, 1]])
    assert vllm_schedule(p) == [[1, 1, 0], [2, 4, 3], [5, 9, 0], [10, 16, 1], [17, SCHEDULE_CAP, 0]]


def test_vllm_static_k_needs_no_schedule() -> None:
    cfg = to_vllm(Policy.static(Policy.model_validate({"drafter": NGRAM, "version": 1}).drafter, 4)).config
    assert cfg is not None and cfg["num_speculative_tokens"] == 4
    assert "num_speculative_tokens_per_batch_size" not in cfg


def test_vllm_off_policy_has_no_speculative_config() -> None:
    for p in (Policy(), policy(k_schedule=[[1, 8, 0]])):
        exp = to_vllm(p)
        assert exp.config is None and "--speculative-config" not in exp.args


def test_vllm_draft_model_keeps_model_and_params() -> None:
    p = policy(drafter={"name": "d", "method": "draft_model", "model": "/models/draft", "params": {"x": 1}},
               k_schedule=[[1, 8, 2]])
    cfg = to_vllm(p).config
    assert cfg is not None
    assert cfg["method"] == "draft_model" and cfg["model"] == "/models/draft" and cfg["x"] == 1


def test_vllm_hysteresis_and_floor_use_the_custom_proposer() -> None:
    p = policy(k_schedule=[[1, 4, 3], [5, 8, 1]], hysteresis=1, acceptance_floor={"min_rate": 0.3})
    exp = to_vllm(p)
    assert exp.config == {"method": "custom_class", "model": PROPOSER_CLASS, "num_speculative_tokens": 3}
    back = Policy.model_validate_json(exp.env[POLICY_ENV])
    assert back.k_schedule == p.k_schedule and back.hysteresis == 1
    assert back.acceptance_floor is not None and back.acceptance_floor.min_rate == 0.3
    assert exp.command("/m").startswith(f"{POLICY_ENV}=")


def test_vllm_refuses_hysteresis_for_other_drafters() -> None:
    p = policy(drafter={"name": "s", "method": "suffix"}, k_schedule=[[1, 4, 3]], hysteresis=2)
    with pytest.raises(SpecsimError, match="cannot enforce"):
        to_vllm(p)


def test_unknown_method_and_target() -> None:
    p = policy(drafter={"name": "x", "method": "medusa"}, k_schedule=[[1, 4, 3]])
    with pytest.raises(SpecsimError, match="no vLLM mapping"):
        to_vllm(p)
    with pytest.raises(SpecsimError, match="unknown export target"):
        export(policy(k_schedule=[[1, 4, 3]]), "tgi")


schedules = st.lists(st.tuples(st.integers(1, 6), st.integers(0, 6), st.integers(0, 5)), max_size=5).map(
    lambda xs: _ranges(xs)
)


def _ranges(xs: list[tuple[int, int, int]]) -> list[list[int]]:
    out, nxt = [], 1
    for gap, width, k in xs:
        lo = nxt + gap - 1
        out.append([lo, lo + width, k])
        nxt = lo + width + 1
    return out


@settings(max_examples=200, deadline=None)
@given(schedules, st.integers(1, 48))
def test_vllm_lookup_equals_policy_everywhere(sched: list[list[int]], max_seqs: int) -> None:
    p = policy(k_schedule=sched)
    if p.max_k == 0:
        return
    dense = expand_schedule(vllm_schedule(p), max_seqs, p.max_k)
    assert dense[1:] == [p.k_for(b) for b in range(1, max_seqs + 1)]


def test_expand_schedule_matches_installed_vllm() -> None:
    utils = pytest.importorskip("vllm.v1.spec_decode.dynamic.utils")
    for sched in ([[1, 4, 3], [5, 16, 0]], [[2, 4, 3], [10, 16, 1]], [[1, 2, 1], [3, 3, 4], [7, 9, 2]]):
        p = policy(k_schedule=sched)
        vs = vllm_schedule(p)
        for m in (1, 8, 20):
            assert utils.build_dynamic_sd_schedule_lookup(vs, m, p.max_k) == expand_schedule(vs, m, p.max_k)
            assert utils.build_dynamic_sd_schedule_lookup(vs, m, p.max_k)[1:] == [p.k_for(b) for b in range(1, m + 1)]


def test_sglang_mapping_and_what_it_cannot_express() -> None:
    p = policy(k_schedule=[[1, 4, 3], [5, 16, 0]], hysteresis=1, acceptance_floor={"min_rate": 0.2},
               engine={"max_num_seqs": 32})
    exp = to_sglang(p)
    assert exp.config == {
        "speculative_algorithm": "NGRAM",
        "speculative_num_draft_tokens": 4,
        "speculative_ngram_min_match_window_size": 2,
        "speculative_ngram_max_match_window_size": 4,
    }
    assert exp.args[:2] == ["--max-running-requests", "32"]
    assert "--speculative-num-draft-tokens" in exp.args
    text = " ".join(exp.unsupported)
    assert "K schedule" in text and "hysteresis" in text and "acceptance_floor" in text
    static = to_sglang(Policy.static(p.drafter, 3))
    assert static.unsupported == []


def test_trtllm_schedule_and_max_concurrency() -> None:
    p = policy(k_schedule=[[1, 4, 3], [5, 16, 1]], engine={"max_num_seqs": 64})
    exp = to_trtllm(p)
    assert exp.config == {"speculative_config": {
        "decoding_type": "NGram", "max_draft_len": 3, "max_matching_ngram_size": 4,
        "draft_len_schedule": {"4": 3, "16": 1}, "max_concurrency": 16}}
    assert exp.args[:2] == ["--max_batch_size", "64"] and exp.unsupported == []
    static = to_trtllm(Policy.static(p.drafter, 2)).config
    assert static == {"speculative_config": {"decoding_type": "NGram", "max_draft_len": 2,
                                             "max_matching_ngram_size": 4}}
    hyst = to_trtllm(policy(k_schedule=[[1, 4, 3]], hysteresis=1, acceptance_floor={"min_rate": 0.5}))
    assert len(hyst.unsupported) == 2


def test_cli_export_prints_and_writes(tmp_path, capsys) -> None:  # noqa: ANN001
    pol = write_json(tmp_path / "p.json", {"version": 1, "drafter": NGRAM, "k_schedule": [[1, 4, 3], [5, 16, 0]]})
    out = tmp_path / "exp.json"
    assert main(["export", str(pol), "--model", "/m", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "vllm serve /m" in text and "num_speculative_tokens_per_batch_size" in text
    doc = json.loads(out.read_text())
    assert doc["target"] == "vllm" and doc["config"]["num_speculative_tokens"] == 3
    assert main(["export", "--to", "sglang", str(pol)]) == 0
    assert "NOT EXPRESSIBLE on sglang" in capsys.readouterr().out


def test_cli_export_bad_policy_is_one_line(tmp_path, capsys) -> None:  # noqa: ANN001
    pol = write_json(tmp_path / "p.json", {"schema": "specsim.profile", "version": 1})
    assert main(["export", str(pol)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("specsim: error:") and err.count("\n") == 1
