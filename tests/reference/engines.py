"""Other engines' own adaptive-speculation code, loaded from their installed packages for the tests
to check specsim against (the way vLLM's scheduler is driven in the parity tests).

SGLang 0.5.23 is installed without its dependencies (`make install`): its serving stack needs CUDA,
but `sglang/srt/speculative/adaptive_spec_params.py` is plain Python once its four imports (logging,
server-args views, the algorithm enum) are stood in for; nothing of the update rule is replaced.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SGLANG_VERSION = "0.5.23"


def _sglang_root() -> Path | None:
    spec = importlib.util.find_spec("sglang")  # finds the package without importing it
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def sglang_version() -> str | None:
    root = _sglang_root()
    if root is None or not (root / "_version.py").exists():
        return None
    ns: dict[str, Any] = {}
    exec((root / "_version.py").read_text(), ns)  # noqa: S102 - a version file of two assignments
    return str(ns.get("__version__"))


@contextmanager
def _stand_ins() -> Iterator[None]:
    """The modules adaptive_spec_params imports, for the duration of its import only."""
    stubs = {
        "sglang": types.ModuleType("sglang"),
        "sglang.srt": types.ModuleType("sglang.srt"),
        "sglang.srt.arg_groups": types.ModuleType("sglang.srt.arg_groups"),
        "sglang.srt.arg_groups.overrides": types.ModuleType("sglang.srt.arg_groups.overrides"),
        "sglang.srt.runtime_context": types.ModuleType("sglang.srt.runtime_context"),
        "sglang.srt.speculative": types.ModuleType("sglang.srt.speculative"),
        "sglang.srt.speculative.spec_info": types.ModuleType("sglang.srt.speculative.spec_info"),
        "sglang.srt.utils": types.ModuleType("sglang.srt.utils"),
    }
    stubs["sglang.srt.arg_groups.overrides"].resolved_view = lambda a: a  # type: ignore[attr-defined]
    stubs["sglang.srt.arg_groups.overrides"].resolving_view = lambda a: a  # type: ignore[attr-defined]
    stubs["sglang.srt.runtime_context"].attn_dp_enabled_of = lambda a: False  # type: ignore[attr-defined]
    stubs["sglang.srt.speculative.spec_info"].SpeculativeAlgorithm = object  # type: ignore[attr-defined]
    stubs["sglang.srt.utils"].log_info_on_rank0 = lambda logger, msg: None  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def sglang_adaptive() -> types.ModuleType | None:
    """SGLang's `adaptive_spec_params` module (AdaptiveSpeculativeParams, AdaptiveStepSlot,
    DEFAULT_ADAPTIVE_CONFIG), or None where SGLang 0.5.23 is not installed."""
    root = _sglang_root()
    path = None if root is None else root / "srt" / "speculative" / "adaptive_spec_params.py"
    if path is None or not path.exists() or sglang_version() != SGLANG_VERSION:
        return None
    with _stand_ins():
        spec = importlib.util.spec_from_file_location("sglang_adaptive_spec_params", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return mod
