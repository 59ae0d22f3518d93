"""Acceptance matched to traffic: prompt ids, then categories the profile has, then `--category-map`, then a
draw from every trace, counted in the summary and warned about on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.profile import Profile, save_profile
from specsim.formats.traffic import Traffic, save_traffic
from specsim.profiler.analytic import constant_profile
from specsim.simulator.acceptance import AcceptanceReplay, check_category_map, unmatched_categories
from specsim.simulator.config import SimConfig
from specsim.simulator.options import parse_category_map
from specsim.simulator.run import simulate
from tests.simulator.helpers import DRAFT, static

CATS = ("writing", "roleplay", "coding")


def _profile() -> Profile:
    """Six traces: two each of writing, roleplay and coding (prompt ids p0..p5)."""
    p = constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.6, k_max=2, traces=6, trace_length=32)
    p.acceptance = [t.model_copy(update={"category": CATS[i // 2], "prompt_id": f"p{i}"})
                    for i, t in enumerate(p.acceptance)]
    return p


def _traffic(cats: list[str | None], pids: list[str | None] | None = None) -> Traffic:
    n = len(cats)
    return Traffic.from_arrays(np.arange(n) * 0.5, [16] * n, [8] * n, cats, prompt_ids=pids)


def test_parse_category_map() -> None:
    assert parse_category_map("conv=writing+roleplay, code=coding") == {"conv": ("writing", "roleplay"),
                                                                        "code": ("coding",)}
    assert parse_category_map(None) is None
    for bad in ("conv", "conv=", "=coding", "conv=writing+", ""):
        with pytest.raises(SpecsimError, match="cannot read category map entry"):
            parse_category_map(bad)
    with pytest.raises(SpecsimError, match="mapped twice"):
        parse_category_map("conv=writing,conv=coding")
    with pytest.raises(SpecsimError, match="category_map"):
        SimConfig(category_map={"conv": ()}).validate()


def test_assign_precedence_and_counts() -> None:
    """Prompt id first, then own category, then the map; the rest drawn from all, counted per category."""
    prof = _profile()
    replay = AcceptanceReplay(prof.traces_for("draft"), seed=0)
    cats = ["conv"] * 40 + ["code"] * 20 + ["writing"] * 10 + ["other"] * 5 + [None] * 3 + ["conv"]
    pids = [None] * (len(cats) - 1) + ["p5"]
    start, _ = replay.assign(tuple(cats), tuple(pids), {"conv": ("writing", "roleplay"), "code": ("coding",),
                                                         "writing": ("coding",)})
    trace_of = {int(o): i for i, o in enumerate(replay.offsets)}
    picked = [trace_of[int(s)] for s in start]
    assert all(picked[i] in (0, 1, 2, 3) for i in range(40))  # conv -> writing + roleplay
    assert {picked[i] for i in range(40)} == {0, 1, 2, 3}
    assert all(picked[i] in (4, 5) for i in range(40, 60))  # code -> coding
    assert all(picked[i] in (0, 1) for i in range(60, 70))  # writing is the profile's own: the map entry is unused
    assert picked[-1] == 5  # the prompt id wins over the category
    assert (replay.prompt_matches, replay.category_matches, replay.map_matches) == (1, 10, 60)
    assert replay.drawn == {"other": 5, None: 3}


def test_unknown_target_category_is_refused() -> None:
    prof = _profile()
    with pytest.raises(SpecsimError) as exc:
        check_category_map(prof, {"conv": ("writing", "chat")})
    assert str(exc.value) == ("--category-map names categories the profile has no acceptance traces for: chat "
                              "(the profile's categories: coding, roleplay, writing)")
    with pytest.raises(SpecsimError, match="chat"):
        simulate(prof, _traffic(["conv"] * 3), static(2), SimConfig(category_map={"conv": ("chat",)}))


def test_summary_counts_matching() -> None:
    prof = _profile()
    tr = _traffic(["conv"] * 6 + ["code"] * 3 + ["coding"] * 2 + [None], [None] * 11 + ["p1"])
    s = simulate(prof, tr, static(2), SimConfig()).summary["acceptance_matching"]
    assert s == {"by_prompt": 1, "by_category": 2, "by_category_map": 0, "drawn": 9,
                 "drawn_categories": {"code": 3, "conv": 6}, "profile_categories": ["coding", "roleplay", "writing"]}
    cfg = SimConfig(category_map={"conv": ("writing",), "code": ("coding",)})
    s = simulate(prof, tr, static(2), cfg).summary["acceptance_matching"]
    assert (s["by_category_map"], s["drawn"], s["drawn_categories"]) == (9, 0, {})
    assert unmatched_categories(prof, tr.categories, tr.prompt_ids) == {"conv": 6, "code": 3}
    assert unmatched_categories(prof, tr.categories, tr.prompt_ids, cfg.category_map) == {}


def test_cli_warns_and_maps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """simulate warns in one line naming the unmatched categories; with the map it does not; a map naming an
    unknown profile category is one error line listing the profile's."""
    from specsim.formats.policy import save_policy

    prof, traf, pol = tmp_path / "p.json", tmp_path / "t.jsonl", tmp_path / "pol.json"
    save_profile(_profile(), prof)
    save_traffic(_traffic(["conv"] * 8 + ["code"] * 4), traf)
    save_policy(static(2, DRAFT), pol)
    base = ["simulate", "--profile", str(prof), "--traffic", str(traf), "--policy", str(pol), "--no-plot",
            "--out", str(tmp_path / "sim")]
    assert main(base) == 0
    out = capsys.readouterr().out
    warn = [ln for ln in out.splitlines() if ln.startswith("warning: ")]
    assert warn == ["warning: 12 requests drew acceptance traces from every category because their category "
                    "matched none of the profile's: conv (8), code (4); map them with --category-map "
                    "conv=CATEGORY[+...] (profile categories: coding, roleplay, writing)"]
    assert main([*base, "--category-map", "conv=writing+roleplay,code=coding"]) == 0
    out = capsys.readouterr().out
    assert "warning: " not in out
    m = json.loads((tmp_path / "sim" / "summary.json").read_text())["acceptance_matching"]
    assert m["by_category_map"] == 12 and m["drawn"] == 0
    assert main([*base, "--category-map", "conv=chat"]) == 2
    err = capsys.readouterr().err
    assert err == ("specsim: error: --category-map names categories the profile has no acceptance traces for: chat "
                   "(the profile's categories: coding, roleplay, writing)\n")
    assert main([*base, "--category-map", "conv"]) == 2
    assert "cannot read category map entry 'conv'" in capsys.readouterr().err
