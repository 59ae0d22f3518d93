"""Unit tests for the profiler's pure parts: prompts, checkpoints, drafters, fit, report, models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
from specsim.profiler.report import acceptance_summary, plot_costs
from specsim.prompts import BUILTIN, load_jsonl_prompts, load_prompts, stratified
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
    cpu = EngineSettings(model="m", device="cpu", enforce_eager=True).llm_kwargs({"method": "ngram"},
                                                                                detailed_spec=True)
    compiled = EngineSettings(model="m", device="cpu", enforce_eager=False).llm_kwargs()
    gpu = EngineSettings(model="m", device="cuda").llm_kwargs()
    assert cpu["enforce_eager"] is True and "enforce_eager" not in gpu and "enforce_eager" not in compiled
    assert cpu["per_request_spec_decode_metrics"] == "detailed"
    assert cpu["disable_log_stats"] is False and cpu["enable_logging_iteration_details"] is True


def _sample(tokens: float, requests: float, kpairs: float, drafts: float = 0, rows: float = 0, kmax: float = 0,
            drafter: str | None = None, role: str = "decode", held: bool = False, start: int = 0):
    from specsim.profiler.stepfit import Sample

    f = np.array([tokens, requests, kpairs, drafts, rows, kmax, 100.0])
    ms = 20.0 + 0.5 * min(tokens, 64) + 2.0 * max(tokens - 64, 0) + 0.3 * requests + 0.05 * kpairs + 0.2 * drafts
    if drafter == "ngram" and rows:
        ms += 0.1 * rows
    return Sample(feats=f, period_ms=ms, drafter=drafter, role=role, label=f"{role}/{tokens}/{requests}",
                  heldout=held, start=start)


def test_composition_fit_recovers_a_known_model_and_reports_heldout_error() -> None:
    from specsim.profiler.stepfit import errors, features, fit

    train = [_sample(b * (1 + k), b, b * (1 + k) * (c + 1) / 1000, b * k, b if k else 0, k,
                     drafter="ngram" if k else None)
             for b in (1, 2, 4, 8, 16, 32, 64) for k in (0, 2, 4) for c in (64, 512)]
    train += [_sample(t, 1, t * (t + 1) / 2000, role="prefill") for t in (16, 64, 256, 1024)]
    held = [_sample(12 * 3, 12, 12 * 3 * 300 / 1000, 24, 12, 2, drafter="ngram", held=True),
            _sample(512, 1, 512 * 513 / 2000, role="prefill", held=True)]
    model = fit(train + held)
    for s in held + train[::7]:
        assert model.predict(s.feats, s.drafter) == pytest.approx(s.period_ms, rel=0.02)
    assert model.per_request_ms == pytest.approx(0.3, abs=0.05) and model.drafters["ngram"]["per_row_ms"] > 0.05
    rep = errors(model, train + held)
    assert rep["decode/heldout"]["steps"] == 1 and rep["decode/heldout"]["step_mean_abs_rel_error"] < 0.02
    # the features of recorder rows: [new, computed_before, drafts, prompt_tokens]
    f = features([[5, 99, 4, 50], [300, 0, 0, 300]])
    assert list(f[:6]) == [305, 2, pytest.approx((5 * (99 + 3) + 300 * 150.5) / 1000), 4, 1, 4]
    assert f[6] == 300


def test_prefill_pairs_get_their_own_rate_once_cached_prefills_tell_them_apart() -> None:
    from specsim.profiler.stepfit import N_FEATURES, PREFILL_KPAIRS, Sample, errors, features, fit, split_attention

    def step(rows: list[list[int]], role: str, held: bool = False, old: bool = False) -> Sample:
        f = features(rows)
        dec = f[2] - f[PREFILL_KPAIRS]
        ms = 20.0 + 0.5 * f[0] + 0.3 * f[1] + 2.5 * dec + 0.7 * f[PREFILL_KPAIRS]  # decode pairs dearer
        if old:  # a step recorded before prefill pairs were
            f = f.copy()
            f[PREFILL_KPAIRS] = np.nan
        return Sample(feats=f, period_ms=ms, drafter=None, role=role, label=f"{role}/{rows}", heldout=held)

    def steps(old: bool = False) -> list[Sample]:
        out = [step([[1, c, 0, c]] * b, "decode", old=old) for b in (1, 4, 16) for c in (64, 1000, 2000)]
        out += [step([[t, 0, 0, t]], "prefill", old=old) for t in (16, 256, 1024, 2000)]
        out += [step([[n, c, 0, c + n]], "cached_prefill", old=old) for c, n in ((512, 64), (1536, 512), (640, 1024))]
        out += [step([[64, 1024, 0, 1088]], "cached_prefill", held=True, old=old),
                step([[1, 1500, 0, 1500]] * 2, "decode", held=True, old=old)]
        return out

    new, old = steps(), steps(old=True)
    assert len(new[0].feats) == N_FEATURES and split_attention(new) and not split_attention(old)
    model = fit(new)
    assert model.per_kpair_ms == pytest.approx(2.5, rel=0.02)
    assert model.per_prefill_kpair_ms == pytest.approx(0.7, rel=0.05)
    assert errors(model, new)["cached_prefill/heldout"]["step_mean_abs_rel_error"] < 0.01
    one_rate = fit(old)
    assert one_rate.per_prefill_kpair_ms is None
    assert errors(one_rate, old)["cached_prefill/heldout"]["step_mean_abs_rel_error"] > 0.05
    # a recorder row computing more than one token besides its drafts is a prefill row
    f = features([[5, 99, 4, 50], [300, 100, 0, 400], [1, 40, 0, 30]])
    assert f[PREFILL_KPAIRS] == pytest.approx(300 * (100 + 150.5) / 1000)


def test_start_spread_is_half_the_range_of_per_start_ratios() -> None:
    from specsim.profiler.stepfit import fit, start_spread

    base = [_sample(b, b, b * 0.1, start=0) for b in (1, 2, 4, 8, 16, 32, 64) for _ in range(3)]
    model = fit(base)
    slow = []
    for b in (1, 2, 4, 8, 16, 32):
        s = _sample(b, b, b * 0.1, start=1)
        s.period_ms *= 1.2
        slow.append(s)
    assert start_spread(model, base + slow) == pytest.approx(0.1 / 1.1, rel=0.05)



def test_spread_of_medians_of_live_starts() -> None:
    from specsim.profiler.stepfit import spread_of_medians

    # the fidelity study's live servers: fast starts near 0.91, slow ones near 1.065
    assert spread_of_medians([0.914, 0.912, 1.070, 0.891, 1.065, 0.871]) == pytest.approx(
        (1.070 - 0.871) / 2 / np.mean([0.914, 0.912, 1.070, 0.891, 1.065, 0.871]), abs=1e-4)
    assert spread_of_medians([1.0]) is None
    assert spread_of_medians([]) is None

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


def test_cli_config_builds_the_plan() -> None:
    import argparse

    from specsim.profiler.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    cfg = config_from_args(parser.parse_args(["profile", "--out", "x.json", "--k-max", "3"]))
    assert cfg.plan.ks == [0, 1, 2, 3] and cfg.compiled and cfg.dtype == "auto"
    assert (64, 64) in cfg.plan.decode and cfg.plan.max_context() >= 2000  # B up to 64, contexts up to 2k
    cfg = config_from_args(parser.parse_args(["profile", "--out", "x.json", "--plan", "quick", "--eager",
                                              "--decode", "2x16,4x32", "--served-rates", "1,2"]))
    assert cfg.plan.decode == [(2, 16), (4, 32)] and cfg.plan.served_rates == [1.0, 2.0] and not cfg.compiled
    args = parser.parse_args(["profile", "--out", "x.json", "--temperature", "0.7"])
    assert config_from_args(args).temperature == 0.7
    for bad, match in ((["--temperature", "-1"], "temperature"), (["--decode", "8by64"], "BxC"),
                       (["--served-rates", "0"], "positive"), (["--kv-space", "0"], "kv-space")):
        with pytest.raises(SpecsimError, match=match):
            config_from_args(parser.parse_args(["profile", "--out", "x.json", *bad]))


def test_unsupported_drafters_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from specsim.profiler.engine import check_drafter_supported

    target = tmp_path / "t"
    target.mkdir()
    (target / "config.json").write_text('{"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10}')
    with pytest.raises(SpecsimError, match="'mtp' drafts with the target's own MTP layers") as profiler_says:
        check_drafter_supported(parse_drafter("mtp:/some/head"), "cpu", target)
    # the server refuses with the very same check (specsim.vllmkit.env.check_drafter_runnable)
    from specsim.formats.policy import DrafterRef, Policy
    from specsim.policies.serve import check_drafter

    with pytest.raises(SpecsimError) as serve_says:
        check_drafter(Policy.static(DrafterRef(name="m", method="mtp", model="/some/head"), 2), target, "cpu")
    assert str(serve_says.value) == str(profiler_says.value)
    # an EAGLE head runs on this CPU; a folder of its shapes alone is for --costs-only
    shape = tmp_path / "shape"
    shape.mkdir()
    (shape / "config.json").write_text("{}")
    with pytest.raises(SpecsimError, match="no weights.*--costs-only"):
        check_drafter_supported(parse_drafter(f"eagle3:{shape}"), "cpu", target)
    check_drafter_supported(parse_drafter(f"eagle3:{shape}"), "cpu", target, weights=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "arctic_inference" else real(n, *a))
    with pytest.raises(SpecsimError, match="arctic-inference"):
        check_drafter_supported(parse_drafter("suffix"), "cuda", target)
    monkeypatch.setenv("SPECSIM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SpecsimError, match="model file not found"):
        check_drafter_supported(parse_drafter(f"draft_model:{tmp_path / 'small.gguf'}"), "cpu", target)


def test_sampled_summary() -> None:
    from specsim.profiler.report import expected_tokens_per_step, print_summary

    assert expected_tokens_per_step([0.0, 0.5, 0.5, 0.5], 2) == pytest.approx(((1 + 0.5 + 0.25) * 2 + 1.5) / 3)
    tr = AcceptanceTrace(prompt_id="a", category="code", drafter="ngram", prompt_length=5, output_length=3,
                         k_max=2, mode="sampled", p=[0.0, 1.0, 1.0])
    prof = _profile([tr])
    prof.metadata.acceptance_check = {"note": "no cross-check for sampled traces"}
    assert acceptance_summary(prof)["ngram"]["code"] == [pytest.approx(2.0), pytest.approx(2.5)]
    print_summary(prof)  # must not fail on a non-dict check entry


def test_a_larger_cost_starts_resumes_the_same_checkpoint() -> None:
    from specsim.profiler.config import ProfileConfig
    from specsim.profiler.plan import MeasurePlan

    one, two = ProfileConfig(plan=MeasurePlan(cost_starts=1)), ProfileConfig(plan=MeasurePlan(cost_starts=2))
    assert one.fingerprint() == two.fingerprint()  # repeats are keyed apart: only the new starts run
    other = ProfileConfig(plan=MeasurePlan(steps_per_k=3))
    assert other.fingerprint() != one.fingerprint()
