"""assemble() on a small committed checkpoint of a real profiling run: no vLLM, milliseconds.

`data/small-checkpoint.jsonl` is the checkpoint of a tiny real run on this machine's CPU (plain
engine, K-probe engine, and vLLM's own n-gram engine for each of two lookup settings; regenerate it
with `python tests/profiler/data/make_small_checkpoint.py`). These tests pin what assemble() makes of
real records: every checkpoint key is one keys.py names, each n-gram setting is costed by its own
engine's steps, the fit reports every kind of workload, and the acceptance traces reproduce
vLLM's own counters.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from specsim.formats.profile import load_profile, save_profile
from specsim.profiler import keys, stepfit
from specsim.profiler.assemble import assemble_checkpoint, cost_model, samples
from specsim.profiler.checkpoint import read_records

SMALL = Path(__file__).resolve().parent / "data" / "small-checkpoint.jsonl"

pytestmark = pytest.mark.skipif(not SMALL.is_file(), reason="the small checkpoint is not committed")

PREFIXES = (keys.ENGINE, keys.WORKLOAD, keys.REFERENCE, keys.CROSSCHECK, keys.DRAFTER, keys.LOAD)


def test_every_record_key_is_named_in_keys_py() -> None:
    _, records = read_records(SMALL)
    for key in records:
        assert key == keys.CONTEXT or key.startswith(PREFIXES), key
    engines = {k.split("/", 1)[1][3:] for k in records if k.startswith(keys.ENGINE)}
    assert {"plain", "kprobe", "drafter-ngram", "drafter-ngram-3-6"} <= engines


def test_assembles_in_milliseconds_and_round_trips(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    profile = assemble_checkpoint(str(SMALL))
    elapsed = time.perf_counter() - t0
    assert elapsed < 5.0  # typically ~0.1 s; generous for a loaded CI machine
    save_profile(profile, tmp_path / "p.json")
    back = load_profile(tmp_path / "p.json")
    assert back.target.composition == profile.target.composition
    assert set(back.drafters) == {"ngram", "ngram-3-6"}
    again = assemble_checkpoint(str(SMALL))  # deterministic: the same records give the same profile
    assert again.target.composition == profile.target.composition
    assert again.acceptance == profile.acceptance


def test_each_ngram_setting_is_costed_by_its_own_engine() -> None:
    _, records = read_records(SMALL)
    ss = samples(records)
    labels = {s.drafter for s in ss}
    assert {"ngram", "ngram-3-6", keys.KPROBE_DRAFTER} <= labels
    by_drafter = {d: [s for s in ss if s.drafter == d] for d in ("ngram", "ngram-3-6")}
    for d, steps in by_drafter.items():
        assert steps and all("/drafter-" + d + "/served/" in s.label for s in steps), d
    _, _, model = cost_model(records, 2)
    assert {"ngram", "ngram-3-6", keys.KPROBE_DRAFTER} <= set(model.drafters)
    # the exported terms are the engine's own, not the probe's
    profile = assemble_checkpoint(str(SMALL))
    for d in ("ngram", "ngram-3-6"):
        comp = profile.drafters[d].composition
        assert comp is not None
        assert comp.model_dump() == pytest.approx({t: round(v, 5) for t, v in model.drafters[d].items()})


def test_fit_reports_every_kind_and_predicts_its_own_steps() -> None:
    profile = assemble_checkpoint(str(SMALL))
    errs = profile.metadata.fit["errors"]
    assert {"decode/fit", "decode/heldout", "prefill/fit", "prefill/heldout", "mixed/fit", "served/fit",
            "cached_prefill/heldout"} <= set(errs)
    for e in errs.values():
        assert math.isfinite(e["step_mean_abs_rel_error"]) and 0 <= e["step_mean_abs_rel_error"] < 1.0
    _, records = read_records(SMALL)
    comp = profile.target.composition
    assert comp is not None
    model = stepfit.FittedModel.from_composition(comp, profile.drafters)
    served = [s for s in samples(records) if s.drafter == "ngram"]
    ratio = sum(model.predict(s.feats, s.drafter) for s in served) / sum(s.period_ms for s in served)
    assert 0.8 < ratio < 1.25  # the served total within 25% (the model is fitted on these steps)


def test_acceptance_traces_reproduce_vllms_counters() -> None:
    profile = assemble_checkpoint(str(SMALL))
    check = profile.metadata.acceptance_check["ngram"]
    assert check["identical_outputs"] == check["prompts"] == 4
    assert check["max_relative_gap"] <= 0.02
    traces = profile.traces_for("ngram")
    assert len(traces) == 4 and all(t.r is not None and len(t.r) > 0 for t in traces)
    # both settings are replayed over the same reference outputs: one trace per prompt each
    assert [t.prompt_id for t in profile.traces_for("ngram-3-6")] == [t.prompt_id for t in traces]
    assert all(np.all(np.asarray(t.r) >= 0) for t in profile.traces_for("ngram-3-6"))
