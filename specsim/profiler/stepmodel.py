"""Step-time model behind analytic profiles: a roofline, and the same roofline with fitted efficiency terms.

One forward pass of a model on `tp` GPUs that processes `tokens` new tokens, reads `kv_tokens`
cached tokens' keys and values, and does attention over `qc` (query, context) pairs:

Uncalibrated (the original `profile-analytic`, kept behind `--uncalibrated`):
    max(weight bytes / (0.8 x bandwidth), 2 x active params x tokens / (0.6 x peak))
    + KV bytes / (0.8 x bandwidth) + 16 us per layer for tensor parallelism
    + 1.5 ms per step + 4 us per sequence.

Calibrated (each term is a `Calibration` field, fitted by `specsim.profiler.calibrate`):
    memory    = weight bytes touched / (bw_eff x bandwidth) + KV bytes / (attn_eff x bandwidth)
    compute   = (2 x active params x tokens + 4 x layers x heads x head_dim x qc) / (peak x eff(tokens)),
                eff(T) = flop_eff x T / (T + tokens_half)            [tensor cores idle on thin matmuls]
                (x lowp_flop_scale for FP8/FP4 weights on GPUs with FP8/FP4 tensor cores)
    gemm      = (memory^p + compute^p)^(1/p), p = overlap_p         [a smooth roofline: near the ridge
                                                                    neither term hides the other]
    forward   = gemm + layers x layer_us                            [launch and tail of each layer's kernels:
                                                                    why small models reach a lower fraction
                                                                    of peak bandwidth than large ones]
              + layers x moe_layer_us (mixture-of-experts models only)
              + 2 x layers x (allreduce_us + 2 (tp-1)/tp x tokens x hidden x 2 B / (0.8 x link))  if tp > 1
    target step = forward + step_us[engine] + seq_us x sequences + spec_us if K > 0
                                                                    [scheduler, sampler, rejection sampler]
    draft model = K x (forward of the draft model at the target's tp + draft_fwd_us)
    EAGLE / MTP = K x (forward of one target layer + LM head + head_fwd_us)

Mixture-of-experts weights count only the experts the step's tokens touch (`ModelSpec.expert_coverage`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from specsim.errors import SpecsimError
from specsim.profiler.hardware import DTYPE_BYTES, GpuSpec, ModelSpec, weight_bytes_per_param

FIT_PATH = Path(__file__).with_name("calibration_fit.json")

# The original roofline's constants (uncalibrated mode).
BW_EFF, FLOP_EFF = 0.8, 0.6
STEP_OVERHEAD_S = 1.5e-3
PER_SEQ_OVERHEAD_S = 4e-6
TP_LAYER_S = 8e-6
LINK_EFF = 0.8
"""Achieved fraction of the link bandwidth in an all-reduce (assumed, not fitted: no public data isolates it)."""
ACT_BYTES = 2
NGRAM_MS = (0.05, 0.002)
"""n-gram proposer (CPU, per step): 50 us plus 2 us per sequence. Assumed, not fitted: SpecDecode-Bench
(arXiv 2601.11580) reports the n-gram drafting share as negligible, and no source times it alone."""


@dataclass(frozen=True)
class Calibration:
    """Efficiency terms of the calibrated step model (see the module docstring for where each enters)."""

    bw_eff: float = 0.8
    """Achieved fraction of peak HBM bandwidth when streaming large weight matrices."""
    layer_us: float = 0.0
    """Fixed time per transformer layer per forward pass (kernel launches and tails), microseconds."""
    flop_eff: float = 0.6
    """Asymptotic achieved fraction of the dense tensor-core peak for large token counts."""
    tokens_half: float = 0.0
    """Tokens in the step at which matmul efficiency is half of flop_eff."""
    overlap_p: float = 50.0
    """Exponent of the smooth max of memory and compute time (large: a hard roofline)."""
    attn_eff: float = 0.8
    """Achieved fraction of peak HBM bandwidth when attention reads the (paged) KV cache."""
    step_us: dict[str, float] = field(default_factory=lambda: {"vllm": 1500.0})
    """Fixed overhead per engine step (scheduling, input preparation, sampling, launch), by engine."""
    seq_us: float = 0.0
    """Overhead per sequence in the step (sampler, detokenisation, bookkeeping), microseconds."""
    spec_us: float = 0.0
    """Extra fixed overhead of a speculative step (rejection sampler, draft bookkeeping), microseconds."""
    draft_fwd_us: float = 0.0
    """Fixed overhead of each sequential draft-model forward pass, microseconds."""
    head_fwd_us: float = 0.0
    """Fixed overhead of each EAGLE/MTP head forward pass, microseconds."""
    allreduce_us: float = 0.0
    """Latency of one tensor-parallel all-reduce (two per layer), microseconds."""
    lowp_flop_scale: float = 1.0
    """Multiplies flop_eff for FP8/FP4 weights: low-precision tensor peaks are reached less often."""
    moe_layer_us: float = 0.0
    """Extra fixed time per mixture-of-experts layer (router, top-k, token permutation, many small
    expert matmuls), microseconds."""

    def overhead_s(self, engine: str) -> float:
        if engine not in self.step_us:
            raise SpecsimError(f"no calibrated step overhead for engine {engine!r} (known: {', '.join(self.step_us)})")
        return self.step_us[engine] * 1e-6

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@lru_cache(maxsize=1)
def committed_fit() -> dict:
    """The committed fit: fitted constants and the validation summary (calibration_fit.json)."""
    try:
        return json.loads(FIT_PATH.read_text())
    except (OSError, ValueError) as e:
        raise SpecsimError(f"cannot read the committed calibration {FIT_PATH}: {e}") from None


def committed_calibration() -> Calibration:
    return Calibration.from_dict(committed_fit()["params"])


@dataclass(frozen=True)
class Deployment:
    """A model on `tp` GPUs with a weight dtype (and KV-cache dtype)."""

    model: ModelSpec
    gpu: GpuSpec
    tp: int = 1
    dtype: str = "bf16"
    kv_dtype: str = "bf16"

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise SpecsimError("tp must be >= 1")
        weight_bytes_per_param(self.dtype)
        if self.kv_dtype not in DTYPE_BYTES:
            raise SpecsimError(f"unknown KV-cache dtype {self.kv_dtype!r}")

    def weight_bytes(self, tokens: float = 1e9) -> float:
        """Bytes of weights a step over `tokens` tokens reads, all GPUs together."""
        dense_b, expert_b = weight_bytes_per_param(self.dtype)
        m = self.model
        return m.dense_params * dense_b + m.expert_params * expert_b * m.expert_coverage(tokens)

    @property
    def kv_bytes_per_token(self) -> float:
        m = self.model
        return 2 * m.layers * m.kv_heads * m.head_dim * DTYPE_BYTES[self.kv_dtype]

    @property
    def peak(self) -> float:
        return self.gpu.peak(self.dtype)

    def comm_s(self, tokens: float, latency_s: float) -> float:
        """Two all-reduces per layer of `tokens` x hidden activations (ring: 2 (tp-1)/tp of the bytes)."""
        if self.tp == 1:
            return 0.0
        link = self.gpu.link * LINK_EFF
        size = 2 * (self.tp - 1) / self.tp * tokens * self.model.hidden * ACT_BYTES
        return 2 * self.model.layers * (latency_s + (size / link if link > 0 else 0.0))


def forward_s(dep: Deployment, cal: Calibration, tokens: float, kv_tokens: float, qc: float,
              layers: float | None = None, weights: float | None = None) -> float:
    """Calibrated time of one forward pass (no per-step engine overhead).

    `layers`/`weights` override the model's layer count and weight bytes (an EAGLE head is one layer).
    """
    m = dep.model
    n_layers = m.layers if layers is None else layers
    frac = n_layers / m.layers
    w = dep.weight_bytes(tokens) if weights is None else weights
    bw = dep.gpu.bandwidth * cal.bw_eff
    kv_shards = min(dep.tp, m.kv_heads)
    kv_bw = dep.gpu.bandwidth * cal.attn_eff
    mem = w / dep.tp / bw + dep.kv_bytes_per_token * frac * kv_tokens / kv_shards / kv_bw
    active = m.active_params if weights is None else w / weight_bytes_per_param(dep.dtype)[0]
    flops = 2 * active * tokens + 4 * n_layers * m.query_heads * m.head_dim * qc
    eff = cal.flop_eff * tokens / (tokens + cal.tokens_half)
    if dep.dtype in ("fp8", "fp4") and dep.peak > dep.gpu.peak_flops:
        eff *= cal.lowp_flop_scale
    comp = flops / dep.tp / (dep.peak * eff)
    p = cal.overlap_p
    hi = max(mem, comp)
    gemm = hi * ((mem / hi) ** p + (comp / hi) ** p) ** (1.0 / p)
    comm = dep.comm_s(tokens, cal.allreduce_us * 1e-6) * frac
    fixed = n_layers * (cal.layer_us + (cal.moe_layer_us if m.experts else 0.0)) * 1e-6
    return gemm + fixed + comm


def roofline_forward_s(dep: Deployment, tokens: float, kv_tokens: float,
                       layers: float | None = None, weights: float | None = None) -> float:
    """The original roofline forward (no per-step overhead): max(weights, FLOPs) + KV reads + TP latency."""
    m = dep.model
    n_layers = m.layers if layers is None else layers
    w = dep.weight_bytes(tokens) if weights is None else weights
    active = m.active_params if weights is None else w / weight_bytes_per_param(dep.dtype)[0]
    bw = dep.gpu.bandwidth * BW_EFF * dep.tp
    compute = 2 * active * tokens / (dep.peak * FLOP_EFF * dep.tp)
    kv = dep.kv_bytes_per_token * (n_layers / m.layers) * kv_tokens / bw
    comm = 2 * n_layers * TP_LAYER_S if dep.tp > 1 else 0.0
    return max(w / bw, compute) + kv + comm


class StepModel:
    """Step times (seconds) of a target deployment and its drafters; `cal=None` is the plain roofline."""

    def __init__(self, target: Deployment, cal: Calibration | None, engine: str = "vllm") -> None:
        self.target = target
        self.cal = cal
        self.engine = engine
        if cal is not None:
            cal.overhead_s(engine)

    @property
    def calibrated(self) -> bool:
        return self.cal is not None

    def _overhead(self, seqs: float) -> float:
        if self.cal is None:
            return STEP_OVERHEAD_S + PER_SEQ_OVERHEAD_S * seqs
        return self.cal.overhead_s(self.engine) + self.cal.seq_us * 1e-6 * seqs

    def _forward(self, dep: Deployment, tokens: float, kv_tokens: float, qc: float,
                 layers: float | None = None, weights: float | None = None) -> float:
        if self.cal is None:
            return roofline_forward_s(dep, tokens, kv_tokens, layers, weights)
        return forward_s(dep, self.cal, tokens, kv_tokens, qc, layers, weights)

    def decode_s(self, batch: float, k: int, context: float, prefill_tokens: float = 0.0,
                 prompt_len: float = 0.0) -> float:
        """Target step: `batch` sequences verifying K+1 tokens each at mean context `context` tokens,
        plus `prefill_tokens` of prompts of length `prompt_len` chunked into the same step."""
        t = batch * (k + 1)
        kv = batch * context + prefill_tokens / 2  # a chunk reads, on average, half its prompt's KV
        qc = t * context + prefill_tokens * prompt_len / 2
        step = self._forward(self.target, t + prefill_tokens, kv, qc) + self._overhead(batch)
        if k > 0 and self.cal is not None:
            step += self.cal.spec_us * 1e-6
        return step

    def prefill_s(self, tokens: float) -> float:
        """A prefill-only step over one prompt of `tokens` tokens."""
        return self.prefill_batch_s(1, tokens)

    def prefill_batch_s(self, batch: float, tokens: float) -> float:
        """Prefill of `batch` prompts of `tokens` tokens each (one pass; chunking changes little once
        the step is compute-bound)."""
        n = batch * tokens
        return self._forward(self.target, n, n / 2, n * tokens / 2) + self._overhead(batch)

    def draft_model_s(self, draft: ModelSpec, batch: float, k: int, context: float) -> float:
        """K sequential forwards of a draft model (same GPUs and tp as the target) over `batch` sequences."""
        if k <= 0:
            return 0.0
        dep = Deployment(draft, self.target.gpu, self.target.tp, self.target.dtype, self.target.kv_dtype)
        one = self._forward(dep, batch, batch * context, batch * context)
        one += STEP_OVERHEAD_S + PER_SEQ_OVERHEAD_S * batch if self.cal is None else self.cal.draft_fwd_us * 1e-6
        return k * one

    def head_s(self, batch: float, k: int, context: float) -> float:
        """K sequential forwards of an EAGLE/MTP head (one target-sized layer plus the LM head)."""
        if k <= 0:
            return 0.0
        dep = self.target
        m = dep.model
        weights = m.head_params() * weight_bytes_per_param(dep.dtype)[0]
        one = self._forward(dep, batch, batch * context, batch * context, layers=1, weights=weights)
        one += STEP_OVERHEAD_S + PER_SEQ_OVERHEAD_S * batch if self.cal is None else self.cal.head_fwd_us * 1e-6
        return k * one

    def heads_s(self, batch: float, heads: int) -> float:
        """Medusa-style heads: every head (a residual block and its own LM head, on the target's last
        hidden state) evaluated in one pass over `batch` sequences, whatever K the step uses; no KV."""
        if heads <= 0:
            return 0.0
        m = self.target.model
        params = heads * (m.hidden * m.hidden + m.vocab * m.hidden)
        weights = params * weight_bytes_per_param(self.target.dtype)[0]
        one = self._forward(self.target, batch, 0.0, 0.0, layers=0, weights=weights)
        return one + (STEP_OVERHEAD_S + PER_SEQ_OVERHEAD_S * batch if self.cal is None else self.cal.head_fwd_us * 1e-6)

    def parallel_s(self, batch: float, k: int, context: float, layers: int = 1) -> float:
        """Parallel drafting (P-EAGLE) and block drafting (DFlash-style): one pass of a `layers`-layer
        drafter of the target's width, with its LM head, proposes all K tokens of `batch` sequences."""
        if k <= 0:
            return 0.0
        dep = self.target
        m = dep.model
        layer = m.head_params() - 2 * m.hidden * m.hidden - m.vocab * m.hidden
        params = layers * layer + 2 * m.hidden * m.hidden + m.vocab * m.hidden
        weights = params * weight_bytes_per_param(dep.dtype)[0]
        one = self._forward(dep, batch * k, batch * context, batch * k * context, layers=layers, weights=weights)
        return one + (STEP_OVERHEAD_S + PER_SEQ_OVERHEAD_S * batch if self.cal is None else self.cal.head_fwd_us * 1e-6)

    def tree_draft_s(self, batch: float, depth: int, width: int, context: float) -> float:
        """Drafting a tree with an EAGLE-style head: `depth` sequential head passes, each expanding
        `width` candidate tokens per sequence (EAGLE-2's top-k)."""
        if depth <= 0:
            return 0.0
        dep = self.target
        weights = dep.model.head_params() * weight_bytes_per_param(dep.dtype)[0]
        one = self._forward(dep, batch * width, batch * context, batch * width * context, layers=1, weights=weights)
        one += STEP_OVERHEAD_S + PER_SEQ_OVERHEAD_S * batch if self.cal is None else self.cal.head_fwd_us * 1e-6
        return depth * one

    @staticmethod
    def ngram_s(batch: float, k: int) -> float:
        return 0.0 if k <= 0 else (NGRAM_MS[0] + NGRAM_MS[1] * batch) / 1e3

    def drafter_s(self, kind: str, batch: float, k: int, context: float, draft: ModelSpec | None = None) -> float:
        if kind == "draft_model":
            if draft is None:
                raise SpecsimError("a draft_model drafter needs its model")
            return self.draft_model_s(draft, batch, k, context)
        if kind in ("eagle", "eagle3", "mtp"):
            return self.head_s(batch, k, context)
        if kind == "ngram":
            return self.ngram_s(batch, k)
        if kind == "heads":
            return self.heads_s(batch, k) if k > 0 else 0.0
        if kind in ("parallel", "block"):
            return self.parallel_s(batch, k, context)
        raise SpecsimError(f"unknown drafter kind {kind!r} (known: block, draft_model, eagle, eagle3, heads, mtp, "
                           "ngram, parallel)")


__all__ = ["BW_EFF", "FLOP_EFF", "STEP_OVERHEAD_S", "Calibration", "Deployment", "StepModel", "committed_calibration",
           "committed_fit", "forward_s", "roofline_forward_s"]
