"""Drafters of a target's shapes, as config.json alone: what `profile --costs-only` measures without weights.

A step's cost depends on a drafter's shapes, never on its weights, and vLLM builds any model from its
config.json with `load_format="dummy"`. So the cost grid of an EAGLE-3 head or a draft model can be
measured before the drafter is trained or downloaded: write its config here, then
`specsim profile --drafter eagle3:DIR --costs-only`.

- `eagle3`: vLLM's own EAGLE-3 layout (`architectures: ["LlamaForCausalLMEagle3"]`,
  vllm/model_executor/models/llama_eagle3.py): `layers` decoder layers of the target's width fed
  with three of the target's hidden states, the full vocabulary (`draft_vocab_size` = vocab).
- `draft_model`: the target's own architecture with `layers` decoder layers (a small model of the
  same family and vocabulary).

The tokenizer files are copied beside the config (vLLM loads a tokenizer from the folder when asked).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from specsim.errors import SpecsimError

SHAPE_METHODS = ("eagle3", "draft_model")
MARKER = "specsim-drafter-shape.json"
"""Written into every folder made here: the folder holds shapes, no weights."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "generation_config.json")
COPIED_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
               "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
               "rope_parameters", "vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype",
               "dtype", "attention_bias", "mlp_bias")


def target_config(target: Path) -> dict[str, Any]:
    """The target's config.json (one-line error when missing or not a Llama-style decoder)."""
    cfg = target / "config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpecsimError(f"cannot read the target's config {cfg}: {exc}") from None
    if not isinstance(data, dict) or "hidden_size" not in data or "num_hidden_layers" not in data:
        raise SpecsimError(f"{cfg} is not a decoder model's config (no hidden_size / num_hidden_layers)")
    return data


def shape_config(target_cfg: dict[str, Any], method: str, layers: int) -> dict[str, Any]:
    """config.json of a `method` drafter with `layers` decoder layers, of the target's shapes."""
    total = int(target_cfg["num_hidden_layers"])
    if method not in SHAPE_METHODS:
        raise SpecsimError(f"no drafter shape for method {method!r} (choose from {', '.join(SHAPE_METHODS)})")
    if not 1 <= layers <= max(1, total - 1) and method == "draft_model":
        raise SpecsimError(f"a draft model of a {total}-layer target keeps 1..{total - 1} layers, got {layers}")
    if not 1 <= layers <= 8 and method == "eagle3":
        raise SpecsimError(f"an EAGLE-3 head has 1..8 layers, got {layers}")
    if method == "draft_model":
        cfg = dict(target_cfg)
        cfg["num_hidden_layers"] = layers
        if isinstance(cfg.get("layer_types"), list):
            cfg["layer_types"] = cfg["layer_types"][:layers]
        return cfg
    cfg = {k: target_cfg[k] for k in COPIED_KEYS if k in target_cfg}
    cfg.update({
        "architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "num_hidden_layers": layers,
        "draft_vocab_size": int(target_cfg["vocab_size"]), "target_hidden_size": int(target_cfg["hidden_size"]),
        "tie_word_embeddings": False,
    })
    return cfg


def write_shape_folder(target: Path, method: str, layers: int, out: Path) -> Path:
    """A folder holding the drafter's config.json (and the target's tokenizer files), written atomically;
    an existing folder made here for the same shapes is reused."""
    cfg = shape_config(target_config(target), method, layers)
    marker = {"method": method, "layers": layers, "target": str(target), "weights": False}
    if (out / MARKER).is_file():
        try:
            if json.loads((out / MARKER).read_text(encoding="utf-8")) == marker:
                return out
        except (OSError, ValueError):
            pass
        shutil.rmtree(out)
    elif out.exists():
        raise SpecsimError(f"{out} exists and was not made by specsim: choose another folder")
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
        for name in TOKENIZER_FILES:
            if (target / name).is_file():
                shutil.copy2(target / name, tmp / name)
        (tmp / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def is_shape_folder(path: Path) -> bool:
    """True for a folder holding a drafter's config.json without weights (made here or by hand)."""
    return (path / "config.json").is_file() and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin"))
