"""Unit tests for the profiler's pure parts: prompts, checkpoints, drafters, fit, report, models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specsim.errors import SpecsimError
from specsim.formats.profile import (
    AcceptanceTrace,
    DecodeCost,
    DrafterSpec,
    PrefillCurve,
    Profile,
    ProfileMetadata,
    TargetCost,
    load_profile,
    save_profile,
)
from specsim.profiler.checkpoint import Checkpoint, checkpoint_path
from specsim.profiler.engine import EngineSettings, parse_drafter
from specsim.profiler.fit import CostModel, Point, fit_report, fit_slope, median_iqr
from specsim.profiler.prompts import BUILTIN, load_jsonl_prompts, load_prompts, stratified
from specsim.profiler.report import acceptance_summary, plot_costs
from specsim.shared_data import spec_bench_path

SPEC_BENCH = spec_bench_path()


def test_builtin_prompts_cover_the_categories() -> None:
    cats = {p.category for p in BUILTIN}
    assert {"code", "chat", "math", "summarisation", "translation"} <= cats
    assert load_prompts("builtin", 3) == stratified(list(BUILTIN), 3)
    assert len({p.category for p in load_prompts("builtin", 5)}) == 5  # round-robin over categories


def test_spec_bench_loader() -> None:
    if not SPEC_BENCH.is_file():
        pytest.skip("Spec-Bench prompts not present")
    prompts = load_jsonl_prompts(SPEC_BENCH)
    assert len(prompts) == 480
    sub = load_prompts(None, 26)
    assert len({p.category for p in sub}) == 13  # 13 categories, 2 each
    assert all(p.text for p in sub)


def test_prompt_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecsimError, match="not found"):
        load_jsonl_prompts(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "turns": ["hi"]}\n{oops\n')
    with pytest.raises(SpecsimError, match="line 2"):
        load_jsonl_prompts(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": 3}\n')
    with pytest.raises(SpecsimError, match="no 'prompt'"):
        load_jsonl_prompts(empty)
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"id": "a", "category": "code", "prompt": "x"}\n')
    assert load_jsonl_prompts(ok)[0].prompt_id == "a"


def test_checkpoint_resume_drops_cut_line_and_checks_config(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path / "p.json")
    ck = Checkpoint(path, {"a": 1})
    ck.put("decode/x", {"ms": 1.0})
    with open(path, "a") as f:
        f.write('{"key": "decode/y", "ms"')  # a crash mid-write
    again = Checkpoint(path, {"a": 1})
    assert again.done("decode/x") and not again.done("decode/y")
    assert again.get("decode/x")["ms"] == 1.0
    with pytest.raises(SpecsimError, match="different settings"):
        Checkpoint(path, {"a": 2})
    fresh = Checkpoint(path, {"a": 2}, resume=False)
    assert not fresh.done("decode/x")


def test_parse_drafter() -> None:
    d = parse_drafter("ngram")
    assert d.params == {"prompt_lookup_min": 2, "prompt_lookup_max": 4} and d.name == "ngram"
    d = parse_drafter("ngram:min=1,max=3")
    assert d.params == {"prompt_lookup_min": 1, "prompt_lookup_max": 3} and d.name == "ngram-1-3"
    assert parse_drafter("draft_model:/x/small").model == "/x/small"
    cfg = parse_drafter("ngram").speculative_config(3)
    assert cfg == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    for bad in ("medusa", "ngram:min=5,max=2", "ngram:foo=1", "draft_model", "eagle"):
        with pytest.raises(SpecsimError):
            parse_drafter(bad)


def test_engine_settings_keep_cpu_settings_behind_device_check() -> None:
    cpu = EngineSettings(model="m", device="cpu").llm_kwargs({"method": "ngram"}, detailed_spec=True)
    gpu = EngineSettings(model="m", device="cuda").llm_kwargs()
    assert cpu["enforce_eager"] is True and "enforce_eager" not in gpu
    assert cpu["per_request_spec_decode_metrics"] == "detailed"
    assert cpu["disable_log_stats"] is False and cpu["enable_logging_iteration_details"] is True


def test_fit_recovers_slope_and_reports_heldout_error() -> None:
    def true(b: int, k: int, c: float) -> float:
        return 10 + 3 * b + 2 * k * b + 0.01 * b * (c - 100)

    ref = {(b, k): Point(b, k, 100.0, true(b, k, 100)) for b in (1, 2, 4) for k in (0, 1)}
    other = [Point(b, k, 300.0, true(b, k, 300)) for b in (1, 2, 4) for k in (0, 1)]
    slope = fit_slope(other, ref)
    assert slope == pytest.approx(0.01)
    model = CostModel([1, 2, 4], [0, 1], [[ref[(b, k)].ms for k in (0, 1)] for b in (1, 2, 4)], 100.0, slope)
    held = [Point(3, 1, 200.0, true(3, 1, 200))]
    rep = fit_report(model, held)
    assert rep["heldout_points"] == 1 and rep["mean_abs_rel_error"] == pytest.approx(0.0, abs=1e-9)
    bad = fit_report(model, [Point(3, 1, 200.0, 2 * true(3, 1, 200))])
    assert bad["mean_abs_rel_error"] == pytest.approx(0.5, abs=1e-6)
    assert fit_slope([Point(1, 0, 300.0, 1.0)], {(1, 0): Point(1, 0, 100.0, 5.0)}) == 0.0  # never negative
    assert median_iqr([1, 2, 3, 4, 100]) == (3.0, 2.0)


def _profile(traces: list[AcceptanceTrace]) -> Profile:
    return Profile(
        metadata=ProfileMetadata(source="measured", hardware="test", target_model="t"),
        k_max=2,
        target=TargetCost(
            decode=DecodeCost(batch_sizes=[1, 2], ks=[0, 1, 2], step_ms=[[10, 12, 14], [11, 14, 17]],
                              spread_ms=[[1, 1, 1], [1, 1, 1]], reference_context=64, context_ms_per_token=0.01),
            prefill=PrefillCurve(tokens=[16, 64], step_ms=[20, 60]),
        ),
        drafters={"ngram": DrafterSpec(method="ngram", k_max=2)},
        acceptance=traces,
    )


def test_drafted_field_round_trips_and_is_validated(tmp_path: Path) -> None:
    tr = AcceptanceTrace(prompt_id="a", category="code", drafter="ngram", prompt_length=5, output_length=4,
                         k_max=2, r=[0, 2, 1, 0], drafted=[0, 2, 2, 0], source="replay")
    prof = _profile([tr])
    save_profile(prof, tmp_path / "p.json")
    back = load_profile(tmp_path / "p.json")
    assert back.acceptance[0].drafted == [0, 2, 2, 0] and back.acceptance[0].source == "replay"
    data = json.loads((tmp_path / "p.json").read_text())
    data["acceptance"][0]["drafted"] = [0, 1, 2, 0]  # r[1] = 2 > drafted[1] = 1
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(SpecsimError, match="drafted"):
        load_profile(tmp_path / "bad.json")


def test_acceptance_summary_and_plot(tmp_path: Path) -> None:
    traces = [
        AcceptanceTrace(prompt_id="a", category="code", drafter="ngram", prompt_length=5, output_length=7,
                        k_max=2, r=[0, 2, 2, 2, 2, 2, 2]),
        AcceptanceTrace(prompt_id="b", category="chat", drafter="ngram", prompt_length=5, output_length=4,
                        k_max=2, r=[0, 0, 0, 0]),
    ]
    summ = acceptance_summary(_profile(traces))["ngram"]
    # code: every step accepts min(K, 2): K=1 -> 2 tokens/step, K=2 -> 3 tokens/step
    assert summ["code"] == [2.0, 3.0]
    assert summ["chat"] == [1.0, 1.0]
    png = plot_costs(_profile(traces), tmp_path / "c.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_models_resolve_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from specsim.models.prepare import check_same_vocabulary, convert_gguf, resolve_model

    monkeypatch.setenv("SPECSIM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SpecsimError, match="model file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(SpecsimError, match="model file not found"):
        convert_gguf(tmp_path / "missing.gguf", tmp_path / "out")
    with pytest.raises(SpecsimError, match="model not found"):
        resolve_model(str(tmp_path / "nothing-here"))
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(SpecsimError, match="not a model folder"):
        resolve_model(str(folder))
    a, b = tmp_path / "a", tmp_path / "b"
    for p, vocab in ((a, 100), (b, 200)):
        p.mkdir()
        (p / "config.json").write_text(json.dumps({"vocab_size": vocab}))
    with pytest.raises(SpecsimError, match="vocabulary size 200"):
        check_same_vocabulary(a, b)


def test_cli_config_builds_the_grid() -> None:
    import argparse

    from specsim.profiler.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["profile", "--out", "x.json", "--max-batch", "16", "--k-max", "3"])
    cfg = config_from_args(args)
    assert cfg.grid.batch_sizes == [1, 2, 4, 8, 16] and cfg.grid.ks == [0, 1, 2, 3]
    assert cfg.grid.heldout_batches == [3, 6, 12]
    args = parser.parse_args(["profile", "--out", "x.json", "--temperature", "0.7"])
    assert config_from_args(args).temperature == 0.7
    args = parser.parse_args(["profile", "--out", "x.json", "--temperature", "-1"])
    with pytest.raises(SpecsimError, match="temperature"):
        config_from_args(args)


def test_unsupported_drafters_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from specsim.profiler.engine import check_drafter_supported

    target = tmp_path / "t"
    with pytest.raises(SpecsimError, match="not supported .* on CPU"):
        check_drafter_supported(parse_drafter("eagle:/some/head"), "cpu", target)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "arctic_inference" else real(n, *a))
    with pytest.raises(SpecsimError, match="arctic-inference"):
        check_drafter_supported(parse_drafter("suffix"), "cuda", target)
    monkeypatch.setenv("SPECSIM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SpecsimError, match="model file not found"):
        check_drafter_supported(parse_drafter(f"draft_model:{tmp_path / 'small.gguf'}"), "cpu", target)


class _FakeLLM:
    """Stands in for vllm.LLM: each generate() emits a prefill step, then decode steps whose
    elapsed time is 10 ms per token, and one mixed step that must be filtered out."""

    def __init__(self, logger) -> None:
        self.logger = logger
        self.calls: list[int] = []

    def generate(self, prompts, params, use_tqdm=False):
        from types import SimpleNamespace as NS

        b = len(prompts)
        self.calls.append(b)
        k = self.k

        def step(ctx_r, ctx_t, gen_r, gen_t, acc=0):
            spec = NS(num_drafts=gen_r if k else 0, num_draft_tokens=gen_r * k, num_accepted_tokens=acc,
                      num_accepted_tokens_per_pos=[])
            det = NS(num_ctx_requests=ctx_r, num_ctx_tokens=ctx_t, num_generation_requests=gen_r,
                     num_generation_tokens=gen_t, elapsed_ms=10.0 * (gen_t or ctx_t), is_dummy=False)
            self.logger.record(NS(spec_decoding_stats=spec, iteration_details=det), None)

        step(b, b * len(prompts[0]["prompt_token_ids"]), 0, 0)
        for _ in range(4):
            step(0, 0, b, b * (k + 1), acc=b)  # every sequence accepts one draft token
        step(0, 0, b, b)  # a step without drafts: not a B x (K+1) step
        return []


def test_interleaved_measurement_filters_steps_and_round_robins(monkeypatch: pytest.MonkeyPatch) -> None:
    from specsim.profiler import costs
    from specsim.profiler.steplogger import StepLogger

    monkeypatch.setattr(costs, "_sampling", lambda n: None)
    logger = StepLogger()
    llm = _FakeLLM(logger)
    llm.k = 2
    points = {"a": costs.DecodePoint([1] * 10, 1, 2), "b": costs.DecodePoint([1] * 10, 4, 2)}
    got: dict[str, dict] = {}
    costs.measure_interleaved(llm, logger, None, points, 8, 8, lambda key, rec: got.setdefault(key, rec))
    assert llm.calls == [1, 4, 1, 4]  # alternating runs, two each for 8 samples of 4 per run
    assert got["a"]["ms"] == pytest.approx(30.0) and got["b"]["ms"] == pytest.approx(120.0)
    assert got["a"]["n"] == 8 and got["a"]["other_steps"] == 4
    # context: prompt 10 + 1 prefill token, then +2 tokens per step (1 accepted + 1 bonus)
    assert got["a"]["context"] == pytest.approx(10 + 1 + (0 + 2 + 4 + 6) / 4)


def test_sampled_summary() -> None:
    from specsim.profiler.report import expected_tokens_per_step, print_summary

    assert expected_tokens_per_step([0.0, 0.5, 0.5, 0.5], 2) == pytest.approx(((1 + 0.5 + 0.25) * 2 + 1.5) / 3)
    tr = AcceptanceTrace(prompt_id="a", category="code", drafter="ngram", prompt_length=5, output_length=3,
                         k_max=2, mode="sampled", p=[0.0, 1.0, 1.0])
    prof = _profile([tr])
    prof.metadata.acceptance_check = {"note": "no cross-check for sampled traces"}
    assert acceptance_summary(prof)["ngram"]["code"] == [pytest.approx(2.0), pytest.approx(2.5)]
    print_summary(prof)  # must not fail on a non-dict check entry
