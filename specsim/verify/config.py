"""How a verification measures: its bounds and statistics (defaults live here, read by the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class VerifyConfig:
    """How far and how hard to measure (the CLI's defaults are these)."""

    repeats: int = 3
    """Rounds; each round starts one server per candidate."""
    max_requests: int = 200
    """Requests of the trace replayed per run (its first ones)."""
    time_limit_s: float = 3600.0
    """Bound on the whole verification; past it no new run starts and the verdict uses what exists."""
    run_timeout_s: float = 600.0
    """Bound on one loadgen run."""
    runners_up: int = 0
    confidence: float = 0.95
    bootstrap_samples: int = 1000
    rate_scale: float = 1.0
    eager: bool | None = None
    """Serve without compilation; None = as the profile was measured."""
    seed: int = 0


def sim_config_for(profile: Any, policy: Any) -> Any:
    """The simulator's engine limits as the server will run them: the profile's, then the policy's knobs."""
    from specsim.policies.serve import profile_engine_kwargs
    from specsim.simulator.config import SimConfig

    kw = profile_engine_kwargs(profile)
    return SimConfig(max_num_seqs=int(policy.engine.max_num_seqs or kw.get("max_num_seqs", 256)),
                     max_num_batched_tokens=int(policy.engine.max_num_batched_tokens
                                                or kw.get("max_num_batched_tokens", 8192)))
