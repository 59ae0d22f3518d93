"""The calibrated analytic cost model: its fit, its validation table, its physics, and `profile-analytic`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from specsim.cli import main
from specsim.formats.notice import estimated_costs_notice
from specsim.formats.policy import DrafterRef, Policy, save_policy
from specsim.formats.profile import load_profile, save_profile
from specsim.formats.traffic import save_traffic
from specsim.profiler import calibrate as C
from specsim.profiler.analytic import analytic_profile, constant_profile
from specsim.profiler.hardware import GPUS, MODELS, ModelSpec, lookup_gpu, lookup_model
from specsim.profiler.stepmodel import FIT_PATH, Deployment, StepModel, committed_calibration
from tests.formats.samples import VALID_PROFILE, write_json
from tests.simulator.helpers import poisson_traffic

ROOT = Path(__file__).resolve().parents[2]
POINTS = C.load_points()
CAL = committed_calibration()

# The tolerance the committed constants reproduce their own fit data with.
FIT_MEAN_TOL, FIT_MAX_TOL = 0.10, 0.35


def test_calibrated_model_reproduces_its_fit_data() -> None:
    errs = {p.id: abs(C.rel_error(p, CAL)) for p in POINTS if p.split == "fit"}
    assert len(errs) >= 40
    assert sum(errs.values()) / len(errs) < FIT_MEAN_TOL
    worst = max(errs, key=errs.get)
    assert errs[worst] < FIT_MAX_TOL, f"{worst} off by {errs[worst]:.0%}"


def test_calibrated_beats_the_roofline_on_held_out_points() -> None:
    hold = C.summary([r for r in C.rows(POINTS, CAL) if r.point.split == "holdout"])
    assert hold["points"] >= 25
    assert hold["calibrated_mean"] < 0.6 * hold["uncalibrated_mean"]
    assert hold["calibrated_max"] < hold["uncalibrated_max"]


def test_doc_table_and_committed_summary_match_the_code() -> None:
    doc = (ROOT / C.DOC_PATH).read_text()
    assert C.generated_block(doc) == C.render_tables(POINTS, CAL)
    committed = json.loads(FIT_PATH.read_text())
    report = C.fit_report(POINTS, CAL)
    for key in ("params", "holdout", "fit", "data_sha256"):
        assert committed[key] == report[key], key
    for p in POINTS:  # every point is cited with its source and figure
        assert p.url in doc and f"`{p.id}` ({p.split}): {p.figure}" in doc, p.id


def test_refit_gives_the_committed_predictions() -> None:
    cal = C.fit(POINTS)
    for p in POINTS:
        assert C.predict(p, cal) == pytest.approx(C.predict(p, CAL), rel=0.03), p.id


def test_points_are_complete_and_split() -> None:
    assert {p.split for p in POINTS} == {"fit", "holdout"}
    for p in POINTS:
        assert p.url.startswith("https://") and p.figure and p.source, p.id
        lookup_model(p.model)
        lookup_gpu(p.gpu)
    assert len({p.id for p in POINTS}) == len(POINTS)


def test_verifying_nine_tokens_costs_more_than_one_at_batch_16_on_70b_h100() -> None:
    prof = analytic_profile(target="llama-70b", drafter_model=None, gpu="h100", ngram=False)
    dec = prof.target.decode
    row = dec.step_ms[dec.batch_sizes.index(16)]
    assert row[8] > 1.1 * row[0]
    assert all(b > a for a, b in zip(row, row[1:], strict=False))
    flat = analytic_profile(target="llama-70b", drafter_model=None, gpu="h100", ngram=False, calibrated=False)
    frow = flat.target.decode.step_ms[dec.batch_sizes.index(16)]
    assert frow[8] == pytest.approx(frow[0])  # the flaw the calibration fixes


def test_more_tensor_parallelism_lowers_the_batch_1_step() -> None:
    for cal in (CAL, None):
        steps = [StepModel(Deployment(MODELS["llama-70b"], GPUS["h100"], tp), cal).decode_s(1, 0, 1024)
                 for tp in (2, 4, 8)]
        assert steps[0] > steps[1] > steps[2]
    # but not in proportion: the all-reduces and per-layer overheads do not shrink
    sm = [StepModel(Deployment(MODELS["llama-70b"], GPUS["h100"], tp), CAL) for tp in (2, 8)]
    assert sm[1].decode_s(1, 0, 1024) > sm[0].decode_s(1, 0, 1024) / 4


def test_moe_step_is_cheaper_than_a_dense_model_of_its_total_size() -> None:
    moe = MODELS["mixtral-8x7b"]
    dense = ModelSpec(moe.params, moe.layers, moe.kv_heads, moe.head_dim, moe.hidden, vocab=moe.vocab)
    assert moe.active_params == pytest.approx(12.9e9, rel=0.02)
    for cal in (CAL, None):
        t_moe = StepModel(Deployment(moe, GPUS["h100"], 2), cal).decode_s(1, 0, 1024)
        t_dense = StepModel(Deployment(dense, GPUS["h100"], 2), cal).decode_s(1, 0, 1024)
        assert t_moe < 0.6 * t_dense
    # the expected-distinct-experts formula against InferenceX PR #1061: ~111 of 128 at batch 64
    assert 128 * MODELS["gpt-oss-120b"].expert_coverage(64) == pytest.approx(111, abs=1)
    assert MODELS["mixtral-8x7b"].expert_coverage(1) == pytest.approx(2 / 8)


def test_gpus_cite_their_datasheets_and_are_ordered_by_bandwidth() -> None:
    for g in GPUS.values():
        assert g.source.startswith("https://") and g.bandwidth > 0 and g.peak_flops > 0 and g.link > 0
    bw = {k: g.bandwidth for k, g in GPUS.items()}
    assert bw["l4"] < bw["a100"] < bw["h100"] < bw["h200"] < bw["mi300x"] < bw["b200"]
    assert lookup_model("llama-3.1-70b") is MODELS["llama-70b"]


def test_draft_model_costs_a_fixed_forward_per_token_and_eagle_less() -> None:
    prof = analytic_profile(eagle=True, ngram=False)
    draft = prof.drafters["draft_model"].cost.step_ms[0]
    eagle = prof.drafters["eagle"].cost.step_ms[0]
    assert draft[0] == 0 and draft[4] == pytest.approx(4 * draft[1])
    assert 0 < eagle[1] < draft[1]
    # one 1B draft forward is ~12.5% of a 70B TP4 verification step (SpecDecode-Bench)
    assert 0.08 < draft[1] / prof.target.decode.step_ms[0][3] < 0.2


# ---- honesty notice ---------------------------------------------------------------------------------
def test_notice_names_the_held_out_error_for_analytic_profiles_only(measured: Path) -> None:
    assert estimated_costs_notice(load_profile(measured)) is None
    hold = json.loads(FIT_PATH.read_text())["holdout"]
    note = estimated_costs_notice(analytic_profile(drafter_model=None, ngram=False))
    assert note == ("costs are estimated (analytic profile, calibrated; held-out error "
                    f"{hold['calibrated_mean']:.0%} mean, {hold['calibrated_max']:.0%} max: "
                    "docs/analytic-calibration.md)")
    unc = estimated_costs_notice(analytic_profile(drafter_model=None, ngram=False, calibrated=False))
    assert "uncalibrated roofline" in unc and f"{hold['uncalibrated_mean']:.0%} mean" in unc
    assert "no validation error recorded" in estimated_costs_notice(constant_profile(10.0, 0.1, 0.6))



def test_simulate_prints_the_notice_once(tmp_path: Path, capsys) -> None:
    save_profile(analytic_profile(target="llama-8b", drafter_model=None, k_max=2), tmp_path / "p.json")
    save_traffic(poisson_traffic(20, rate=5.0, inp=50, out=(5, 20)), tmp_path / "t.jsonl")
    rc = main(["simulate", "--profile", str(tmp_path / "p.json"), "--traffic", str(tmp_path / "t.jsonl"),
               "--no-plot", "--out", str(tmp_path / "o")])
    assert rc == 0
    assert capsys.readouterr().out.count("costs are estimated (analytic profile, calibrated;") == 1


# ---- profile-analytic CLI -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small measured profile: the contract tests' sample (an n-gram and a draft-model drafter), marked measured."""
    doc = copy.deepcopy(VALID_PROFILE)
    doc["metadata"]["source"] = "measured"
    return write_json(tmp_path_factory.mktemp("measured") / "measured.json", doc)


def test_acceptance_from_copies_measured_traces_under_the_analytic_drafters(tmp_path: Path, capsys,
                                                                          measured: Path) -> None:
    out = tmp_path / "a.json"
    rc = main(["profile-analytic", "--target", "llama-8b", "--gpu", "h200", "--acceptance-from", str(measured),
               "--out", str(out)])
    assert rc == 0
    shown = capsys.readouterr().out
    assert "acceptance of 'ngram': 1 measured traces" in shown and "costs are estimated" in shown
    prof = load_profile(out)
    assert [t.prompt_id for t in prof.traces_for("ngram")] == ["p0"]
    assert [t.prompt_id for t in prof.traces_for("draft_model")] == ["p1"]
    assert prof.drafters["ngram"].k_max == 2 and prof.drafters["draft_model"].k_max == 2
    assert prof.metadata.analytic["acceptance_from"]["ngram"]["measured_drafter"] == "ngram"
    assert "acceptance measured" in prof.metadata.notes

    # one drafter only: the other keeps its synthetic traces
    rc = main(["profile-analytic", "--target", "llama-8b", "--acceptance-from", str(measured),
               "--acceptance-drafter", "ngram", "--out", str(out)])
    prof = load_profile(out)
    assert rc == 0 and len(prof.traces_for("draft_model")) > 1 and prof.drafters["draft_model"].k_max == 8

    # and the measured acceptance simulates on the hypothetical GPU
    save_traffic(poisson_traffic(10, rate=5.0, inp=20, out=(3, 6)), tmp_path / "t.jsonl")
    save_policy(Policy.static(DrafterRef(name="ngram", method="ngram"), 2), tmp_path / "pol.json")
    assert main(["simulate", "--profile", str(out), "--traffic", str(tmp_path / "t.jsonl"), "--policy",
                 str(tmp_path / "pol.json"), "--no-plot", "--out", str(tmp_path / "o")]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--acceptance-from", "/no/such/profile.json"], "profile file not found"),
    (["--acceptance-from", "MEASURED", "--acceptance-drafter", "eagle"], "has no drafter 'eagle'"),
    (["--acceptance-from", "MEASURED", "--no-ngram"], "needs an analytic ngram drafter"),
    (["--acceptance-from", "ANALYTIC"], "is an analytic profile"),
    (["--acceptance-drafter", "ngram"], "needs --acceptance-from"),
    (["--gpu", "tpu-v5"], "unknown GPU 'tpu-v5'"),
    (["--target", "gpt-5"], "unknown model 'gpt-5'"),
    (["--dtype", "int3"], "unknown dtype 'int3'"),
    (["--tp", "0"], "--tp must be >= 1"),
    (["--target", "llama-70b", "--tp", "1"], "does not fit on 1 x h100"),
])
def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys, measured: Path, extra: list[str], message: str) -> None:
    analytic = tmp_path / "an.json"
    save_profile(analytic_profile(target="llama-8b", drafter_model=None, k_max=2), analytic)
    extra = [str(measured) if a == "MEASURED" else str(analytic) if a == "ANALYTIC" else a for a in extra]
    target = [] if "--target" in extra else ["--target", "llama-8b"]
    rc = main(["profile-analytic", *target, *extra, "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.json").exists()


def test_new_hardware_and_models_build(tmp_path: Path) -> None:
    for gpu, target, dtype in (("b200", "llama-3.3-70b", "fp4"), ("mi300x", "gpt-oss-120b", "mxfp4"),
                               ("l4", "llama-3.1-8b", "fp8"), ("a100", "mixtral-8x7b", "bf16"),
                               ("h200", "qwen3-30b-a3b", "bf16")):
        prof = analytic_profile(target=target, drafter_model=None, gpu=gpu, dtype=dtype, eagle=True, k_max=4)
        dec = prof.target.decode
        assert dec.step_ms[0][0] > 0 and prof.drafters["eagle"].cost.step_ms[0][1] > 0
        assert prof.metadata.analytic["dtype"] == dtype and prof.metadata.fit["cost_model"] == "calibrated"
    # B200 (8 TB/s) decodes a 70B faster than H200 (4.8 TB/s) at the same TP and dtype
    b = analytic_profile(target="llama-70b", drafter_model=None, gpu="b200", tp=2, ngram=False)
    h = analytic_profile(target="llama-70b", drafter_model=None, gpu="h200", tp=2, ngram=False)
    assert b.target.decode.step_ms[0][0] < h.target.decode.step_ms[0][0]
