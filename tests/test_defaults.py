"""One source for defaults: every CLI option that names a config field defaults to that field's value
(the config classes hold the defaults; the CLI reads them)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from specsim.cli import build_parser


def _sub(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _defaults(cfg: object, sub: str, skip: set[str] = frozenset()) -> list[str]:
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    checked = []
    for a in _sub(sub)._actions:
        if a.dest in fields and a.dest not in skip and a.default is not None:
            assert a.default == fields[a.dest], f"{sub} --{a.dest.replace('_', '-')}: CLI {a.default!r}, config " \
                                                 f"{fields[a.dest]!r}"
            checked.append(a.dest)
    return checked


@pytest.mark.parametrize("sub", ["simulate", "tune", "sweep"])
def test_engine_options_default_to_simconfig(sub: str) -> None:
    from specsim.simulator.config import SimConfig

    assert len(_defaults(SimConfig(), sub)) >= 5


def test_profile_options_default_to_profileconfig() -> None:
    from specsim.profiler.run import ProfileConfig

    checked = _defaults(ProfileConfig(), "profile", skip={"drafters", "plan"})
    assert {"model", "num_prompts", "crosscheck_prompts", "max_tokens", "k_max", "seed"} <= set(checked)


def test_verify_options_default_to_verifyconfig() -> None:
    from specsim.verify.config import VerifyConfig

    # --eager is a flag: absent (False) means VerifyConfig.eager None, "as the profile was measured"
    assert {"repeats", "max_requests", "runners_up", "seed"} <= set(_defaults(VerifyConfig(), "verify", {"eager"}))
