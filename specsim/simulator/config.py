"""Simulation settings: the engine's scheduler limits, load mode and routing, one docstring a field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from specsim.errors import SpecsimError


@dataclass
class SimConfig:
    """How to run one simulation (engine limits mirror vLLM V1's scheduler options)."""

    max_num_seqs: int = 256
    """Most requests running at once per replica (vLLM `max_num_seqs`)."""
    max_num_batched_tokens: int = 8192
    """Token budget of one engine step, draft tokens included (vLLM `max_num_batched_tokens`)."""
    block_size: int = 16
    """Tokens per KV-cache block."""
    num_kv_blocks: int | None = None
    """KV-cache blocks per replica; None = the profile's kv_cache_tokens, else effectively unlimited."""
    chunked_prefill: bool = True
    """Split long prompts across steps to fit the token budget (vLLM V1 default)."""
    k_basis: Literal["running", "decoding"] = "running"
    """Batch size used to look up K: all running requests of the step (vLLM) or only decoding ones."""
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

    def validate(self) -> None:
        """Raise SpecsimError for impossible settings."""
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "replicas"):
            if getattr(self, name) < 1:
                raise SpecsimError(f"{name} must be >= 1")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise SpecsimError("num_kv_blocks must be >= 1")
        if self.concurrency is not None and self.concurrency < 1:
            raise SpecsimError("concurrency must be >= 1")
        if self.think_time < 0:
            raise SpecsimError("think_time must be >= 0")
        if not self.rate_scale > 0:
            raise SpecsimError("rate_scale must be > 0")
        if self.k_basis not in ("running", "decoding"):
            raise SpecsimError("k_basis must be 'running' or 'decoding'")
        if self.router not in ("round_robin", "least_loaded"):
            raise SpecsimError("router must be 'round_robin' or 'least_loaded'")
        for name in ("slo_ttft", "slo_tpot"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise SpecsimError(f"{name} must be > 0 seconds")
