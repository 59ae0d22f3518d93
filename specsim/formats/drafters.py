"""Which drafters a policy or profile may name, and which parameters each takes: the one allowlist.

A policy travels to a server, so nothing in it may name code: the method is one of vLLM's built-in
drafters (never `custom_class`, whose `model` vLLM imports as a class; specsim writes that one itself,
for its own proposer only), and `params` holds only the numeric or boolean settings listed here for
that method (vLLM 0.32, `vllm/config/speculative.py`, SpeculativeConfig). Strings are never
parameters: `revision`, `code_revision`, `quantization` and the like stay out. The export builds the
engine's config from these parameters first and sets `method`, `model` and the K after them, so no
parameter can replace them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_MODEL_REF = 4096
"""Longest draft model path or name accepted."""


@dataclass(frozen=True)
class Param:
    """One allowed parameter: its type and inclusive limits."""

    kind: type
    lo: float = 0
    hi: float = 0

    def check(self, name: str, value: Any) -> str | None:
        """None if `value` fits, else why not."""
        if self.kind is bool:
            return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}"
        if self.kind is int and not isinstance(value, int):
            return f"{name} must be an integer, got {value!r}"
        if not (math.isfinite(value) and self.lo <= value <= self.hi):
            return f"{name} must lie in {self.lo:g}..{self.hi:g}, got {value!r}"
        return None


@dataclass(frozen=True)
class Method:
    """A drafter method: whether it names a draft model, and its parameters."""

    model: str  # "none", "required" or "optional"
    params: dict[str, Param] = field(default_factory=dict)


_TP = {"draft_tensor_parallel_size": Param(int, 1, 1024)}
METHODS: dict[str, Method] = {
    "ngram": Method("none", {"prompt_lookup_min": Param(int, 1, 64), "prompt_lookup_max": Param(int, 1, 64)}),
    "suffix": Method("none", {
        "suffix_decoding_max_tree_depth": Param(int, 1, 4096),
        "suffix_decoding_max_cached_requests": Param(int, 0, 10**9),
        "suffix_decoding_max_spec_factor": Param(float, 0.0, 1024.0),
        "suffix_decoding_min_token_prob": Param(float, 0.0, 1.0),
    }),
    "draft_model": Method("required", dict(_TP)),
    "eagle": Method("required", dict(_TP)),
    "eagle3": Method("required", {**_TP, "parallel_drafting": Param(bool)}),
    "dflash": Method("required", dict(_TP)),
    "medusa": Method("required", dict(_TP)),
    "mtp": Method("optional", dict(_TP)),
}
"""Every drafter method specsim reads, with the parameters each may carry."""


def drafter_problem(method: str, model: str | None, params: dict[str, Any]) -> str | None:
    """None for a drafter specsim accepts, else the reason (one line) it is refused."""
    spec = METHODS.get(method)
    if spec is None:
        return f"unknown drafter method {method!r} (specsim reads {', '.join(METHODS)})"
    if model is not None:
        if spec.model == "none":
            return f"a {method} drafter takes no model, got {model!r}"
        if not model.strip() or len(model) > MAX_MODEL_REF or any(ord(c) < 32 for c in model):
            return f"the {method} drafter's model must be a path or name of 1..{MAX_MODEL_REF} printable characters"
    for name, value in params.items():
        rule = spec.params.get(name)
        if rule is None:
            allowed = ", ".join(spec.params) or "none"
            return f"a {method} drafter takes no parameter {name!r} (allowed: {allowed})"
        if why := rule.check(name, value):
            return why
    lo, hi = params.get("prompt_lookup_min"), params.get("prompt_lookup_max")
    if lo is not None and hi is not None and lo > hi:
        return f"prompt_lookup_min {lo} exceeds prompt_lookup_max {hi}"
    return None


def normalized_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as the engine runs them: n-gram lookup sizes default to the profiler's 2..4."""
    out = dict(params)
    if method == "ngram":
        hi = int(out.get("prompt_lookup_max", 4))
        lo = int(out.get("prompt_lookup_min", min(2, hi)))
        out["prompt_lookup_min"], out["prompt_lookup_max"] = lo, max(lo, hi)
    return out
