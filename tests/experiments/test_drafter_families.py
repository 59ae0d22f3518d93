"""The batch-1 drafter-family comparison: its committed report is what the step model computes today."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "drafter_families" / "batch1.py"


def _module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("batch1", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["batch1"] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def test_batch1_report_is_current_and_every_family_is_costed() -> None:
    mod = _module()
    from specsim.profiler.hardware import MODELS, lookup_gpu
    from specsim.profiler.stepmodel import Deployment, StepModel, committed_calibration

    sm = StepModel(Deployment(MODELS["llama-2-7b"], lookup_gpu("a100"), 1, "fp16", "fp16"), committed_calibration())
    rows = {r["method"]: r for r in mod.predict(sm)}
    assert set(rows) == {m.name for m in mod.METHODS}
    # the families cost differently: a tree verifies far more tokens than PLD's chain, heads draft in one pass
    assert rows["EAGLE-2"]["verify_ms"] > rows["PLD"]["verify_ms"]
    assert rows["Medusa"]["draft_ms"] < rows["EAGLE-2"]["draft_ms"]
    assert rows["PLD"]["draft_ms"] == 0.0 and rows["SpS"]["draft_ms"] > 0.0
    report = (SCRIPT.parent / "batch1.md").read_text()
    for r in rows.values():  # the committed report holds today's predictions (rerun batch1.py after a model change)
        assert f"| {r['method']} | {r['family']} | {r['verify']} | {r['tau']:.2f} | {r['published']:.2f}x | " \
               f"{r['predicted']:.2f}x |" in report, r["method"]
