"""Analytic (roofline) profiles, so the simulator runs before anything was measured.

A step's time is the larger of streaming the weights (bytes / memory bandwidth) and its matmul
FLOPs (2 x params x tokens / peak compute), plus reading the KV cache and a fixed per-step
overhead. Acceptance traces are synthetic: i.i.d. per-token acceptance alpha per category.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.profile import (
    AcceptanceTrace,
    CostTable,
    DecodeCost,
    DrafterSpec,
    PrefillCurve,
    Profile,
    ProfileMetadata,
    TargetCost,
)


@dataclass(frozen=True)
class ModelSpec:
    """Transformer size figures that set its roofline costs."""

    params: float
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int


@dataclass(frozen=True)
class GpuSpec:
    """Accelerator figures: memory bandwidth (B/s), dense bf16 peak (FLOP/s), memory (bytes)."""

    name: str
    bandwidth: float
    peak_flops: float
    memory: float


MODELS: dict[str, ModelSpec] = {
    "llama-70b": ModelSpec(70.6e9, 80, 8, 128, 8192),
    "llama-8b": ModelSpec(8.03e9, 32, 8, 128, 4096),
    "llama-3b": ModelSpec(3.21e9, 28, 8, 128, 3072),
    "llama-1b": ModelSpec(1.24e9, 16, 8, 64, 2048),
    "qwen-7b": ModelSpec(7.6e9, 28, 4, 128, 3584),
    "qwen-0.5b": ModelSpec(0.49e9, 24, 2, 64, 896),
    "smollm2-135m": ModelSpec(0.135e9, 30, 3, 64, 576),
}
GPUS: dict[str, GpuSpec] = {
    "h100": GpuSpec("NVIDIA H100 SXM 80GB", 3.35e12, 989e12, 80e9),
    "h200": GpuSpec("NVIDIA H200 141GB", 4.8e12, 989e12, 141e9),
    "a100": GpuSpec("NVIDIA A100 80GB", 2.0e12, 312e12, 80e9),
    "l4": GpuSpec("NVIDIA L4 24GB", 0.3e12, 121e12, 24e9),
}
# Per-token acceptance of a small same-family draft model, by workload (Spec-Bench-like figures).
DEFAULT_ALPHA = {"code": 0.8, "math": 0.75, "conv": 0.65, "chat": 0.65, "summarization": 0.7, "translation": 0.55}
NGRAM_ALPHA = {"code": 0.55, "math": 0.35, "conv": 0.3, "chat": 0.3, "summarization": 0.5, "translation": 0.2}

BW_EFF, FLOP_EFF = 0.8, 0.6
STEP_OVERHEAD_S = 1.5e-3
PER_SEQ_OVERHEAD_S = 4e-6


def _lookup(table: dict, name: str, what: str):  # noqa: ANN202
    key = name.lower()
    if key not in table:
        raise SpecsimError(f"unknown {what} {name!r} (known: {', '.join(sorted(table))})")
    return table[key]


@dataclass
class Roofline:
    """Roofline step time of one model on `tp` GPUs."""

    model: ModelSpec
    gpu: GpuSpec
    tp: int = 1
    dtype_bytes: int = 2

    @property
    def weight_bytes(self) -> float:
        return self.model.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        m = self.model
        return 2 * m.layers * m.kv_heads * m.head_dim * self.dtype_bytes

    @property
    def bandwidth(self) -> float:
        return self.gpu.bandwidth * BW_EFF * self.tp

    @property
    def flops(self) -> float:
        return self.gpu.peak_flops * FLOP_EFF * self.tp

    def step_s(self, tokens: float, context_tokens: float, seqs: int) -> float:
        """Forward pass over `tokens` new tokens attending to `context_tokens` cached ones."""
        weights = self.weight_bytes / self.bandwidth
        compute = 2 * self.model.params * tokens / self.flops
        kv = self.kv_bytes_per_token * context_tokens / self.bandwidth
        comm = 2 * self.model.layers * 8e-6 if self.tp > 1 else 0.0
        return max(weights, compute) + kv + comm + STEP_OVERHEAD_S + PER_SEQ_OVERHEAD_S * seqs


def synthetic_traces(
    drafter: str,
    alphas: dict[str | None, float],
    k_max: int,
    per_category: int = 32,
    length: int = 512,
    seed: int = 0,
    mode: str = "greedy",
) -> list[AcceptanceTrace]:
    """Acceptance traces with i.i.d. per-token acceptance alpha: r[pos] = min(run of successes, k_max)."""
    rng = np.random.default_rng(seed)
    out: list[AcceptanceTrace] = []
    for cat, alpha in alphas.items():
        if not 0.0 <= alpha < 1.0:
            raise SpecsimError(f"acceptance alpha must be in [0, 1), got {alpha} for {cat}")
        for j in range(per_category):
            common = dict(
                prompt_id=f"{cat or 'any'}-{j}",
                category=cat,
                drafter=drafter,
                prompt_length=256,
                output_length=length,
                k_max=k_max,
            )
            if mode == "greedy":
                # successes before the first failure, capped: a geometric draw minus one
                runs = rng.geometric(1.0 - alpha, size=length) - 1 if alpha > 0 else np.zeros(length, int)
                out.append(AcceptanceTrace(**common, mode="greedy", r=np.minimum(runs, k_max).tolist()))
            else:
                out.append(AcceptanceTrace(**common, mode="sampled", p=[alpha] * length))
    return out


def analytic_profile(
    target: str = "llama-70b",
    drafter_model: str | None = "llama-1b",
    gpu: str = "h100",
    tp: int | None = None,
    k_max: int = 8,
    reference_context: int = 1024,
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    alphas: dict[str | None, float] | None = None,
    ngram: bool = True,
    seed: int = 0,
) -> Profile:
    """A roofline profile for a named target (and draft model) on a named GPU."""
    tm = _lookup(MODELS, target, "model")
    g = _lookup(GPUS, gpu, "GPU")
    if tp is None:
        tp = 1
        while tm.params * 2 * 1.15 > g.memory * tp:
            tp *= 2
    if tp < 1:
        raise SpecsimError("tp must be >= 1")
    tr = Roofline(tm, g, tp)
    if tr.weight_bytes > 0.9 * g.memory * tp:
        raise SpecsimError(f"{target} does not fit on {tp} x {gpu}; raise --tp")
    ks = list(range(k_max + 1))
    step = [[tr.step_s(b * (k + 1), b * reference_context, b) * 1e3 for k in ks] for b in batch_sizes]
    ctx_ms = tr.kv_bytes_per_token / tr.bandwidth * 1e3
    pre_tokens = [16, 64, 256, 1024, 2048, 4096, 8192, 16384]
    pre_ms = [tr.step_s(p, p / 2, 1) * 1e3 for p in pre_tokens]
    kv_tokens = int((0.9 * g.memory * tp - tr.weight_bytes) / tr.kv_bytes_per_token)

    drafters: dict[str, DrafterSpec] = {}
    traces: list[AcceptanceTrace] = []
    if drafter_model is not None:
        dm = _lookup(MODELS, drafter_model, "model")
        dr = Roofline(dm, g, tp)
        dcost = [
            [k * dr.step_s(b, b * reference_context, b) * 1e3 for k in ks] for b in batch_sizes
        ]
        drafters["draft_model"] = DrafterSpec(
            method="draft_model", model=drafter_model, k_max=k_max,
            cost=CostTable(batch_sizes=list(batch_sizes), ks=ks, step_ms=dcost),
        )
        traces += synthetic_traces("draft_model", alphas or DEFAULT_ALPHA, k_max, seed=seed)
    if ngram:
        ncost = [[0.0 if k == 0 else 0.05 + 0.002 * b for k in ks] for b in batch_sizes]
        drafters["ngram"] = DrafterSpec(
            method="ngram", params={"prompt_lookup_min": 2, "prompt_lookup_max": 4}, k_max=k_max,
            cost=CostTable(batch_sizes=list(batch_sizes), ks=ks, step_ms=ncost),
        )
        traces += synthetic_traces("ngram", NGRAM_ALPHA, k_max, seed=seed + 1)
    meta = ProfileMetadata(
        source="analytic",
        hardware=f"{tp} x {g.name}",
        device="cuda",
        engine="roofline",
        target_model=target,
        dtype="bfloat16",
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        notes=f"Roofline estimate (bandwidth efficiency {BW_EFF:.0%}, compute efficiency {FLOP_EFF:.0%}); "
        "synthetic i.i.d. acceptance. Replace with a measured profile for decisions.",
        analytic={
            "target": asdict(tm), "drafter": drafter_model, "gpu": asdict(g), "tp": tp,
            "step_overhead_s": STEP_OVERHEAD_S, "alphas": alphas or DEFAULT_ALPHA,
        },
    )
    return Profile(
        metadata=meta,
        k_max=k_max,
        target=TargetCost(
            decode=DecodeCost(
                batch_sizes=list(batch_sizes), ks=ks, step_ms=step,
                reference_context=reference_context, context_ms_per_token=ctx_ms,
            ),
            prefill=PrefillCurve(tokens=pre_tokens, step_ms=pre_ms),
            kv_cache_tokens=max(kv_tokens, 16),
        ),
        drafters=drafters,
        acceptance=traces,
    )


def constant_profile(
    step_ms: float,
    draft_ratio: float,
    alpha: float,
    k_max: int = 8,
    prefill_ms: float = 0.0,
    trace_length: int = 4096,
    traces: int = 16,
    seed: int = 0,
    mode: str = "greedy",
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
) -> Profile:
    """A textbook profile: constant target step, drafter costing `draft_ratio` x step per token.

    Matches the assumptions of Leviathan et al.'s speedup formula; used in tests and by the tuner's
    analytic check.
    """
    ks = list(range(k_max + 1))
    flat = [[step_ms for _ in ks] for _ in batch_sizes]
    draft = [[k * draft_ratio * step_ms for k in ks] for _ in batch_sizes]
    pre = max(prefill_ms, 1e-9)
    return Profile(
        metadata=ProfileMetadata(source="analytic", hardware="textbook", engine="constant", target_model="any"),
        k_max=k_max,
        target=TargetCost(
            decode=DecodeCost(batch_sizes=list(batch_sizes), ks=ks, step_ms=flat, reference_context=0),
            prefill=PrefillCurve(tokens=[1, 1 << 20], step_ms=[pre, pre]),
        ),
        drafters={
            "draft": DrafterSpec(
                method="draft_model", model="draft", k_max=k_max,
                cost=CostTable(batch_sizes=list(batch_sizes), ks=ks, step_ms=draft),
            )
        },
        acceptance=synthetic_traces("draft", {None: alpha}, k_max, traces, trace_length, seed, mode),
    )


def best_static_k(alpha: float, c: float, k_max: int) -> int:
    """Analytic optimum of the Leviathan speedup (1 - a^(K+1)) / ((1 - a)(Kc + 1)) over 0..k_max."""
    def speedup(k: int) -> float:
        return (1 - alpha ** (k + 1)) / ((1 - alpha) * (k * c + 1))

    return max(range(k_max + 1), key=lambda k: (speedup(k), -k))


__all__ = ["GPUS", "MODELS", "analytic_profile", "best_static_k", "constant_profile", "synthetic_traces"]
