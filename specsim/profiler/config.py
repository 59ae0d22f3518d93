"""What a profiling run is asked to do (`specsim profile`'s defaults are these). A module of its own so
that the measuring (`run.py`) and the pure assembly (`assemble.py`) both read it without importing
each other."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from specsim.profiler.plan import MeasurePlan


@dataclass
class ProfileConfig:
    """Everything a profiling run needs (the CLI's defaults are these)."""

    model: str = "default"
    drafters: list[str] = field(default_factory=lambda: ["ngram"])
    prompts: str | None = None
    num_prompts: int | None = 24
    crosscheck_prompts: int = 16
    max_tokens: int = 128
    max_prompt_tokens: int = 768
    k_max: int = 4
    plan: MeasurePlan = field(default_factory=MeasurePlan)
    dtype: str = "auto"
    """'auto' is the model's own dtype (bf16 for the default model), as vLLM serves it."""
    compiled: bool = True
    """vLLM's default compilation (torch.compile on CPU, CUDA graphs on GPU); False = eager."""
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    kv_space_gib: int = 2
    """CPU: VLLM_CPU_KVCACHE_SPACE the engines get (the profile records the blocks it gives)."""
    seed: int = 0
    skip_costs: bool = False
    skip_acceptance: bool = False
    costs_only: bool = False
    """Build every engine from config.json files alone (`load_format="dummy"`): the step costs of any shapes
    without weights (a step's cost does not depend on them), no acceptance measured; acceptance then comes
    from `acceptance_rates`, or the drafter is tuned only once it has some."""
    acceptance_rates: list[str] = field(default_factory=list)
    """`--acceptance-rates` as given (specsim.formats.acceptance_rates.parse_rates): per-position rates for
    the model-based drafters whose acceptance this run does not measure."""
    temperature: float = 0.0
    """0: greedy traces (r). > 0: sampled traces from teacher-forced top-k log-probs."""
    logprobs_k: int = 20

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must match to be resumed."""
        d = asdict(self)
        d["plan"] = self.plan.to_dict()
        # NOTE: repeats of the cost grid are keyed apart (plain@1, kprobe@1), so a finished profile's
        # checkpoint resumes with a larger --cost-starts and only runs the new starts
        d["plan"].pop("cost_starts", None)
        d.pop("acceptance_rates", None)  # applied when the profile is assembled: no measurement depends on it
        return json.loads(json.dumps(d))  # as the checkpoint stores it (tuples become lists)


__all__ = ["ProfileConfig"]
