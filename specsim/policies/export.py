"""Translate a policy into serving-engine settings: vLLM, SGLang and TensorRT-LLM.

vLLM 0.32 semantics (read from vllm/v1/spec_decode/dynamic/utils.py and v1/core/sched/scheduler.py):
`num_speculative_tokens_per_batch_size` ranges are inclusive, must start at 1, and batch sizes
between or after ranges *carry the previous range's K forward* (specsim's contract says uncovered
batch sizes get K = 0), so the export fills every gap and the tail with explicit K = 0 ranges.
The batch size looked up is the number of requests scheduled in the step (prefills included),
the K chosen applies to the drafts proposed at the end of that step, and each K is capped at
`num_speculative_tokens`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from specsim.errors import SpecsimError
from specsim.formats.policy import SCHEDULE_TOP, Policy

# Largest batch size an exported schedule spells out; vLLM clamps ranges to max_num_seqs.
SCHEDULE_CAP = SCHEDULE_TOP
# The proposer class vLLM loads for policies its own schedule cannot express.
PROPOSER_CLASS = "specsim.policies.proposer.PolicyProposer"
# Environment variable carrying the policy to that proposer inside vLLM's engine process.
POLICY_ENV = "SPECSIM_POLICY_JSON"
# Methods whose parameters vLLM takes directly in the speculative config.
DIRECT_METHODS = ("ngram", "suffix", "draft_model", "eagle", "eagle3", "mtp")
TARGETS = ("vllm", "sglang", "trtllm")
# Methods whose drafts come from a separate model the engine must be told about. (MTP is not here:
# vLLM and SGLang take its layers from the target's own checkpoint when no model is given.)
MODEL_METHODS = ("draft_model", "eagle", "eagle3")


@dataclass
class Export:
    """One engine's settings for a policy, plus what could not be expressed."""

    target: str
    config: dict[str, Any] | None
    """The engine's speculative configuration (None: speculation off)."""
    args: list[str] = field(default_factory=list)
    """Command-line arguments after the model (for vLLM: `vllm serve MODEL ARGS`)."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment the server process needs."""
    unsupported: list[str] = field(default_factory=list)
    """Policy features this engine cannot enforce, one sentence each."""
    notes: list[str] = field(default_factory=list)

    def command(self, model: str) -> str:
        """A shell command line that starts the server with these settings."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        prog = {"vllm": "vllm serve", "sglang": "python -m sglang.launch_server --model-path",
                "trtllm": "trtllm-serve"}[self.target]
        line = f"{prog} {shlex.quote(model)} {' '.join(shlex.quote(a) for a in self.args)}".strip()
        return f"{env} {line}".strip()

    def to_json(self) -> dict[str, Any]:
        """Everything as a JSON-able dict (what `specsim export --out` writes)."""
        return {"target": self.target, "config": self.config, "args": self.args, "env": self.env,
                "unsupported": self.unsupported, "notes": self.notes}


def needs_custom_proposer(policy: Policy) -> bool:
    """True when vLLM's batch-size schedule alone cannot express the policy."""
    return policy.needs_proposer


def vllm_schedule(policy: Policy) -> list[list[int]]:
    """The schedule in vLLM's form (see `Policy.vllm_schedule`)."""
    return policy.vllm_schedule()


def expand_schedule(schedule: list[list[int]], max_batch: int, k_max: int) -> list[int]:
    """vLLM's dense lookup (index = batch size), reimplemented to test the export against it."""
    dense = [0] * (max_batch + 1)
    nxt, last = 1, None
    for lo, hi, k in sorted(schedule):
        if lo > nxt and last is not None:
            for b in range(nxt, min(lo, max_batch + 1)):
                dense[b] = min(k_max, last)
        for b in range(max(lo, nxt), min(hi, max_batch) + 1):
            dense[b] = min(k_max, k)
        nxt, last = max(nxt, hi + 1), k
        if nxt > max_batch:
            break
    for b in range(nxt, max_batch + 1):
        dense[b] = min(k_max, last or 0)
    return dense


def drafter_params(policy: Policy) -> dict[str, Any]:
    """The drafter's vLLM parameters; ngram lookup sizes default to the profiler's 2..4."""
    assert policy.drafter is not None
    params = dict(policy.drafter.params)
    if policy.drafter.method == "ngram":
        hi = int(params.get("prompt_lookup_max", 4))
        lo = int(params.get("prompt_lookup_min", min(2, hi)))
        params["prompt_lookup_min"], params["prompt_lookup_max"] = lo, max(lo, hi)
    return params


def policy_env_value(policy: Policy) -> str:
    """The compact JSON the custom proposer reads from SPECSIM_POLICY_JSON."""
    return policy.model_dump_json(by_alias=True, exclude={"provenance"})


def to_vllm(policy: Policy, max_num_seqs: int | None = None) -> Export:
    """vLLM `--speculative-config` (+ engine arguments) for a policy."""
    exp = Export("vllm", None)
    seqs = max_num_seqs or policy.engine.max_num_seqs
    if seqs is not None:
        exp.args += ["--max-num-seqs", str(seqs)]
    if policy.engine.max_num_batched_tokens is not None:
        exp.args += ["--max-num-batched-tokens", str(policy.engine.max_num_batched_tokens)]
    if policy.drafter is None or policy.max_k == 0:
        exp.notes.append("speculation is off at every batch size: no --speculative-config")
        return exp
    d = policy.drafter
    if d.method not in DIRECT_METHODS:
        raise SpecsimError(f"drafter method {d.method!r} has no vLLM mapping (known: {', '.join(DIRECT_METHODS)})")
    params = drafter_params(policy)
    if needs_custom_proposer(policy):
        if d.method != "ngram":
            raise SpecsimError(
                f"hysteresis / acceptance_floor need specsim's custom proposer, which wraps only the ngram "
                f"drafter; vLLM cannot enforce them for {d.method!r}"
            )
        cfg: dict[str, Any] = {"method": "custom_class", "model": PROPOSER_CLASS,
                               "num_speculative_tokens": policy.max_k}
        exp.env[POLICY_ENV] = policy_env_value(policy)
        exp.notes.append(
            "hysteresis/acceptance floor: vLLM's batch-size schedule cannot express them, so the K "
            f"schedule is applied per step by {PROPOSER_CLASS} (method=custom_class, wrapping vLLM's "
            f"ngram proposer); the policy travels in ${POLICY_ENV}"
        )
    else:
        cfg = {"method": d.method}
        if d.model is not None:
            cfg["model"] = d.model
        cfg["num_speculative_tokens"] = policy.max_k
        cfg.update(params)
        sched = vllm_schedule(policy)
        if not (len(sched) == 1 and sched[0][0] == 1 and sched[0][1] >= SCHEDULE_CAP):
            cfg["num_speculative_tokens_per_batch_size"] = sched
    exp.config = cfg
    exp.args += ["--speculative-config", json.dumps(cfg, separators=(",", ":"))]
    return exp


def to_sglang(policy: Policy) -> Export:
    """SGLang server flags: one static speculative length; no batch-size schedule."""
    exp = Export("sglang", None)
    if policy.engine.max_num_seqs is not None:
        exp.args += ["--max-running-requests", str(policy.engine.max_num_seqs)]
    if policy.drafter is None or policy.max_k == 0:
        exp.notes.append("speculation is off at every batch size: no --speculative-algorithm")
        return exp
    d = policy.drafter
    algo = {"ngram": "NGRAM", "eagle": "EAGLE", "eagle3": "EAGLE3", "draft_model": "STANDALONE"}.get(d.method)
    if algo is None:
        raise SpecsimError(f"drafter method {d.method!r} has no SGLang equivalent")
    k = policy.max_k
    cfg: dict[str, Any] = {"speculative_algorithm": algo, "speculative_num_draft_tokens": k + 1}
    exp.notes.append("speculative_num_draft_tokens counts the verified root token too (K + 1)")
    if algo == "NGRAM":
        exp.notes.append("SGLang's NGRAM drafter is CUDA-only and builds a draft tree from its own n-gram cache")
        # SGLang's n-gram drafter keeps its own trie; lookup sizes do not map one to one.
        cfg["speculative_ngram_min_match_window_size"] = d.params.get("prompt_lookup_min", 2)
        cfg["speculative_ngram_max_match_window_size"] = d.params.get("prompt_lookup_max", 4)
    else:
        cfg["speculative_num_steps"] = k
        cfg["speculative_eagle_topk"] = 1
        if d.model is not None:
            cfg["speculative_draft_model_path"] = d.model
    exp.config = cfg
    for key, value in cfg.items():
        exp.args += ["--" + key.replace("_", "-"), str(value)]
    ks = sorted({k for _, _, k in policy.k_schedule})
    if len(policy.k_schedule) > 1 or any(k == 0 for k in ks) or (
        policy.k_schedule and policy.k_schedule[0][0] != 1
    ):
        exp.unsupported.append(
            f"the K schedule {policy.k_schedule}: SGLang has one speculative length for all batch sizes, "
            f"exported as the maximum K={k} everywhere"
        )
    if policy.hysteresis:
        exp.unsupported.append("hysteresis: SGLang has no batch-size schedule to apply it to")
    if policy.acceptance_floor is not None:
        exp.unsupported.append("acceptance_floor: SGLang has no per-request acceptance cut-off")
    return exp


def to_trtllm(policy: Policy) -> Export:
    """TensorRT-LLM `speculative_config` (extra LLM API options YAML as JSON)."""
    exp = Export("trtllm", None)
    if policy.engine.max_num_seqs is not None:
        exp.args += ["--max_batch_size", str(policy.engine.max_num_seqs)]
    if policy.drafter is None or policy.max_k == 0:
        exp.notes.append("speculation is off at every batch size: no speculative_config")
        return exp
    d = policy.drafter
    decoding = {"ngram": "NGram", "eagle": "Eagle", "eagle3": "Eagle3", "draft_model": "DraftTarget",
                "mtp": "MTP"}.get(d.method)
    if decoding is None:
        raise SpecsimError(f"drafter method {d.method!r} has no TensorRT-LLM equivalent")
    k = policy.max_k
    spec: dict[str, Any] = {"decoding_type": decoding, "max_draft_len": k}
    if decoding == "NGram":
        spec["max_matching_ngram_size"] = d.params.get("prompt_lookup_max", 4)
    elif d.model is not None:
        spec["speculative_model_dir"] = d.model
    # draft_len_schedule maps each range's upper batch size to its draft length; batch sizes above
    # the largest key get 0 (TensorRT-LLM PR #10860), so a trailing K = 0 range is left implicit.
    ranges = vllm_schedule(policy)
    while ranges and ranges[-1][2] == 0:
        ranges.pop()
    last_hi = ranges[-1][1] if ranges else 0
    if len(ranges) > 1 or last_hi < SCHEDULE_CAP:
        spec["draft_len_schedule"] = {str(hi): kk for _lo, hi, kk in ranges}
    if last_hi < SCHEDULE_CAP:
        spec["max_concurrency"] = last_hi
        exp.notes.append(f"max_concurrency={last_hi}: speculation stops when more requests than this run")
    if any(b[2] > a[2] for a, b in zip(ranges, ranges[1:], strict=False)):
        exp.notes.append("K rises with batch size somewhere; check that your TensorRT-LLM version accepts it")
    exp.config = {"speculative_config": spec}
    exp.args += ["--extra_llm_api_options", "specsim-trtllm.yaml"]
    exp.notes.append("write `config` as YAML to specsim-trtllm.yaml")
    if policy.hysteresis:
        exp.unsupported.append("hysteresis: TensorRT-LLM's draft_len_schedule is a plain lookup")
    if policy.acceptance_floor is not None:
        exp.unsupported.append("acceptance_floor: TensorRT-LLM has no per-request acceptance cut-off")
    return exp


def export(policy: Policy, target: str, max_num_seqs: int | None = None) -> Export:
    """Settings for one engine ('vllm', 'sglang' or 'trtllm')."""
    d = policy.drafter
    if d is not None and policy.max_k > 0 and d.method in MODEL_METHODS and not d.model:
        raise SpecsimError(
            f"policy drafter {d.name!r} uses method {d.method!r}, which needs a draft model, but names none "
            f"(set drafter.model)"
        )
    if target == "vllm":
        return to_vllm(policy, max_num_seqs)
    if target == "sglang":
        return to_sglang(policy)
    if target == "trtllm":
        return to_trtllm(policy)
    raise SpecsimError(f"unknown export target {target!r} (choose from {', '.join(TARGETS)})")
