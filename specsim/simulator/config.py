"""Simulation settings: the engine's scheduler limits, load mode and routing, one docstring a field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from specsim.errors import SpecsimError

LIMITS = (
    ("max_num_seqs", 1 << 16, "65536 (the largest batch size a K schedule covers)"),
    ("max_num_batched_tokens", 1 << 40, "2^40"),
    ("block_size", 1 << 16, "65536"),
    ("num_kv_blocks", 1 << 40, "2^40"),
    ("max_model_len", 1 << 40, "2^40"),
    ("long_prefill_token_threshold", 1 << 40, "2^40"),
    ("replicas", 1024, "1024"),
    ("concurrency", 1 << 40, "2^40"),
    ("max_requests", 1 << 62, "2^62"),
    ("seed", (1 << 32) - 1, "2^32 - 1 (the engine's random generator takes 32-bit seeds)"),
)
"""Upper bounds: beyond them the engine's arrays or 64-bit arithmetic would not hold the setting."""


@dataclass
class SimConfig:
    """How to run one simulation (engine limits mirror vLLM V1's scheduler options)."""

    max_num_seqs: int = 256
    """Most requests running at once per replica (vLLM `max_num_seqs`)."""
    max_num_batched_tokens: int = 8192
    """Token budget of one engine step, draft tokens included (vLLM `max_num_batched_tokens`)."""
    block_size: int | None = None
    """Tokens per KV-cache block; None = the profile's (vLLM's CPU backend uses 128, GPUs 16)."""
    num_kv_blocks: int | None = None
    """KV-cache blocks per replica as vLLM counts them (`num_gpu_blocks`, one of which is vLLM's
    reserved null block); None = the profile's measured capacity, else effectively unlimited."""
    kv_space_gib: float | None = None
    """KV space per replica in GiB (VLLM_CPU_KVCACHE_SPACE, or the GPU memory vLLM gives the
    cache); converted to blocks with the profile's bytes per block. Overrides the profile's blocks;
    num_kv_blocks overrides both."""
    chunked_prefill: bool = True
    """Split long prompts across steps to fit the token budget (vLLM V1 default)."""
    max_model_len: int | None = None
    """Longest sequence (prompt + output) a request may reach; None = long enough for the trace.
    Requests that would pass it stop there, as vLLM stops them."""
    k_basis: Literal["scheduled", "decoding", "running"] = "scheduled"
    """Batch size the K schedule is keyed on. 'scheduled' is vLLM's: the requests scheduled in the
    step after which the drafter proposes, prefill chunks included (`len(num_scheduled_tokens)`).
    'decoding' counts only requests past their prefill; 'running' every request in `running`."""
    reserve_full_isl: bool = True
    """Admit a waiting request only when its whole prompt fits in the free KV blocks (vLLM
    `scheduler_reserve_full_isl`, default on), not just its first chunk."""
    watermark: float = 0.0
    """Fraction of KV blocks kept free when admitting waiting requests (vLLM `watermark`)."""
    long_prefill_token_threshold: int = 0
    """Cap on one request's prefill chunk while others wait (vLLM; 0 = no cap)."""
    prefix_caching: Literal["auto", "on", "off"] = "auto"
    """vLLM's automatic prefix caching: blocks of shared prefixes computed once, kept after their
    request ends until evicted (LRU). 'auto': on when the trace says which prompts share content
    (hash_ids or conversations), else off. 'on' also shares the prompts of requests naming the same
    prompt_id. The profile's own engines ran without it."""
    lookahead: Literal["auto", "none"] = "auto"
    """KV slots reserved past the scheduled tokens for the drafter: 'auto' is vLLM's
    (`num_lookahead_tokens`: the static K for EAGLE, MTP and draft-model drafters, 0 for n-gram and
    suffix), reserved even where the schedule says K = 0; 'none' reserves nothing."""
    async_scheduling: Literal["auto", "on", "off"] = "auto"
    """vLLM's async scheduling (step t+1 formed while step t runs, one step of lag on outputs and
    drafts). 'auto' is vLLM's default: on for GPU profiles without speculation or with EAGLE, MTP or
    draft-model drafters; off for n-gram and suffix drafters and on CPU (vLLM's CPU platform turns
    it off)."""
    scheduler: Literal["fast", "vllm"] = "fast"
    """'fast': specsim's compiled reimplementation of vLLM's scheduler. 'vllm': vLLM's own
    Scheduler class (needs vLLM installed; exact for the installed version, slower)."""
    replicas: int = 1
    """Engine replicas behind the router."""
    router: Literal["round_robin", "least_loaded"] = "round_robin"
    """How arriving requests are spread over replicas."""
    concurrency: int | None = None
    """Closed loop: this many clients, each sending its next request when the last completes."""
    think_time: float = 0.0
    """Closed loop: seconds a client waits between a completion and its next request."""
    rate_scale: float = 1.0
    """Open loop: multiply the trace's arrival rate by this factor."""
    seed: int = 0
    """Seeds trace assignment and sampled acceptance: the same seed gives identical results."""
    slo_ttft: float | None = None
    """Time-to-first-token SLO in seconds (for goodput); None = no TTFT limit."""
    slo_tpot: float | None = None
    """Time-per-output-token SLO in seconds (for goodput); None = no TPOT limit."""
    max_requests: int | None = None
    """Replay only the first N requests of the trace."""
    category_map: dict[str, tuple[str, ...]] | None = None
    """Acceptance traces for trace categories the profile does not have: trace category -> the
    profile categories whose traces its requests draw from (`--category-map conv=writing+roleplay`).
    A request naming a prompt the profile recorded, or a category it has, is matched by that first."""

    @property
    def block_tokens(self) -> int:
        """block_size once resolved (`simulate` fills it from the profile before any use)."""
        if self.block_size is None:  # pragma: no cover - a caller bug, not a user error
            raise RuntimeError("block_size is resolved from the profile before the engine runs")
        return self.block_size

    def validate(self) -> None:
        """Raise SpecsimError for impossible settings (one line, naming the setting)."""
        for name in ("max_num_seqs", "max_num_batched_tokens", "replicas"):
            if getattr(self, name) < 1:
                raise SpecsimError(f"{name} must be >= 1")
        if self.block_size is not None and self.block_size < 1:
            raise SpecsimError("block_size must be >= 1")
        for name, top, text in LIMITS:
            v = getattr(self, name)
            if v is not None and v > top:
                raise SpecsimError(f"{name} must be at most {text}, got {v}")
        if self.max_num_batched_tokens < self.max_num_seqs:
            # NOTE: vLLM refuses this too (SchedulerConfig.verify_max_model_len)
            raise SpecsimError(f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                               f"({self.max_num_seqs}), as vLLM requires")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 2:
            raise SpecsimError("num_kv_blocks must be >= 2 (vLLM reserves one as its null block)")
        if self.kv_space_gib is not None and not (self.kv_space_gib > 0 and math.isfinite(self.kv_space_gib)):
            raise SpecsimError("kv_space_gib must be a finite number > 0")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise SpecsimError("max_model_len must be >= 2")
        if self.concurrency is not None and self.concurrency < 1:
            raise SpecsimError("concurrency must be >= 1")
        if not (self.think_time >= 0 and math.isfinite(self.think_time)):
            raise SpecsimError("think_time must be a finite number >= 0")
        if self.think_time > 1e9:
            raise SpecsimError(f"think_time must be at most 1e9 s, got {self.think_time:g}")
        if not (self.rate_scale > 0 and math.isfinite(self.rate_scale)):
            raise SpecsimError("rate_scale must be a finite number > 0")
        if not 1e-9 <= self.rate_scale <= 1e9:
            # arrival times are divided by it: far outside this range they overflow or collapse to one instant
            raise SpecsimError(f"rate_scale must lie in [1e-9, 1e9], got {self.rate_scale:g}")
        if self.k_basis not in ("scheduled", "decoding", "running"):
            raise SpecsimError("k_basis must be 'scheduled', 'decoding' or 'running'")
        if self.router not in ("round_robin", "least_loaded"):
            raise SpecsimError("router must be 'round_robin' or 'least_loaded'")
        if self.scheduler not in ("fast", "vllm"):
            raise SpecsimError("scheduler must be 'fast' or 'vllm'")
        if self.async_scheduling not in ("auto", "on", "off"):
            raise SpecsimError("async_scheduling must be 'auto', 'on' or 'off'")
        if self.prefix_caching not in ("auto", "on", "off"):
            raise SpecsimError("prefix_caching must be 'auto', 'on' or 'off'")
        if self.lookahead not in ("auto", "none"):
            raise SpecsimError("lookahead must be 'auto' or 'none'")
        if not 0.0 <= self.watermark < 1.0:
            raise SpecsimError("watermark must lie in [0, 1)")
        if self.long_prefill_token_threshold < 0:
            raise SpecsimError("long_prefill_token_threshold must be >= 0")
        if self.seed < 0:
            raise SpecsimError("seed must be >= 0")
        if self.max_requests is not None and self.max_requests < 1:
            raise SpecsimError("max_requests must be >= 1")
        if self.category_map is not None:
            if not isinstance(self.category_map, dict) or not all(
                    isinstance(k, str) and k and not isinstance(v, str) and len(v) > 0
                    and all(isinstance(t, str) and t for t in v) for k, v in self.category_map.items()):
                raise SpecsimError("category_map must map category names to non-empty lists of category names")
        for name in ("slo_ttft", "slo_tpot"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise SpecsimError(f"{name} must be a finite number of seconds > 0")
