"""The profile contract: measured (or analytic) step costs plus per-request acceptance traces.

A profile says how long one engine iteration takes for a given composition and how many draft
tokens the target accepts at each output position, so the simulator can replay any K exactly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from specsim.formats._common import _Strict, load_document
from specsim.formats.drafters import drafter_problem
from specsim.io import atomic_write_text

SCHEMA = "specsim.profile"
VERSIONS = (1, 2, 3)
"""1: decode table + prefill curve. 2 adds (all optional) the composition cost model, drafter
composition costs, KV capacity, the engine's mode and the start-to-start spread."""


def _increasing(values: list[int] | list[float], name: str) -> None:
    if not values:
        raise ValueError(f"{name} must not be empty")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"{name} must be strictly increasing")


class ProfileMetadata(_Strict):
    """Who measured what, where and how: what a reader needs to trust the numbers."""

    source: Literal["measured", "analytic"]
    """'measured' by `specsim profile` through a real engine, or 'analytic' (roofline model)."""
    hardware: str
    """Device description, e.g. 'NVIDIA H100 80GB' or 'AMD EPYC, 2 cores'."""
    device: str = "cpu"
    """Device kind the engine ran on: 'cpu' or 'cuda'."""
    engine: str = "vllm"
    """Serving engine the costs belong to."""
    engine_version: str | None = None
    """Engine version string, e.g. '0.32.0+cpu'."""
    target_model: str
    """Target model name or path."""
    dtype: str = "bfloat16"
    """Weights/activation dtype."""
    threads: int | None = None
    """CPU threads used by the engine (None on GPU)."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """Every engine argument used while measuring."""
    created_at: str | None = None
    """ISO-8601 time of creation."""
    notes: str = ""
    """Free text: machine load, caveats."""
    fit: dict[str, Any] = Field(default_factory=dict)
    """Cost-model fit report (e.g. held-out relative error)."""
    analytic: dict[str, Any] = Field(default_factory=dict)
    """Inputs of the analytic builder (model sizes, GPU figures), empty for measured profiles."""
    acceptance_check: dict[str, Any] = Field(default_factory=dict)
    """Per drafter: how the traces reproduce the engine's own acceptance counters (profiler)."""


class CostTable(_Strict):
    """Median step time (ms) on a (batch size, K) grid; rows are batch sizes, columns K values."""

    batch_sizes: list[int]
    """Number of sequences in the step, strictly increasing, >= 1."""
    ks: list[int]
    """Speculation lengths, strictly increasing; each decoding sequence verifies K+1 tokens."""
    step_ms: list[list[float]]
    """step_ms[i][j]: median milliseconds for batch_sizes[i] and ks[j]."""
    spread_ms: list[list[float]] | None = None
    """Same shape: spread of the repeats (interquartile range), if measured."""

    @model_validator(mode="after")
    def _shape(self) -> CostTable:
        _increasing(self.batch_sizes, "batch_sizes")
        _increasing(self.ks, "ks")
        if self.batch_sizes[0] < 1 or self.ks[0] < 0:
            raise ValueError("batch_sizes must be >= 1 and ks >= 0")
        for grid, name in ((self.step_ms, "step_ms"), (self.spread_ms, "spread_ms")):
            if grid is None:
                continue
            if len(grid) != len(self.batch_sizes) or any(len(r) != len(self.ks) for r in grid):
                raise ValueError(f"{name} must have shape [len(batch_sizes)][len(ks)]")
            if any(not (v >= 0 and v < 1e9) for r in grid for v in r):
                raise ValueError(f"{name} values must be finite, >= 0 and below 1e9 ms (about 11.6 days)")
        return self


class DecodeCost(CostTable):
    """Target decode/verification cost: a CostTable measured at one context length, plus a slope."""

    reference_context: int = Field(ge=0)
    """Mean context length (tokens per sequence) at which the table was measured."""
    context_ms_per_token: float = Field(default=0.0, ge=0.0)
    """Marginal ms per extra context token summed over the batch (attention/KV reads)."""

    @model_validator(mode="after")
    def _has_k0(self) -> DecodeCost:
        if self.ks[0] != 0:
            raise ValueError("target decode table must include K=0 (plain decoding)")
        return self


class PrefillCurve(_Strict):
    """Prefill-only step time (ms) against prompt tokens processed in the step."""

    tokens: list[int]
    """Prompt tokens in the step, strictly increasing, >= 1."""
    step_ms: list[float]
    """Median ms of a step that prefills that many tokens."""

    @model_validator(mode="after")
    def _shape(self) -> PrefillCurve:
        _increasing(self.tokens, "tokens")
        if self.tokens[0] < 1:
            raise ValueError("tokens must be >= 1")
        if len(self.step_ms) != len(self.tokens):
            raise ValueError("step_ms must have one value per tokens entry")
        if any(not (v >= 0 and v < 1e9) for v in self.step_ms):
            raise ValueError("step_ms values must be finite, >= 0 and below 1e9 ms (about 11.6 days)")
        return self


class CompositionCost(_Strict):
    """A step's whole period as served, from its composition (version 2; fitted by the profiler).

    With T tokens in the step (prefill chunks, decode tokens and draft tokens), N requests, A
    attention pairs (sum over rows of new tokens x (context before + (new + 1) / 2)) and S draft
    tokens verified:

        period_ms = base_ms + F(T) + per_request_ms * N + per_kpair_ms * (A - A_p) / 1000
                    + per_prefill_kpair_ms * A_p / 1000 + per_draft_token_ms * S

    A_p are the attention pairs of prefill rows (rows computing more than one token besides their
    drafts: prompt chunks, with or without a cached prefix before them).

    F is piecewise linear through (token_knots, token_ms), extended past the last knot with its
    last slope. The period runs from one schedule() to the next, so the scheduler, the drafter's
    hand-off and the output processing are in it (iteration `elapsed_ms` leaves them out).
    """

    base_ms: float = Field(ge=0.0, lt=1e9)
    token_knots: list[int]
    """Tokens per step at the knots, strictly increasing, first >= 1."""
    token_ms: list[float]
    """F at each knot (ms), non-decreasing; F(first knot) is 0 by convention."""
    per_request_ms: float = Field(default=0.0, ge=0.0, lt=1e9)
    per_kpair_ms: float = Field(default=0.0, ge=0.0, lt=1e9)
    """ms per thousand attention (query token, context token) pairs of decode rows (of every row when
    per_prefill_kpair_ms is null)."""
    per_prefill_kpair_ms: float | None = Field(default=None, ge=0.0, lt=1e9)
    """ms per thousand attention pairs of prefill rows. Null (profiles made before it): per_kpair_ms."""
    per_draft_token_ms: float = Field(default=0.0, ge=0.0, lt=1e9)
    """Verification work per draft token beyond its share of F (rejection sampler, bookkeeping)."""
    measured: dict[str, float] = Field(default_factory=dict)
    """The largest tokens, requests and context per request measured; beyond them the simulator
    extrapolates and says so (keys: tokens, requests, context)."""

    @model_validator(mode="after")
    def _shape(self) -> CompositionCost:
        _increasing(self.token_knots, "token_knots")
        if self.token_knots[0] < 1:
            raise ValueError("token_knots must be >= 1")
        if len(self.token_ms) != len(self.token_knots):
            raise ValueError("token_ms must have one value per knot")
        if any(not (0 <= v < 1e9) for v in self.token_ms):
            raise ValueError("token_ms values must be finite, >= 0 and < 1e9")
        if any(b < a for a, b in zip(self.token_ms, self.token_ms[1:], strict=False)):
            raise ValueError("token_ms must be non-decreasing")
        return self


class KvCapacity(_Strict):
    """The KV cache the engine had while measuring, and how it scales (version 2)."""

    blocks: int = Field(ge=2)
    """vLLM's num_gpu_blocks (one is its null block)."""
    block_size: int = Field(default=16, ge=1)
    bytes_per_block: int | None = Field(default=None, ge=1)
    """Bytes of KV one block holds across all layers: blocks = space / bytes_per_block."""
    space_gib: float | None = Field(default=None, gt=0)
    """KV space it was given: VLLM_CPU_KVCACHE_SPACE (CPU), or None on GPU."""
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)


class EngineMode(_Strict):
    """How the engine ran while measuring: the same must be served (version 2)."""

    dtype: str
    compiled: bool
    """vLLM's default compilation (torch.compile on CPU, CUDA graphs on GPU) rather than eager."""
    async_scheduling: bool = False
    detail: dict[str, Any] = Field(default_factory=dict)
    """Compilation mode, CUDA-graph mode and any other setting that changes step costs."""


class TargetCost(_Strict):
    """The target model's cost model: decode/verify table and prefill curve (and, from version 2,
    the composition model the simulator prefers when present)."""

    decode: DecodeCost
    prefill: PrefillCurve
    kv_cache_tokens: int | None = Field(default=None, ge=16)
    """KV-cache capacity in tokens the engine had while measuring (the simulator's default)."""
    composition: CompositionCost | None = None
    kv: KvCapacity | None = None
    mode: EngineMode | None = None
    start_spread: float | None = Field(default=None, ge=0.0, lt=10.0)
    """Relative spread of step periods between engine starts of the same configuration (half the
    range of per-start medians over their mean); the simulator reports its predictions with it."""


class DrafterComposition(_Strict):
    """The drafter's work in a step with R rows that draft, S draft tokens and K the longest draft:

        ms = per_step_ms [R > 0] + per_row_ms * R + per_token_ms * S + per_forward_ms * K + per_forward_row_ms * K * R

    A proposer that scans text (n-gram, suffix) costs per row; a draft model runs K sequential
    forwards over R rows (per_forward_*)."""

    per_step_ms: float = Field(default=0.0, ge=0.0, lt=1e9)
    per_row_ms: float = Field(default=0.0, ge=0.0, lt=1e9)
    per_token_ms: float = Field(default=0.0, ge=0.0, lt=1e9)
    per_forward_ms: float = Field(default=0.0, ge=0.0, lt=1e9)
    per_forward_row_ms: float = Field(default=0.0, ge=0.0, lt=1e9)


FAMILIES = ("chain", "heads", "parallel", "block", "overlapped", "tree")
SIMULATED_FAMILIES = FAMILIES
"""Families the simulator replays. chain, heads, parallel and block verify a chain of K draft tokens
and differ in what drafting costs and in their traces; a tree is replayed as K = tree_size verified
tokens whose traces hold the accepted path length (at most tree_depth), one tree size per policy; an
overlapped drafter's cost table combines with the target's as hit x max + miss x sum."""


class DrafterFamily(_Strict):
    """How a drafter proposes and what a step verifies (version 3; absent: a chain).

    - chain: K tokens from K sequential drafter passes (draft model, EAGLE, MTP) or a text lookup
      (n-gram, suffix); drafting cost grows with K.
    - heads: K heads on the target's last hidden state evaluated in one pass (Medusa); no draft KV;
      acceptance falls with the head's position.
    - parallel: one drafter pass proposes all K tokens (P-EAGLE); cost nearly independent of K.
    - block: one call of a block drafter returns K tokens (DFlash-style block diffusion).
    - overlapped: the drafter prepares the next round while the target verifies (speculative
      speculative decoding, Saguaro); a step costs max(verify, draft) when the outcome was
      pre-drafted (probability hit_rate), verify + draft when not.
    - tree: a step verifies a tree of tree_size candidate tokens per sequence and accepts its longest
      matching path (EAGLE-2/3, Medusa trees, SpecInfer), at most tree_depth tokens.
    """

    kind: Literal["chain", "heads", "parallel", "block", "overlapped", "tree"] = "chain"
    heads: int | None = Field(default=None, ge=1, le=64)
    """heads: the number of heads (K <= heads)."""
    hit_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    """overlapped: probability that the verification outcome was among the pre-drafted ones."""
    tree_size: int | None = Field(default=None, ge=2, le=4096)
    """tree: candidate tokens verified per sequence and step (the tree's nodes, root excluded)."""
    tree_depth: int | None = Field(default=None, ge=1, le=64)
    """tree: the longest path, the most tokens a step can accept besides the bonus token."""
    tree_sizes: list[int] | None = None
    """tree, optional: every size the profile has traces for (AcceptanceTrace.tree_size), ascending, the
    largest being tree_size; a policy may then use a different size per batch size. None: tree_size only."""
    source: str | None = None
    """Where the parameters come from (a paper, a measurement)."""

    @model_validator(mode="after")
    def _params(self) -> DrafterFamily:
        need = {"heads": ("heads",), "overlapped": ("hit_rate",), "tree": ("tree_size", "tree_depth")}
        for name in need.get(self.kind, ()):
            if getattr(self, name) is None:
                raise ValueError(f"a {self.kind} drafter needs {name}")
        if self.kind == "tree" and self.tree_depth is not None and self.tree_size is not None \
                and self.tree_depth > self.tree_size:
            raise ValueError("tree_depth cannot exceed tree_size")
        if self.tree_sizes is not None:
            if self.kind != "tree" or not self.tree_sizes:
                raise ValueError("tree_sizes belong to a tree drafter and cannot be empty")
            if any(b <= a for a, b in zip(self.tree_sizes, self.tree_sizes[1:], strict=False)) \
                    or self.tree_sizes[0] < 1 or self.tree_sizes[-1] != self.tree_size:
                raise ValueError("tree_sizes must ascend, from >= 1 up to tree_size")
        return self

    @property
    def sizes(self) -> list[int]:
        """A tree's sizes with traces (tree_sizes, else [tree_size]); empty for other families."""
        if self.kind != "tree" or self.tree_size is None:
            return []
        return list(self.tree_sizes) if self.tree_sizes else [self.tree_size]


class DrafterSpec(_Strict):
    """A drafter the profile measured: how to configure it and what it adds to a step."""

    method: str
    """vLLM speculative method: ngram, suffix, draft_model, eagle, eagle3, mtp, ..."""
    model: str | None = None
    """Draft model path or name (draft_model / eagle / mtp)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Method parameters, e.g. {'prompt_lookup_min': 2, 'prompt_lookup_max': 4}."""
    k_max: int = Field(ge=1)
    """Largest K measured for this drafter."""
    cost: CostTable | None = None
    """Extra ms per step on top of target.decode for proposing K tokens at batch B (None = free)."""
    composition: DrafterComposition | None = None
    """Version 2: the drafter's share of a step's period, used with target.composition."""
    family: DrafterFamily | None = None
    """Version 3: the drafter's family and its parameters (None: a chain)."""
    acceptance_source: Literal["traces", "rates", "live", "synthetic"] | None = None
    """Version 3: where the drafter's acceptance comes from. traces: measured per prompt through the engine;
    rates: per-position rates a user gave (`acceptance_rates`); live: a server's counters; synthetic: an
    assumed alpha (analytic). None: an older profile (traces, or synthetic in an analytic profile)."""
    acceptance_rates: dict[str, list[float]] | None = None
    """Version 3, with source rates (or live): the per-position rates as given, by K ("k2", "k4") or for
    every K ("all"); the traces replay them (specsim.formats.acceptance_rates)."""

    @model_validator(mode="after")
    def _family_fits(self) -> DrafterSpec:
        if why := drafter_problem(self.method, self.model, self.params):
            raise ValueError(why)
        if self.family is not None and self.family.kind == "heads" and self.family.heads is not None \
                and self.k_max > self.family.heads:
            raise ValueError(f"k_max {self.k_max} exceeds the drafter's {self.family.heads} heads")
        return self

    @property
    def family_kind(self) -> str:
        return self.family.kind if self.family is not None else "chain"

    def static_ks(self, k_max: int) -> list[int]:
        """The K values a static policy of this drafter may use, up to `k_max`: a tree only its size
        (it is verified whole), any other family 1..min(k_max, its own k_max)."""
        if self.family is not None and self.family.kind == "tree" and self.family.tree_size is not None:
            return self.family.sizes
        return list(range(1, min(k_max, self.k_max) + 1))


class AcceptanceTrace(_Strict):
    """Per-request acceptance: for each output position, how far a verification would get."""

    prompt_id: str
    category: str | None = None
    drafter: str
    """Key into Profile.drafters."""
    prompt_length: int = Field(ge=1)
    output_length: int = Field(ge=1)
    k_max: int = Field(ge=1)
    mode: Literal["greedy", "sampled"] = "greedy"
    r: list[int] | None = None
    """Greedy: r[pos] in 0..k_max = accept run length of a step starting at output position pos."""
    p: list[float] | None = None
    """Sampled: per-position acceptance probability (sum over tokens of min(p, q))."""
    pj: list[list[float]] | None = None
    """Sampled, optional: pj[pos][j] = probability that the j-th token of the draft proposed at pos
    is accepted, given tokens 0..j-1 were (one row per p entry, up to k_max values; a shorter row
    means the drafter proposed fewer tokens there). Without it the simulator uses p[pos + j]."""
    drafted: list[int] | None = None
    """Greedy, optional: draft tokens the drafter proposes at pos (0..k_max; None = always K).
    Model-free drafters (n-gram) propose fewer or none when nothing matches; r[pos] <= drafted[pos]."""
    source: str | None = None
    """How r/p was obtained: 'replay' (drafter re-run over the target's tokens), 'teacher-forced'
    (draft model argmax), 'vllm-metrics' (engine per-request counts), 'synthetic' (analytic)."""
    tree_size: int | None = Field(default=None, ge=1)
    """A tree drafter's traces: the tree size they were made for (None: the drafter's tree_size)."""
    at_k: int | None = Field(default=None, ge=1, le=64)
    """Version 3, chain drafters with acceptance per K: the K this trace's acceptance was measured or given
    at. A step drafting K tokens reads the traces of the largest at_k no bigger than K (the smallest at_k
    below every one); all sets cover the same prompts and positions."""

    @model_validator(mode="after")
    def _payload(self) -> AcceptanceTrace:
        if self.mode == "greedy":
            if not self.r:
                raise ValueError("greedy trace needs a non-empty 'r'")
            if any(v < 0 or v > self.k_max for v in self.r):
                raise ValueError("r values must lie in 0..k_max")
            if self.drafted is not None:
                if len(self.drafted) != len(self.r):
                    raise ValueError("drafted must have one value per r entry")
                if any(d < r or d > self.k_max for d, r in zip(self.drafted, self.r, strict=True)):
                    raise ValueError("drafted values must lie in r[pos]..k_max")
        else:
            if not self.p:
                raise ValueError("sampled trace needs a non-empty 'p'")
            if any(not (0.0 <= v <= 1.0) for v in self.p):
                raise ValueError("p values must lie in [0, 1]")
            if self.pj is not None:
                if len(self.pj) != len(self.p):
                    raise ValueError("pj must have one row per p entry")
                for row in self.pj:
                    if len(row) > self.k_max or any(not (0.0 <= v <= 1.0) for v in row):
                        raise ValueError("pj rows hold at most k_max probabilities in [0, 1]")
            if self.drafted is not None and len(self.drafted) != len(self.p):
                raise ValueError("drafted must have one value per p entry")
        return self


class Profile(_Strict):
    """A complete profile: metadata, the target's cost model, drafters and acceptance traces."""

    schema_name: Literal["specsim.profile"] = Field(default="specsim.profile", alias="schema")
    version: int = VERSIONS[-1]
    metadata: ProfileMetadata
    k_max: int = Field(ge=0)
    """Largest K the cost model covers (the simulator refuses K above it)."""
    target: TargetCost
    drafters: dict[str, DrafterSpec] = Field(default_factory=dict)
    acceptance: list[AcceptanceTrace] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        # NOTE: a field a later version added, in an older file, means the file is not what it says it is
        late = []
        if self.version < 2:
            tc = self.target
            late += [f"target.{n}" for n in ("composition", "kv", "mode", "start_spread") if getattr(tc, n) is not None]
            late += [f"drafters.{n}.composition" for n, d in self.drafters.items() if d.composition is not None]
        if self.version < 3:
            late += [f"drafters.{n}.{f}" for n, d in self.drafters.items()
                     for f in ("family", "acceptance_source", "acceptance_rates") if getattr(d, f) is not None]
            late += ["acceptance[].tree_size"] * any(tr.tree_size is not None for tr in self.acceptance)
            late += ["acceptance[].at_k"] * any(tr.at_k is not None for tr in self.acceptance)
        if late:
            need = 3 if any(x.rsplit(".", 1)[-1] in ("family", "tree_size", "at_k", "acceptance_source",
                                                     "acceptance_rates") for x in late) else 2
            raise ValueError(f"{late[0]} is a version {need} field, in a version {self.version} profile "
                             f"(set version {need}, or remove it)")
        if self.target.decode.ks[-1] < self.k_max:
            raise ValueError(f"target.decode covers K up to {self.target.decode.ks[-1]} < k_max {self.k_max}")
        modes: dict[str, str] = {}
        per_k: dict[str, bool] = {}
        for t in self.acceptance:
            if t.drafter not in self.drafters:
                raise ValueError(f"acceptance trace {t.prompt_id!r} names unknown drafter {t.drafter!r}")
            if modes.setdefault(t.drafter, t.mode) != t.mode:
                raise ValueError(f"drafter {t.drafter!r} mixes greedy and sampled acceptance traces")
            if per_k.setdefault(t.drafter, t.at_k is not None) != (t.at_k is not None):
                raise ValueError(f"drafter {t.drafter!r} mixes traces per K (at_k) with traces for every K")
            if t.at_k is not None and (t.mode != "greedy" or t.tree_size is not None):
                raise ValueError(f"drafter {t.drafter!r}: traces per K (at_k) are greedy chain traces")
        return self

    def traces_for(self, drafter: str) -> list[AcceptanceTrace]:
        """Acceptance traces recorded for one drafter."""
        return [t for t in self.acceptance if t.drafter == drafter]

    def as_measured(self) -> Profile:
        """This profile as the profiler wrote it, without the notes a later validation adds.

        `experiments/fidelity/study.py --record-margin` writes the validated gain error
        (`metadata.fit['fidelity']`) and the live servers' start spread (`metadata.fit['start_spread']
        ['live']`, widening `target.start_spread`). Neither changes a measured cost or trace."""
        fit = dict(self.metadata.fit)
        if fit.pop("fidelity", None) is None and "live" not in (fit.get("start_spread") or {}):
            return self
        target = self.target
        own = fit.get("start_spread")
        if isinstance(own, dict) and "live" in own:
            own = {k: v for k, v in own.items() if k != "live"}
            fit["start_spread"] = own
            mine = own.get("relative")
            target = target.model_copy(update={"start_spread": None if mine is None else float(mine)})
        meta = self.metadata.model_copy(update={"fit": fit})
        return self.model_copy(update={"metadata": meta, "target": target})

    def digest(self) -> str:
        """Content hash of the measurements (for policy provenance).

        NOTE: hashed over `as_measured()`: recording a fidelity study's validated margin in a profile must
        not orphan the policies tuned on it (the study's own tuned policy among them)."""
        doc = self.as_measured().model_dump(mode="json", by_alias=True)
        # NOTE: fields added later hash only when set, so that a profile written before them keeps its digest
        # (and the policies tuned on it stay valid)
        for d in doc.get("drafters", {}).values():
            for key in LATE_DRAFTER_FIELDS:
                if d.get(key) is None:
                    d.pop(key, None)
        for t in doc.get("acceptance", []):
            for key in LATE_TRACE_FIELDS:
                if t.get(key) is None:
                    t.pop(key, None)
        blob = json.dumps(doc, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


LATE_DRAFTER_FIELDS = ("acceptance_source", "acceptance_rates")
"""DrafterSpec fields added after profiles were first hashed (left out of the digest while unset)."""
LATE_TRACE_FIELDS = ("at_k",)
"""AcceptanceTrace fields likewise."""


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile; every defect is a one-line SpecsimError.

    Example (also `specsim.load_profile`):
        >>> profile = load_profile("profiles/smollm2-135m-cpu.json")
        >>> sorted(profile.drafters), profile.k_max
    """
    return load_document(path, Profile, "profile", SCHEMA, VERSIONS)


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write a profile as JSON atomically."""
    atomic_write_text(path, profile.model_dump_json(by_alias=True, indent=1, exclude_none=True) + "\n")
