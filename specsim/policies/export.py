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
from specsim.formats.drafters import normalized_params
from specsim.formats.policy import (
    SCHEDULE_TOP,
    Policy,
    SGLangAdaptive,
    trtllm_min_draft_len,  # noqa: F401 - re-exported: the export's rule
)

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
    """Policy features this engine cannot enforce (only with `lossy`; otherwise the export refuses)."""
    notes: list[str] = field(default_factory=list)
    engine_version: str = ""
    """The engine version (or source) the mapping follows."""
    files: dict[str, str] = field(default_factory=dict)
    """Files the arguments name (file name -> content), written beside the command."""

    def command(self, model: str) -> str:
        """A shell command line that starts the server with these settings."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        prog = {"vllm": "vllm serve", "sglang": "python -m sglang.launch_server --model-path",
                "trtllm": "trtllm-serve"}[self.target]
        line = f"{prog} {shlex.quote(model)} {' '.join(shlex.quote(a) for a in self.args)}".strip()
        return f"{env} {line}".strip()

    def to_json(self) -> dict[str, Any]:
        """Everything as a JSON-able dict (what `specsim export --out` writes)."""
        return {"target": self.target, "engine_version": self.engine_version, "config": self.config,
                "args": self.args, "env": self.env, "files": self.files, "unsupported": self.unsupported,
                "notes": self.notes}


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
    """The drafter's vLLM parameters (the allowlisted ones the policy validated); ngram lookup sizes
    default to the profiler's 2..4."""
    assert policy.drafter is not None
    return normalized_params(policy.drafter.method, policy.drafter.params)


def policy_env_value(policy: Policy) -> str:
    """The compact JSON the custom proposer reads from SPECSIM_POLICY_JSON."""
    return policy.model_dump_json(by_alias=True, exclude={"provenance"})


def to_vllm(policy: Policy, max_num_seqs: int | None = None, lossy: bool = False) -> Export:
    """vLLM `--speculative-config` (+ engine arguments) for a policy of family vllm or specsim.

    vLLM's own schedule where it suffices; hysteresis, the acceptance floor and the context-length axis
    through specsim's `custom_class` proposer (n-gram only); the queue rule through specsim's scheduler
    class, which caps the K vLLM's scheduler hands to its own drafters.
    """
    exp = Export("vllm", None, engine_version=f"vLLM {VLLM_VERSION}")
    if policy.family in ("sglang", "trtllm"):
        engine = "SGLang" if policy.family == "sglang" else "TensorRT-LLM"
        raise SpecsimError(f"a family {policy.family} policy runs {engine}'s own adaptive rule, which vLLM "
                           f"{VLLM_VERSION} does not have (export it --to {policy.family})")
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
        why = None
        if d.method != "ngram":
            why = (f"hysteresis / acceptance_floor / the context-length axis need specsim's custom proposer, which "
                   f"wraps only the ngram drafter; vLLM cannot enforce them for {d.method!r}")
        elif policy.queue is not None:
            # NOTE: vLLM hands the scheduler's num_spec_tokens_to_schedule to its own drafters only,
            # not to a custom_class proposer, so the two mechanisms cannot be combined
            why = ("the queue rule cannot be combined with hysteresis / acceptance_floor / the context-length axis "
                   "on vLLM (the custom proposer does not see the waiting queue)")
        if why is not None:
            if not lossy:
                raise SpecsimError(f"{why} (pass --lossy to export without them)")
            dropped = [n for n, on in (("hysteresis", policy.hysteresis > 0),
                                       ("acceptance_floor", policy.acceptance_floor is not None),
                                       ("context_schedule", bool(policy.context_schedule))) if on]
            exp.unsupported += [f"{n} (dropped: {why.split(' (')[0]})" for n in dropped]
            policy = policy.model_copy(update={"hysteresis": 0, "acceptance_floor": None, "context_schedule": []})
    if needs_custom_proposer(policy):
        cfg: dict[str, Any] = {"method": "custom_class", "model": PROPOSER_CLASS,
                               "num_speculative_tokens": policy.max_k}
        exp.env[POLICY_ENV] = policy_env_value(policy)
        exp.notes.append(
            "hysteresis/acceptance floor/context axis: vLLM's batch-size schedule cannot express them, so the "
            f"K schedule is applied per step by {PROPOSER_CLASS} (method=custom_class, wrapping vLLM's "
            f"ngram proposer); the policy travels in ${POLICY_ENV}"
        )
    else:
        # NOTE: parameters first, then what they must never replace (method, model, K)
        cfg = {**params, "method": d.method}
        if d.model is not None:
            cfg["model"] = d.model
        cfg["num_speculative_tokens"] = policy.max_k
        sched = vllm_schedule(policy)
        if policy.queue is not None or not (len(sched) == 1 and sched[0][0] == 1 and sched[0][1] >= SCHEDULE_CAP):
            cfg["num_speculative_tokens_per_batch_size"] = sched
        if policy.queue is not None:
            from specsim.vllmkit.policy_scheduler import ENV as QUEUE_ENV
            from specsim.vllmkit.policy_scheduler import SCHEDULER, rule_text

            exp.args += ["--scheduler-cls", SCHEDULER]
            exp.env[QUEUE_ENV] = rule_text(policy.queue.max_waiting, policy.queue.k)
            exp.notes.append(f"queue rule: {SCHEDULER} caps K at {policy.queue.k} while more than "
                             f"{policy.queue.max_waiting} requests wait (specsim must be importable by the server; "
                             "it picks vLLM's async or sync scheduler as the engine does)")
    exp.config = cfg
    exp.args += ["--speculative-config", json.dumps(cfg, separators=(",", ":"))]
    return exp


# The engine versions each mapping was written from and is tested against.
VLLM_VERSION = "0.32"  # the installed vLLM: tests build its configs and drive its scheduler
SGLANG_VERSION = "0.5.23"  # sglang/srt/arg_groups/fields/*.py and speculative/adaptive_spec_params.py
TRTLLM_SOURCE = "tensorrt_llm/llmapi/llm_args.py @0004396720054fd8e205cbf616f21f0b57c6b412 (docs 1.3.0rc27+)"
# File names the exports refer to; `specsim export --out-dir` writes them.
SGLANG_ADAPTIVE_FILE = "specsim-sglang-adaptive.json"
TRTLLM_OPTIONS_FILE = "specsim-trtllm.yaml"
EXPORT_FILES = ("command.sh", SGLANG_ADAPTIVE_FILE, TRTLLM_OPTIONS_FILE)
"""Every file `specsim export --out-dir` can write: one export's set (a file of an earlier export to another
engine is removed, a file specsim did not write is left alone)."""


def _refuse_or_note(exp: Export, problems: list[str], lossy: bool, what: str) -> None:
    """Refuse an export that would not do what was simulated, unless `lossy` asks for the closest one."""
    if not problems:
        return
    if not lossy:
        raise SpecsimError(f"{what} cannot express this policy: {'; '.join(problems)} (pass --lossy for the "
                           "closest settings, or tune within that engine's family)")
    exp.unsupported += problems


def _static_only(policy: Policy) -> list[str]:
    """What a one-K engine setting loses of a schedule-family policy."""
    out = []
    sched = policy.vllm_schedule()
    if not (len(sched) == 1 and sched[0][0] == 1 and sched[0][1] >= SCHEDULE_CAP):
        out.append(f"the K schedule {[list(r) for r in policy.k_schedule]} (one K for every batch size here; "
                   f"exported as K={policy.max_k})")
    if policy.hysteresis:
        out.append("hysteresis")
    if policy.acceptance_floor is not None:
        out.append("acceptance_floor")
    if policy.queue is not None:
        out.append("the queue rule")
    if policy.context_schedule:
        out.append("the context-length axis")
    return out


def sglang_adaptive_config(sg: SGLangAdaptive) -> dict[str, Any]:
    """The JSON SGLang reads from `--speculative-adaptive-config` (sglang/srt/speculative/
    adaptive_spec_params.py `_load_adaptive_config`, 0.5.23): one integer-string key per batch-size
    slot (its lower bound) with its candidate steps and hysteresis, and the EMA knobs at top level,
    which SGLang merges into every slot."""
    cfg: dict[str, Any] = {"ema_alpha": sg.ema_alpha, "update_interval": sg.update_interval,
                           "warmup_batches": sg.warmup_batches}
    for slot in sg.slots:
        cfg[str(slot.lo)] = {"candidate_steps": list(slot.steps), "up_hysteresis": slot.up_hysteresis,
                             "down_hysteresis": slot.down_hysteresis, "ceiling_coeff": slot.ceiling_coeff}
    return cfg


SGLANG_ALGORITHMS = {"eagle": "EAGLE", "eagle3": "EAGLE3", "draft_model": "STANDALONE", "mtp": "NEXTN"}


def to_sglang(policy: Policy, lossy: bool = False) -> Export:
    """SGLang 0.5.23 server flags (`python -m sglang.launch_server`).

    family sglang: `--speculative-adaptive` with the policy's slots in a config file; SGLang runs it for
    EAGLE / EAGLE3 with topk 1 only (`adaptive_unsupported_reason`). Other families: one static
    speculative length, so only a one-K policy is exact.
    """
    exp = Export("sglang", None, engine_version=f"SGLang {SGLANG_VERSION}")
    if policy.engine.max_num_seqs is not None:
        exp.args += ["--max-running-requests", str(policy.engine.max_num_seqs)]
    if policy.family == "trtllm":
        raise SpecsimError("a family trtllm policy runs TensorRT-LLM's rule, which SGLang does not have "
                           "(export it --to trtllm)")
    if policy.drafter is None or policy.max_k == 0:
        exp.notes.append("speculation is off at every batch size: no --speculative-algorithm")
        return exp
    d = policy.drafter
    cfg: dict[str, Any] = {}
    if policy.family == "sglang":
        assert policy.sglang is not None
        sg = policy.sglang
        if d.method not in ("eagle", "eagle3"):
            raise SpecsimError(f"SGLang {SGLANG_VERSION} runs adaptive speculation only for EAGLE / EAGLE3 drafters "
                               f"with topk 1, not {d.method!r} (adaptive_unsupported_reason)")
        cfg = {"speculative_algorithm": SGLANG_ALGORITHMS[d.method], "speculative_draft_model_path": d.model,
               "speculative_eagle_topk": 1, "speculative_num_steps": sg.start_steps,
               "speculative_adaptive": True, "speculative_adaptive_config": SGLANG_ADAPTIVE_FILE}
        exp.files[SGLANG_ADAPTIVE_FILE] = json.dumps(sglang_adaptive_config(sg), indent=2) + "\n"
        if sg.cuda_graph_batch_sizes:
            cfg["cuda_graph_bs_decode"] = list(sg.cuda_graph_batch_sizes)
        else:
            exp.notes.append("simulated without CUDA-graph padding: SGLang pads a decode batch up to a captured size "
                             "before it picks the slot, so give the policy your server's sizes "
                             "(sglang.cuda_graph_batch_sizes) or serve with --disable-cuda-graph")
        exp.notes.append("SGLang sets --speculative-num-draft-tokens to num_steps + 1 itself under "
                         "--speculative-adaptive")
    else:
        algo = SGLANG_ALGORITHMS.get(d.method)
        if algo is None:
            # NOTE: SGLang's NGRAM drafter matches against its own trie of earlier outputs and drafts trees;
            # the acceptance specsim measured for vLLM's prompt lookup does not carry over
            raise SpecsimError(f"drafter method {d.method!r} has no SGLang equivalent with the same drafts "
                               f"(SGLang {SGLANG_VERSION}: {', '.join(sorted(SGLANG_ALGORITHMS))})")
        _refuse_or_note(exp, _static_only(policy), lossy, f"SGLang {SGLANG_VERSION} (one static speculative length)")
        k = policy.max_k
        cfg = {"speculative_algorithm": algo, "speculative_num_steps": k, "speculative_eagle_topk": 1,
               "speculative_num_draft_tokens": k + 1}
        if d.model is not None:
            cfg["speculative_draft_model_path"] = d.model
        exp.notes.append("speculative_num_draft_tokens counts the verified root token too (K + 1)")
    exp.config = cfg
    for key, value in cfg.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            exp.args.append(flag)
        elif isinstance(value, list):
            exp.args += [flag, *(str(v) for v in value)]
        else:
            exp.args += [flag, str(value)]
    return exp


# TensorRT-LLM decoding_type per drafter method (DecodingBaseConfig subclasses' `decoding_type`).
TRTLLM_DECODING = {"ngram": "NGram", "draft_model": "Draft_Target", "eagle": "Eagle", "eagle3": "Eagle3",
                   "mtp": "MTP"}


def to_trtllm(policy: Policy, lossy: bool = False) -> Export:
    """TensorRT-LLM `speculative_config` (the `--extra_llm_api_options` YAML, written here as JSON,
    which YAML reads unchanged), from the schema in TRTLLM_SOURCE."""
    exp = Export("trtllm", None, engine_version=f"TensorRT-LLM {TRTLLM_SOURCE}")
    if policy.engine.max_num_seqs is not None:
        exp.args += ["--max_batch_size", str(policy.engine.max_num_seqs)]
    if policy.family == "sglang":
        raise SpecsimError("a family sglang policy runs SGLang's adaptive rule, which TensorRT-LLM does not have "
                           "(export it --to sglang)")
    if policy.drafter is None or policy.max_k == 0:
        exp.notes.append("speculation is off at every batch size: no speculative_config")
        return exp
    d = policy.drafter
    decoding = TRTLLM_DECODING.get(d.method)
    if decoding is None:
        raise SpecsimError(f"drafter method {d.method!r} has no TensorRT-LLM equivalent "
                           f"(known: {', '.join(sorted(TRTLLM_DECODING))})")
    floor = trtllm_min_draft_len(d.method)
    problems: list[str] = []
    if policy.family == "trtllm":
        assert policy.trtllm is not None
        t = policy.trtllm
        k, table = t.max_draft_len, t.schedule()
        if t.min_draft_len != floor:
            problems.append(f"min_draft_len {t.min_draft_len}: TensorRT-LLM uses {floor} for {decoding} above the "
                            "schedule's last key")
        gate = (t.acceptance_rate_window_size, t.acceptance_rate_threshold)
    else:
        k = policy.max_k
        problems += [p for p in _static_only(policy) if not p.startswith("the K schedule")]
        ranges = policy.vllm_schedule()
        while ranges and ranges[-1][2] == 0:
            ranges.pop()
        table = {hi: kk for _lo, hi, kk in ranges}
        if ranges and ranges[0][2] != k:
            problems.append(f"K {ranges[0][2]} at batch size 1: TensorRT-LLM's schedule must start at "
                            f"max_draft_len {k}")
        if floor > 0 and (any(v < floor for v in table.values()) or ranges[-1][1] < SCHEDULE_CAP):
            problems.append(f"K = 0 at some batch sizes: TensorRT-LLM keeps at least {floor} draft token for "
                            f"{decoding}")
        gate = (None, None)
    _refuse_or_note(exp, problems, lossy, "TensorRT-LLM")
    spec: dict[str, Any] = {"decoding_type": decoding, "max_draft_len": k}
    if decoding == "NGram":
        spec["max_matching_ngram_size"] = int(drafter_params(policy)["prompt_lookup_max"])
        exp.notes.append("TensorRT-LLM's NGram drafter also matches n-grams of earlier outputs (is_public_pool); "
                         "its acceptance can differ from vLLM's prompt lookup")
    elif decoding == "MTP":
        spec["num_nextn_predict_layers"] = spec.pop("max_draft_len")
    elif d.model is not None:
        spec["speculative_model"] = d.model
    if decoding == "Draft_Target":
        exp.notes.append("TensorRT-LLM's docs run Draft_Target with disable_overlap_scheduler: true")
    keys = sorted(table)
    if policy.trtllm is not None and policy.trtllm.max_concurrency is not None:
        spec["max_concurrency"] = policy.trtllm.max_concurrency
    elif keys and not (len(keys) == 1 and keys[0] >= SCHEDULE_CAP):
        # keys are inclusive upper bounds of the scheduled batch size (bisect_left in
        # get_draft_len_for_batch_size); max_concurrency would be the same as {key: max_draft_len}
        spec["draft_len_schedule"] = {str(b): table[b] for b in keys}
    if gate[0] and gate[1] is not None:
        spec["acceptance_rate_window_size"] = gate[0]
        spec["acceptance_rate_threshold"] = gate[1]
        exp.notes.append(f"speculation switches off for good once the mean acceptance of the last {gate[0]} "
                         f"speculating iterations is below {gate[1]}")
    exp.config = {"speculative_config": spec}
    exp.files[TRTLLM_OPTIONS_FILE] = json.dumps(exp.config, indent=2) + "\n"
    exp.args += ["--extra_llm_api_options", TRTLLM_OPTIONS_FILE]
    return exp


def export(policy: Policy, target: str, max_num_seqs: int | None = None, lossy: bool = False) -> Export:
    """Settings for one engine ('vllm', 'sglang' or 'trtllm'). What the engine cannot express is refused
    with a one-line error, or with `lossy` exported as the closest settings and listed in `unsupported`."""
    d = policy.drafter
    if d is not None and policy.max_k > 0 and d.method in MODEL_METHODS and not d.model:
        raise SpecsimError(
            f"policy drafter {d.name!r} uses method {d.method!r}, which needs a draft model, but names none "
            f"(set drafter.model)"
        )
    if target == "vllm":
        return to_vllm(policy, max_num_seqs, lossy)
    if target == "sglang":
        return to_sglang(policy, lossy)
    if target == "trtllm":
        return to_trtllm(policy, lossy)
    raise SpecsimError(f"unknown export target {target!r} (choose from {', '.join(TARGETS)})")
