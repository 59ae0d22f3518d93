"""`specsim tune-worker` searches as `specsim tune` was asked: the study's prune percentile and startup trials.

Before issue 15 the worker hard-coded a 50th-percentile pruner and dropped `--startup-trials`, because
the stored task did not hold them; extra workers then pruned and sampled differently from the main one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from specsim.cli import main
from specsim.tuner import study as study_mod
from specsim.tuner.storage import open_storage
from tests.tuner.helpers import write_inputs

TUNE = ("--no-progress", "--no-baselines", "--max-num-seqs", "64", "--slo", "ttft=2s,tpot=50ms")


def _stored(url: str, name: str) -> study_mod.TaskSpec:
    return study_mod.stored_task(optuna.load_study(study_name=name, storage=open_storage(url)))


def test_worker_uses_the_studys_prune_percentile_and_startup_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prof, traf = write_inputs(tmp_path, n=40)
    url = f"journal:{tmp_path / 'study.log'}"
    base = ("tune", "--profile", str(prof), "--traffic", str(traf), "--storage", url, "--study", "s",
            "--out", str(tmp_path / "policy.json"), *TUNE)
    assert main([*base, "--trials", "3", "--prune-percentile", "80", "--startup-trials", "7"]) == 0
    task = _stored(url, "s")
    assert (task.prune_percentile, task.startup_trials) == (80.0, 7)

    seen: list[tuple[Any, Any]] = []
    real = study_mod.search_for

    def spy(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        out = real(*args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(study_mod, "search_for", spy)
    # the budget is used up, so the worker builds its sampler and pruner, finds nothing to run, and stops
    assert main(["tune-worker", "--storage", url, "--study", "s", "--no-progress", "--wait", "5"]) == 0
    assert len(seen) == 1
    sampler, pruner = seen[0]
    assert isinstance(pruner, optuna.pruners.PercentilePruner)
    assert pruner._percentile == 80.0  # Optuna keeps them private; no public getter exists
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == 7

    # a resume that changes how the search runs updates what workers read
    monkeypatch.undo()
    assert main([*base, "--trials", "4", "--resume", "--prune-percentile", "60"]) == 0
    task = _stored(url, "s")
    assert (task.n_trials, task.prune_percentile, task.startup_trials) == (4, 60.0, None)


def test_a_study_stored_before_the_fields_existed_still_loads(tmp_path: Path) -> None:
    """Older studies' tasks lack the two fields: a worker falls back to the old defaults."""
    storage = open_storage(f"journal:{tmp_path / 'old.log'}")
    study = optuna.create_study(study_name="old", storage=storage)
    study.set_user_attr(study_mod.TASK_ATTR, {"objective": {}, "space": {}, "sim": {}, "n_trials": 5,
                                              "identity": "x"})
    task = study_mod.stored_task(study)
    assert (task.prune_percentile, task.startup_trials) == (50.0, None)
