"""`specsim export`: every field of the vLLM, SGLang and TensorRT-LLM mappings."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.policy import DrafterRef, Policy, SGLangAdaptive, SGLangSlot, TrtllmSchedule
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
    p = policy(drafter={"name": "d", "method": "draft_model", "model": "/models/draft",
                                "params": {"draft_tensor_parallel_size": 1}}, k_schedule=[[1, 8, 2]])
    cfg = to_vllm(p).config
    assert cfg is not None
    assert cfg["method"] == "draft_model" and cfg["model"] == "/models/draft" and cfg["draft_tensor_parallel_size"] == 1


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


EAGLE3 = {"name": "e3", "method": "eagle3", "model": "/models/eagle3"}


def test_sglang_refuses_what_it_cannot_express_unless_lossy() -> None:
    # one static speculative length: a K schedule, hysteresis or a floor would be silently dropped
    p = policy(drafter=EAGLE3, k_schedule=[[1, 4, 3], [5, 16, 0]], hysteresis=1, acceptance_floor={"min_rate": 0.2},
               engine={"max_num_seqs": 32})
    with pytest.raises(SpecsimError, match="cannot express.*K schedule.*hysteresis.*acceptance_floor"):
        to_sglang(p)
    exp = to_sglang(p, lossy=True)
    assert exp.config == {"speculative_algorithm": "EAGLE3", "speculative_num_steps": 3, "speculative_eagle_topk": 1,
                          "speculative_num_draft_tokens": 4, "speculative_draft_model_path": "/models/eagle3"}
    assert exp.args[:2] == ["--max-running-requests", "32"] and len(exp.unsupported) == 3
    assert exp.engine_version == "SGLang 0.5.23"
    static = to_sglang(Policy.static(p.drafter, 3))
    assert static.unsupported == [] and static.config["speculative_num_steps"] == 3
    with pytest.raises(SpecsimError, match="no SGLang equivalent"):  # SGLang's NGRAM drafts other tokens
        to_sglang(Policy.static(policy().drafter, 2))


def test_sglang_family_is_adaptive_with_its_config_file() -> None:
    sg = SGLangAdaptive(slots=[SGLangSlot(lo=1, steps=[1, 3, 5], down_hysteresis=-0.25),
                               SGLangSlot(lo=16, steps=[0, 1], ceiling_coeff=1.5)],
                        cuda_graph_batch_sizes=[1, 2, 4, 8, 16, 32], ema_alpha=0.3)
    p = Policy(drafter=DrafterRef(**EAGLE3), family="sglang", sglang=sg)
    exp = to_sglang(p)
    a = exp.args
    assert a[a.index("--speculative-algorithm") + 1] == "EAGLE3" and "--speculative-adaptive" in a
    assert a[a.index("--speculative-num-steps") + 1] == "3"  # {0, 1, 3, 5}[4 // 2], as SGLang picks
    assert a[a.index("--speculative-eagle-topk") + 1] == "1"
    i = a.index("--cuda-graph-bs-decode")
    assert a[i + 1:i + 7] == ["1", "2", "4", "8", "16", "32"]
    name = a[a.index("--speculative-adaptive-config") + 1]
    cfg = json.loads(exp.files[name])
    assert cfg == {"ema_alpha": 0.3, "update_interval": 5, "warmup_batches": 10,
                   "1": {"candidate_steps": [1, 3, 5], "up_hysteresis": 0.0, "down_hysteresis": -0.25,
                         "ceiling_coeff": 0.0},
                   "16": {"candidate_steps": [0, 1], "up_hysteresis": 0.0, "down_hysteresis": 0.0,
                          "ceiling_coeff": 1.5}}
    for method in ("ngram", "draft_model"):  # SGLang adapts EAGLE / EAGLE3 (topk 1) only
        with pytest.raises(SpecsimError, match="only for EAGLE"):
            model = "/d" if method == "draft_model" else None
            to_sglang(Policy(drafter=DrafterRef(name="x", method=method, model=model), family="sglang", sglang=sg))
    for target in ("vllm", "trtllm"):
        with pytest.raises(SpecsimError, match="export it --to sglang"):
            export(p, target)


def _sglang_fields() -> set[str] | None:
    """SGLang's server-argument field names, read (not imported) from the installed package's
    sglang/srt/arg_groups/fields/*.py: every annotated class attribute becomes `--name-with-dashes`."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sglang")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "srt" / "arg_groups" / "fields"
    names: set[str] = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                names |= {st.target.id for st in node.body
                          if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)}
    return names


def test_sglang_flags_are_the_installed_sglangs_argument_names() -> None:
    fields = _sglang_fields()
    if fields is None:
        pytest.skip("SGLang 0.5.23 is not installed (make install adds it)")
    sg = SGLangAdaptive(cuda_graph_batch_sizes=[1, 8])
    exps = [to_sglang(Policy(drafter=DrafterRef(**EAGLE3), family="sglang", sglang=sg, engine={"max_num_seqs": 8})),
            to_sglang(Policy.static(DrafterRef(name="d", method="draft_model", model="/d"), 3)),
            to_sglang(Policy.static(DrafterRef(name="m", method="mtp"), 2))]
    flags = {a[2:].replace("-", "_") for e in exps for a in e.args if a.startswith("--")}
    assert flags and flags <= fields, f"not SGLang 0.5.23 arguments: {sorted(flags - fields)}"
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sglang")
    assert spec is not None and spec.origin is not None
    text = (Path(spec.origin).parent / "srt" / "arg_groups" / "fields" / "spec.py").read_text()
    for algo in ("EAGLE", "EAGLE3", "NEXTN", "STANDALONE"):  # the algorithm names SGLang's help lists
        assert algo in text


# TensorRT-LLM does not install on CPU; its schema, written from its docs and source
# (tensorrt_llm/llmapi/llm_args.py @0004396720054fd8e205cbf616f21f0b57c6b412: DecodingBaseConfig and
# subclasses, decoding_type values; TRT-LLM 1.3.0rc27+ docs for the acceptance_rate_* fields).
TRTLLM_DECODING_TYPES = {"AUTO", "DFlash", "DSpark", "Draft_Target", "Eagle3", "Eagle", "Lookahead", "MTP", "Medusa",
                         "NGram", "PARD", "SA", "SaveState", "User_Provided"}
TRTLLM_BASE_FIELDS = {"decoding_type", "max_draft_len", "max_total_draft_tokens", "speculative_model",
                      "max_concurrency", "draft_len_schedule", "acceptance_rate_window_size",
                      "acceptance_rate_threshold", "load_format"}
TRTLLM_FIELDS = {"NGram": {"max_matching_ngram_size", "is_keep_all", "is_use_oldest", "is_public_pool"},
                 "MTP": {"num_nextn_predict_layers"}, "Eagle3": {"eagle3_one_model"}, "Eagle": set(),
                 "Draft_Target": set()}


def _check_trtllm_schema(spec: dict) -> None:
    """What TensorRT-LLM's validators check (validate_draft_len_schedule_and_sort and
    validate_max_concurrency_and_draft_len_schedule_mutually_exclusive)."""
    dt = spec["decoding_type"]
    assert dt in TRTLLM_DECODING_TYPES
    assert set(spec) <= TRTLLM_BASE_FIELDS | TRTLLM_FIELDS[dt], set(spec) - TRTLLM_BASE_FIELDS - TRTLLM_FIELDS[dt]
    assert not ("draft_len_schedule" in spec and "max_concurrency" in spec)
    sched = spec.get("draft_len_schedule")
    if sched is not None:
        ks = {int(k): v for k, v in sched.items()}
        assert all(k >= 1 and 0 <= v <= spec["max_draft_len"] for k, v in ks.items())
        assert ks[min(ks)] == spec["max_draft_len"]
    if "acceptance_rate_threshold" in spec:
        assert 0 <= spec["acceptance_rate_threshold"] <= 1 and spec["acceptance_rate_window_size"] >= 1


def test_trtllm_schedule_from_a_vllm_family_policy() -> None:
    e3 = DrafterRef(**EAGLE3)
    exp = to_trtllm(Policy(drafter=e3, k_schedule=[(1, 4, 3), (5, 16, 1)], engine={"max_num_seqs": 64}))
    spec = exp.config["speculative_config"]
    assert spec == {"decoding_type": "Eagle3", "max_draft_len": 3, "speculative_model": "/models/eagle3",
                    "draft_len_schedule": {"4": 3, "16": 1}}
    _check_trtllm_schema(spec)
    assert exp.args[:2] == ["--max_batch_size", "64"] and exp.unsupported == []
    assert json.loads(exp.files["specsim-trtllm.yaml"]) == exp.config
    static = to_trtllm(Policy.static(policy().drafter, 2)).config
    assert static == {"speculative_config": {"decoding_type": "NGram", "max_draft_len": 2,
                                             "max_matching_ngram_size": 4}}
    # NGram keeps at least one draft token above the schedule: K = 0 there is not expressible
    with pytest.raises(SpecsimError, match="at least 1 draft token"):
        to_trtllm(policy(k_schedule=[[1, 4, 3], [5, 16, 1]]))
    with pytest.raises(SpecsimError, match="must start at max_draft_len"):
        to_trtllm(Policy(drafter=e3, k_schedule=[(1, 4, 1), (5, 16, 3)]))
    with pytest.raises(SpecsimError, match="hysteresis.*acceptance_floor"):
        to_trtllm(Policy(drafter=e3, k_schedule=[(1, 4, 3)], hysteresis=1, acceptance_floor={"min_rate": 0.5}))
    lossy = to_trtllm(Policy(drafter=e3, k_schedule=[(1, 4, 3)], hysteresis=1), lossy=True)
    assert lossy.unsupported == ["hysteresis"]


def test_trtllm_family_with_its_gate_and_min_draft_len() -> None:
    t = TrtllmSchedule(max_draft_len=4, draft_len_schedule={4: 4, 8: 2, 32: 1}, acceptance_rate_window_size=64,
                       acceptance_rate_threshold=0.3)
    exp = to_trtllm(Policy(drafter=DrafterRef(**EAGLE3), family="trtllm", trtllm=t))
    spec = exp.config["speculative_config"]
    assert spec["draft_len_schedule"] == {"4": 4, "8": 2, "32": 1} and spec["acceptance_rate_threshold"] == 0.3
    assert spec["acceptance_rate_window_size"] == 64
    _check_trtllm_schema(spec)
    mc = to_trtllm(Policy(drafter=DrafterRef(**EAGLE3), family="trtllm",
                          trtllm=TrtllmSchedule(max_draft_len=3, max_concurrency=16))).config["speculative_config"]
    assert mc["max_concurrency"] == 16 and "draft_len_schedule" not in mc
    _check_trtllm_schema(mc)
    ng = Policy(drafter=policy().drafter, family="trtllm", trtllm=TrtllmSchedule(max_draft_len=3, min_draft_len=1,
                                                                                 draft_len_schedule={8: 3, 16: 2}))
    spec = to_trtllm(ng).config["speculative_config"]
    assert spec["decoding_type"] == "NGram"
    _check_trtllm_schema(spec)
    with pytest.raises(SpecsimError, match="min_draft_len 0.*uses 1 for NGram"):
        to_trtllm(Policy(drafter=policy().drafter, family="trtllm", trtllm=TrtllmSchedule(max_draft_len=3)))
    dt = to_trtllm(Policy.static(DrafterRef(name="d", method="draft_model", model="/d"), 2)).config
    assert dt["speculative_config"]["decoding_type"] == "Draft_Target"
    mtp = to_trtllm(Policy.static(DrafterRef(name="m", method="mtp"), 2)).config["speculative_config"]
    assert mtp == {"decoding_type": "MTP", "num_nextn_predict_layers": 2}
    _check_trtllm_schema(mtp)


def test_vllm_queue_rule_uses_specsims_scheduler() -> None:
    from specsim.formats.policy import QueueRule
    from specsim.vllmkit.policy_scheduler import ENV, SCHEDULER

    p = Policy(drafter=DrafterRef(**EAGLE3), family="specsim", k_schedule=[(1, SCHEDULE_CAP, 3)],
               queue=QueueRule(max_waiting=4, k=1))
    exp = to_vllm(p)
    assert exp.args[exp.args.index("--scheduler-cls") + 1] == SCHEDULER and exp.env[ENV] == "4:1"
    assert exp.config["num_speculative_tokens_per_batch_size"] == [[1, SCHEDULE_CAP, 3]]
    with pytest.raises(SpecsimError, match="cannot be combined"):
        to_vllm(policy(family="specsim", k_schedule=[[1, 8, 3]], hysteresis=1, queue={"max_waiting": 2, "k": 0}))


def test_vllm_context_axis_goes_through_the_proposer() -> None:
    p = policy(family="specsim", k_schedule=[[1, 8, 3]], context_schedule=[[0, 1024, 3], [1025, 1 << 20, 1]])
    exp = to_vllm(p)
    assert exp.config["method"] == "custom_class"
    assert Policy.model_validate_json(exp.env[POLICY_ENV]).context_schedule == p.context_schedule


def test_cli_export_prints_and_writes(tmp_path, capsys) -> None:  # noqa: ANN001
    pol = write_json(tmp_path / "p.json", {"version": 1, "drafter": NGRAM, "k_schedule": [[1, 4, 3], [5, 16, 0]]})
    out = tmp_path / "exp.json"
    assert main(["export", str(pol), "--model", "/m", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "vllm serve /m" in text and "num_speculative_tokens_per_batch_size" in text
    doc = json.loads(out.read_text())
    assert doc["target"] == "vllm" and doc["config"]["num_speculative_tokens"] == 3
    assert main(["export", "--to", "trtllm", str(pol)]) == 2  # NGram keeps >= 1 draft token above 16
    assert "cannot express" in capsys.readouterr().err
    outdir = tmp_path / "trt"
    assert main(["export", "--to", "trtllm", "--lossy", str(pol), "--out-dir", str(outdir)]) == 0
    assert "NOT EXPRESSIBLE on trtllm" in capsys.readouterr().out
    assert json.loads((outdir / "specsim-trtllm.yaml").read_text())["speculative_config"]["max_draft_len"] == 3
    assert "trtllm-serve" in (outdir / "command.sh").read_text()


def test_cli_export_bad_policy_is_one_line(tmp_path, capsys) -> None:  # noqa: ANN001
    pol = write_json(tmp_path / "p.json", {"schema": "specsim.profile", "version": 1})
    assert main(["export", str(pol)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("specsim: error:") and err.count("\n") == 1
