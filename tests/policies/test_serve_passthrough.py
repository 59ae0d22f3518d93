"""Security of `specsim serve ... -- ARGS` and of the policy's drafter (issue 27, item 2).

The pass-through fuzz parses every argument `check_extra_args` lets through with vLLM's own serve
parser (the one `vllm serve` runs) and checks that the bind address, the port, the socket, the
speculative config, the scheduler class and the model are still the ones specsim set.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import pytest

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.policies.export import to_vllm
from specsim.policies.serve import check_extra_args, plan_server
from tests.policies.conftest import policy, write_json

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")

REFUSED = [
    ["--host", "0.0.0.0"], ["--host=0.0.0.0"], ["--hos", "0.0.0.0"], ["--ho=0.0.0.0"], ["--port", "1"],
    ["--port=1"], ["--uds", "/tmp/s"], ["--speculative-config.num_speculative_tokens", "16"],
    ["--speculative_config.num_speculative_tokens=16"], ["--speculative-config", "{}"], ["-sc", "{}"],
    ["-sc.method", "ngram"], ["--speculative-config.method+", "x"], ["--speculative-conf", "{}"],
    ["--scheduler-cls", "x.Y"], ["--scheduler_cls=x.Y"], ["--model", "x"], ["--config", "c.yaml"],
    ["--no-enforce-eager"], ["--headless"], ["--max-num-seqs", "16", "--host", "::"],
]


@pytest.mark.parametrize("extra", REFUSED, ids=lambda a: " ".join(a))
def test_owned_options_are_refused_in_every_spelling(extra: list[str]) -> None:
    with pytest.raises(SpecsimError, match="after -- is refused"):
        check_extra_args(policy(k_schedule=[[1, 4, 2]]), extra)


def test_serve_refuses_them_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from specsim.cli import main

    pol = write_json(tmp_path / "p.json", {"version": 1, "drafter": {"name": "ngram", "method": "ngram"},
                                           "k_schedule": [[1, 4, 2]]})
    for extra in (["--host", "0.0.0.0"], ["--host=0.0.0.0"], ["--speculative-config.num_speculative_tokens", "16"]):
        rc = main(["serve", str(pol), "--dry-run", "--", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("specsim: error:") and err.count("\n") == 1, err


# ---- the policy names no code ------------------------------------------------------------------------
HOSTILE_DRAFTERS: list[dict[str, Any]] = [
    {"name": "ngram", "method": "ngram",
     "params": {"method": "custom_class", "model": "somepkg.Anything", "num_speculative_tokens": 64}},
    {"name": "x", "method": "custom_class", "model": "somepkg.Anything"},
    {"name": "ngram", "method": "ngram", "model": "somepkg.Anything"},
    {"name": "ngram", "method": "ngram", "params": {"prompt_lookup_max": "4"}},
    {"name": "e", "method": "eagle3", "model": "/m", "params": {"code_revision": "main"}},
    {"name": "e", "method": "eagle3", "model": "/m", "params": {"revision": "x", "quantization": "y"}},
    {"name": "e", "method": "eagle3", "model": "/m", "params": {"draft_tensor_parallel_size": 1e300}},
    {"name": "e", "method": "draft_model", "model": "/m\n--host 0.0.0.0"},
    {"name": "s", "method": "suffix", "params": {"suffix_decoding_min_token_prob": float("nan")}},
]


@pytest.mark.parametrize("drafter", HOSTILE_DRAFTERS, ids=lambda d: f"{d['method']}:{sorted(d.get('params', {}))}")
def test_a_policy_drafter_never_names_code(drafter: dict[str, Any], tmp_path: Path) -> None:
    from specsim.formats.policy import load_policy

    doc = {"version": 2, "drafter": drafter, "k_schedule": [[1, 4, 2]]}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    with pytest.raises(SpecsimError, match="invalid policy"):
        load_policy(path)


def test_the_export_sets_method_model_and_k_after_the_parameters() -> None:
    pol = Policy.model_validate({"version": 2, "drafter": {"name": "e", "method": "eagle3", "model": "/heads",
                                                           "params": {"parallel_drafting": True}},
                                 "k_schedule": [[1, 65536, 3]]})
    cfg = to_vllm(pol).config
    assert cfg == {"parallel_drafting": True, "method": "eagle3", "model": "/heads", "num_speculative_tokens": 3}


# ---- fuzz over every option of vLLM's own serve parser ---------------------------------------------------
OWNED = ("host", "port", "uds", "speculative_config", "scheduler_cls", "model_tag", "model", "headless")


def _vllm_serve_parser() -> Any:
    from specsim.policies.vllm_launch import patch_version_lookup

    patch_version_lookup()
    import vllm.entrypoints.cli.serve as serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    sub = parser.add_subparsers(dest="subparser")
    return parser, serve.ServeSubcommand().subparser_init(sub)


def _forms(opt: str) -> list[list[str]]:
    values = ["0.0.0.0", '{"method":"ngram","num_speculative_tokens":16}', "9"]
    out: list[list[str]] = [[opt]]
    for v in values:
        out += [[opt, v], [f"{opt}={v}"], [f"{opt}.method", v], [f"{opt}.num_speculative_tokens={v}"]]
        if opt.startswith("--"):
            out.append([opt.replace("-", "_").replace("__", "--", 1), v])
            for cut in range(4, len(opt)):
                out.append([opt[:cut], v])
    return out


@needs_vllm
@pytest.mark.slow
def test_no_pass_through_argument_changes_what_specsim_sets(tmp_path: Path) -> None:
    parser, serve_parser = _vllm_serve_parser()
    pol = policy(k_schedule=[[1, 2, 4], [3, 16, 0]], queue={"max_waiting": 4, "k": 1}, family="specsim")
    model = tmp_path / "model"

    def parsed(extra: list[str]) -> dict[str, Any] | None:
        plan = plan_server(pol, model, "127.0.0.1", 8123, extra, record_steps=tmp_path / "steps.jsonl")
        argv = plan.argv[plan.argv.index("serve"):]
        try:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                ns = parser.parse_args(argv)
        except (SystemExit, ValueError, TypeError, json.JSONDecodeError):
            return None  # vLLM refuses the command line: no server starts
        return {k: getattr(ns, k, None) for k in OWNED}

    base = parsed([])
    assert base is not None and base["host"] == "127.0.0.1" and base["port"] == 8123
    options = sorted({s for a in serve_parser._actions for s in a.option_strings if s not in ("-h", "--help")})
    assert len(options) > 200
    tried = accepted = refused = 0
    for opt in options:
        for extra in _forms(opt):
            tried += 1
            try:
                check_extra_args(pol, extra)
            except SpecsimError:
                refused += 1
                continue
            got = parsed(extra)
            if got is None:
                continue
            accepted += 1
            assert got == base, (extra, {k: (base[k], got[k]) for k in OWNED if got[k] != base[k]})
    print(f"{tried} pass-through forms of {len(options)} vLLM options: {refused} refused by specsim, "
          f"{accepted} parsed by vLLM without changing what specsim sets")
    assert refused > 50 and accepted > 500
