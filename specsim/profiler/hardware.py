"""Model and accelerator figures for the analytic cost model, with where each number comes from.

Models: parameter counts and shapes from the models' published configurations (Hugging Face
`config.json` of each checkpoint). Mixture-of-experts models also carry their expert count, the
experts each token is routed to, and the parameters that live in experts, so a step can count the
bytes of the experts it actually touches and the FLOPs of the active parameters only.

GPUs: peak HBM bandwidth, dense (no sparsity) tensor-core peaks and the per-direction GPU-to-GPU
link bandwidth, from the vendors' datasheets (`source` of each entry).
"""

from __future__ import annotations

from dataclasses import dataclass

from specsim.errors import SpecsimError


@dataclass(frozen=True)
class ModelSpec:
    """Transformer size figures that set its costs (parameters count every weight, embeddings included)."""

    params: float
    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    heads: int = 0
    """Query heads (0: hidden / head_dim)."""
    vocab: int = 128256
    tied_embeddings: bool = False
    experts: int = 0
    """Routed experts per MoE layer (0: dense model)."""
    experts_per_token: int = 0
    expert_params: float = 0.0
    """Parameters that live in routed experts, all layers together."""

    @property
    def query_heads(self) -> int:
        return self.heads or self.hidden // self.head_dim

    @property
    def dense_params(self) -> float:
        """Parameters every token uses (attention, embeddings, shared MLPs)."""
        return self.params - self.expert_params

    @property
    def active_params(self) -> float:
        """Parameters one token multiplies through (FLOPs per token = 2 x this)."""
        if not self.experts:
            return self.params
        return self.dense_params + self.expert_params * self.experts_per_token / self.experts

    def expert_coverage(self, tokens: float) -> float:
        """Expected fraction of a layer's experts that `tokens` independently routed tokens touch.

        E(1 - (1 - k/E)^T) distinct experts of E: for GPT-OSS-120B (E=128, k=4) at 64 tokens this is
        111, the figure SemiAnalysisAI/InferenceX PR #1061 reports ("111/128 unique experts").
        """
        if not self.experts:
            return 1.0
        return 1.0 - (1.0 - self.experts_per_token / self.experts) ** max(tokens, 1.0)

    def head_params(self) -> float:
        """An EAGLE/MTP head: one decoder layer of this model, a 2h x h input projection, the LM head."""
        embed = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        layer = (self.active_params - embed) / self.layers
        return layer + 2 * self.hidden * self.hidden + self.vocab * self.hidden


@dataclass(frozen=True)
class GpuSpec:
    """Accelerator figures: memory bandwidth (B/s), dense bf16 peak (FLOP/s), memory (bytes)."""

    name: str
    bandwidth: float
    peak_flops: float
    memory: float
    peak_fp8: float = 0.0
    """Dense FP8 tensor peak (0: no FP8 tensor cores, FP8 weights run at the bf16 peak)."""
    peak_fp4: float = 0.0
    link: float = 0.0
    """GPU-to-GPU bandwidth per direction (B/s) that a tensor-parallel all-reduce uses."""
    source: str = ""

    def peak(self, dtype: str) -> float:
        """Dense matmul peak for weights of `dtype` (weight-only int8/mxfp4 run at the bf16 peak)."""
        if dtype == "fp4" and self.peak_fp4:
            return self.peak_fp4
        if dtype in ("fp8", "fp4") and self.peak_fp8:
            return self.peak_fp8
        return self.peak_flops


DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "fp4": 0.5625, "mxfp4": 0.53125}
"""Bytes per weight. fp4 is NVFP4 (4 bits plus an FP8 scale per 16); mxfp4 is OCP MXFP4 (4 bits plus
an 8-bit scale per 32) and applies to expert weights only, the rest stays bf16 (GPT-OSS checkpoints)."""

_LLAMA70 = ModelSpec(70.6e9, 80, 8, 128, 8192, heads=64)
_LLAMA8 = ModelSpec(8.03e9, 32, 8, 128, 4096)
_LLAMA3 = ModelSpec(3.21e9, 28, 8, 128, 3072, heads=24, tied_embeddings=True)
_LLAMA1 = ModelSpec(1.24e9, 16, 8, 64, 2048, heads=32, tied_embeddings=True)

MODELS: dict[str, ModelSpec] = {
    "llama-70b": _LLAMA70,
    "llama-8b": _LLAMA8,
    "llama-3b": _LLAMA3,
    "llama-1b": _LLAMA1,
    "llama-2-7b": ModelSpec(6.74e9, 32, 32, 128, 4096, vocab=32000),
    "llama-2-70b": ModelSpec(68.98e9, 80, 8, 128, 8192, heads=64, vocab=32000),
    "qwen-7b": ModelSpec(7.6e9, 28, 4, 128, 3584, heads=28, vocab=152064),
    "qwen-0.5b": ModelSpec(0.49e9, 24, 2, 64, 896, heads=14, vocab=151936, tied_embeddings=True),
    "qwen3-8b": ModelSpec(8.19e9, 36, 8, 128, 4096, heads=32, vocab=151936),
    "qwen3-0.6b": ModelSpec(0.60e9, 28, 8, 128, 1024, heads=16, vocab=151936, tied_embeddings=True),
    "qwen3-30b-a3b": ModelSpec(30.5e9, 48, 4, 128, 2048, heads=32, vocab=151936,
                               experts=128, experts_per_token=8, expert_params=28.99e9),
    "mixtral-8x7b": ModelSpec(46.7e9, 32, 8, 128, 4096, vocab=32000,
                              experts=8, experts_per_token=2, expert_params=45.10e9),
    "gpt-oss-120b": ModelSpec(116.8e9, 36, 8, 64, 2880, heads=64, vocab=201088,
                              experts=128, experts_per_token=4, expert_params=114.66e9),
    "smollm2-135m": ModelSpec(0.135e9, 30, 3, 64, 576, heads=9, vocab=49152, tied_embeddings=True),
}
MODEL_ALIASES: dict[str, str] = {
    "llama-3.1-70b": "llama-70b", "llama-3.3-70b": "llama-70b", "llama-3-70b": "llama-70b",
    "llama-3.1-8b": "llama-8b", "llama-3-8b": "llama-8b",
    "llama-3.2-3b": "llama-3b", "llama-3.2-1b": "llama-1b",
    "qwen2.5-7b": "qwen-7b", "qwen2.5-0.5b": "qwen-0.5b",
}

GPUS: dict[str, GpuSpec] = {
    "h100": GpuSpec("NVIDIA H100 SXM 80GB", 3.35e12, 989e12, 80e9, peak_fp8=1979e12, link=450e9,
                    source="https://www.nvidia.com/en-us/data-center/h100/ (SXM: 3.35 TB/s, BF16 1,979 TFLOPS "
                    "and FP8 3,958 TFLOPS with sparsity, halved for dense; NVLink 900 GB/s both directions)"),
    "h200": GpuSpec("NVIDIA H200 SXM 141GB", 4.8e12, 989e12, 141e9, peak_fp8=1979e12, link=450e9,
                    source="https://www.nvidia.com/en-us/data-center/h200/ (4.8 TB/s, 141 GB, H100 compute; "
                    "NVLink 900 GB/s)"),
    "b200": GpuSpec("NVIDIA B200 (HGX) 180GB", 8.0e12, 2250e12, 180e9, peak_fp8=4500e12, peak_fp4=9000e12,
                    link=900e9,
                    source="https://www.nvidia.com/en-us/data-center/hgx/ (HGX B200 per GPU: 8 TB/s, 180 GB, "
                    "dense BF16 2.25 / FP8 4.5 / FP4 9 PFLOPS; NVLink 5 1.8 TB/s both directions)"),
    "a100": GpuSpec("NVIDIA A100 SXM 80GB", 2.039e12, 312e12, 80e9, link=300e9,
                    source="https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
                    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (80GB SXM: 2,039 GB/s, BF16 312 TFLOPS "
                    "dense, NVLink 600 GB/s both directions; no FP8)"),
    "l4": GpuSpec("NVIDIA L4 24GB", 0.3e12, 121e12, 24e9, peak_fp8=242e12, link=32e9,
                  source="https://www.nvidia.com/en-us/data-center/l4/ (300 GB/s, 24 GB, BF16 242 and FP8 485 "
                  "TFLOPS with sparsity; PCIe Gen4 x16, 64 GB/s both directions, no NVLink)"),
    "mi300x": GpuSpec("AMD Instinct MI300X 192GB", 5.3e12, 1307.4e12, 192e9, peak_fp8=2614.9e12, link=448e9,
                      source="https://www.amd.com/en/products/accelerators/instinct/mi300/mi300x.html (5.3 TB/s, "
                      "192 GB HBM3, dense BF16 1,307.4 / FP8 2,614.9 TFLOPS; Infinity Fabric 896 GB/s aggregate "
                      "both directions)"),
}


def lookup_model(name: str) -> ModelSpec:
    key = MODEL_ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        known = ", ".join(sorted([*MODELS, *MODEL_ALIASES]))
        raise SpecsimError(f"unknown model {name!r} (known: {known})")
    return MODELS[key]


def lookup_gpu(name: str) -> GpuSpec:
    key = name.lower()
    if key not in GPUS:
        raise SpecsimError(f"unknown GPU {name!r} (known: {', '.join(sorted(GPUS))})")
    return GPUS[key]


def weight_bytes_per_param(dtype: str) -> tuple[float, float]:
    """(bytes per dense weight, bytes per expert weight) for a weight dtype."""
    if dtype not in DTYPE_BYTES:
        raise SpecsimError(f"unknown dtype {dtype!r} (known: {', '.join(sorted(DTYPE_BYTES))})")
    if dtype == "mxfp4":
        return DTYPE_BYTES["bf16"], DTYPE_BYTES["mxfp4"]
    return DTYPE_BYTES[dtype], DTYPE_BYTES[dtype]


__all__ = ["DTYPE_BYTES", "GPUS", "MODELS", "MODEL_ALIASES", "GpuSpec", "ModelSpec", "lookup_gpu", "lookup_model",
           "weight_bytes_per_param"]
