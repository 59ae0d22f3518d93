"""Measure step costs through vLLM: a (batch, K, context) grid of decode steps and a prefill curve.

For each K an engine is started (K = 0: no speculation; K > 0: the n-gram drafter with vLLM's
synthetic rejection sampler at acceptance 0, so every step verifies exactly K+1 tokens per
sequence while the work is real). B identical requests of a repetitive prompt of C tokens run
together with `ignore_eos`; the stat logger keeps every engine step's composition and vLLM's own
`elapsed_ms`, and only pure decode steps with exactly B sequences x (K+1) tokens are kept. A timer
installed in the worker around `propose_draft_token_ids` separates the drafter's share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from specsim.errors import SpecsimError
from specsim.profiler.engine import DrafterConfig
from specsim.profiler.fit import median_iqr
from specsim.profiler.steplogger import StepLogger, StepRecord, decode_steps, prefill_steps

FILLER = (
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm red chair. "
)


@dataclass
class CostGrid:
    """What to measure."""

    batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    ks: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    contexts: list[int] = field(default_factory=lambda: [64, 256])
    heldout_batches: list[int] = field(default_factory=lambda: [3, 6, 12])
    heldout_contexts: list[int] = field(default_factory=lambda: [160])
    decode_tokens: int = 24
    min_samples: int = 12
    prefill_tokens: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512, 1024])
    prefill_repeats: int = 3

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints and metadata)."""
        return asdict(self)

    def decode_points(self, k: int) -> list[tuple[str, int, int]]:
        """(role, context, batch) of every decode point for one K: grid first, then held-out."""
        pts = [("grid", c, b) for c in self.contexts for b in self.batch_sizes]
        pts += [("heldout", self.contexts[0], b) for b in self.heldout_batches if b not in self.batch_sizes]
        mid = self.batch_sizes[len(self.batch_sizes) // 2]
        pts += [("heldout", c, b) for c in self.heldout_contexts for b in (self.batch_sizes[0], mid)]
        return pts


def decode_key(role: str, k: int, context: int, batch: int) -> str:
    """Checkpoint key of a decode point."""
    return f"decode/{role}/k{k}/c{context}/b{batch}"


def prefill_key(tokens: int) -> str:
    """Checkpoint key of a prefill point."""
    return f"prefill/t{tokens}"


def filler_ids(tokenizer: Any, n: int, offset: int = 0) -> list[int]:
    """n token ids of a repetitive English text (the n-gram drafter always finds a match)."""
    base = tokenizer.encode(FILLER, add_special_tokens=False)
    reps = (n + offset) // len(base) + 2
    ids = (base * reps)[offset : offset + n]
    return ids


# --- worker-side drafter timer (run inside vLLM's worker via collective_rpc) -------------------
def _install_draft_timer(worker: Any) -> bool:
    runner = getattr(worker, "model_runner", None)
    if runner is None or not hasattr(runner, "propose_draft_token_ids"):
        return False
    if getattr(runner, "_specsim_draft_ms", None) is not None:
        return True
    original = runner.propose_draft_token_ids
    times: list[float] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        times.append((time.perf_counter() - t0) * 1000.0)
        return out

    runner.propose_draft_token_ids = timed
    runner._specsim_draft_ms = times
    return True


def _take_draft_times(worker: Any) -> list[float]:
    runner = getattr(worker, "model_runner", None)
    times = getattr(runner, "_specsim_draft_ms", None)
    if times is None:
        return []
    out = list(times)
    times.clear()
    return out


class DraftTimer:
    """Times the worker's drafting call per step, where the engine lets us (else a no-op)."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        try:
            self.ok = bool(all(llm.collective_rpc(_install_draft_timer)))
        except Exception:  # noqa: BLE001 - serialization disabled or executor without RPC
            self.ok = False

    def take(self) -> list[float]:
        """Drafting times (ms) since the last call."""
        if not self.ok:
            return []
        try:
            res = self.llm.collective_rpc(_take_draft_times)
        except Exception:  # noqa: BLE001
            return []
        return list(res[0]) if res else []


def _sampling(max_tokens: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def _step_contexts(steps: list[StepRecord], prompt_tokens: int) -> list[float]:
    """Mean context per running sequence at each step (prompt + tokens generated before it)."""
    out: list[float] = []
    generated = 1.0  # the prefill step emits the first output token
    for s in steps:
        out.append(prompt_tokens + generated)
        if s.gen_requests:
            generated += (s.num_accepted_tokens + s.gen_requests) / s.gen_requests
    return out


@dataclass
class DecodePoint:
    """Samples of one (B, K, prompt length) point, filled one run at a time."""

    prompt: list[int]
    batch: int
    k: int
    samples: list[float] = field(default_factory=list)
    periods: list[float] = field(default_factory=list)
    contexts: list[float] = field(default_factory=list)
    draft_ms: list[float] = field(default_factory=list)
    other: int = 0
    runs: int = 0

    def run_once(self, llm: Any, logger: StepLogger, timer: DraftTimer | None, decode_tokens: int) -> None:
        """One batch of B requests; keep its pure decode steps of exactly B x (K+1) tokens."""
        self.runs += 1
        max_tokens = decode_tokens + (decode_tokens * self.k) // 2
        logger.clear()
        if timer is not None:
            timer.take()
        llm.generate([{"prompt_token_ids": list(self.prompt)}] * self.batch, _sampling(max_tokens), use_tqdm=False)
        steps = list(logger.steps)
        ctx = _step_contexts(steps, len(self.prompt))
        matched = {id(s) for s in decode_steps(steps, self.batch, self.k)}
        self.other += len(steps) - len(matched)
        for i, st in enumerate(steps):
            if id(st) in matched:
                self.samples.append(st.elapsed_ms)
                self.contexts.append(ctx[i])
                if i > 0 and id(steps[i - 1]) in matched:
                    self.periods.append((st.wall - steps[i - 1].wall) * 1000.0)
        if timer is not None:
            self.draft_ms += timer.take()

    def record(self) -> dict[str, Any]:
        """Median, IQR and context of the kept steps (a one-line error when none was kept)."""
        if not self.samples:
            raise SpecsimError(
                f"no pure decode step with {self.batch} sequences x {self.k + 1} tokens was observed "
                "(the drafter proposed fewer tokens than K); cannot measure this point"
            )
        med, iqr = median_iqr(self.samples)
        rec: dict[str, Any] = {"ms": med, "iqr": iqr, "n": len(self.samples), "runs": self.runs,
                               "other_steps": self.other, "context": sum(self.contexts) / len(self.contexts),
                               "samples": [round(x, 3) for x in self.samples]}
        if self.periods:
            rec["period_ms"] = median_iqr(self.periods)[0]
        if self.draft_ms:
            rec["draft_ms"] = median_iqr(self.draft_ms)[0]
        return rec


def measure_interleaved(
    llm: Any, logger: StepLogger, timer: DraftTimer | None, points: dict[str, DecodePoint],
    decode_tokens: int, min_samples: int, done: Callable[[str, dict[str, Any]], None], max_runs: int = 6,
) -> None:
    """Round-robin one run per unfinished point until each has `min_samples` steps, so a burst of
    load on a shared machine spreads over all points instead of skewing one; `done` gets each
    point's record as soon as it is complete."""
    pending = dict(points)
    while pending:
        for key in list(pending):
            pt = pending[key]
            pt.run_once(llm, logger, timer, decode_tokens)
            if len(pt.samples) >= min_samples or pt.runs >= max_runs:
                done(key, pt.record())
                del pending[key]


def measure_decode(
    llm: Any, logger: StepLogger, timer: DraftTimer | None, prompt: list[int], batch: int, k: int,
    decode_tokens: int, min_samples: int, max_runs: int = 6,
) -> dict[str, Any]:
    """One point on its own: runs until `min_samples` pure decode steps of B x (K+1) tokens."""
    pt = DecodePoint(list(prompt), batch, k)
    while len(pt.samples) < min_samples and pt.runs < max_runs:
        pt.run_once(llm, logger, timer, decode_tokens)
    return pt.record()


def measure_prefill(llm: Any, logger: StepLogger, prompt: list[int], repeats: int) -> dict[str, Any]:
    """Prefill-only steps of one request of len(prompt) tokens."""
    samples: list[float] = []
    for _ in range(repeats):
        logger.clear()
        llm.generate([{"prompt_token_ids": list(prompt)}], _sampling(1), use_tqdm=False)
        samples += [s.elapsed_ms for s in prefill_steps(logger.steps, len(prompt))]
    if not samples:
        raise SpecsimError(f"no prefill step of {len(prompt)} tokens observed (raise max_num_batched_tokens)")
    med, iqr = median_iqr(samples)
    return {"ms": med, "iqr": iqr, "n": len(samples)}


def speculative_for_cost(drafter: DrafterConfig, k: int, device: str) -> dict[str, Any]:
    """Speculative config for a cost engine: on GPU, acceptance pinned at 0 by vLLM's synthetic
    rejection sampler; on CPU (where vLLM 0.32 asserts it is unsupported) the real sampler."""
    if device == "cpu":
        return drafter.speculative_config(k)
    return drafter.speculative_config(
        k, {"rejection_sample_method": "synthetic", "synthetic_acceptance_rates": [0.0] * k}
    )


def measure_decode_safe(llm: Any, logger: StepLogger, prompt: list[int], batch: int, k: int, n: int) -> None:
    """A warm-up batch whose result is discarded."""
    logger.clear()
    llm.generate([{"prompt_token_ids": list(prompt)}] * batch, _sampling(n), use_tqdm=False)
    logger.clear()


def count_cost_points(grid: CostGrid) -> int:
    """Number of progress units the cost phase has."""
    return sum(len(grid.decode_points(k)) for k in grid.ks) + len(grid.prefill_tokens)
