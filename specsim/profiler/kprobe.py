"""A vLLM `custom_class` proposer for profiling: any K, changed between steps without a restart.

One engine with `num_speculative_tokens = K_max` measures every K: the profiler writes
{"k": K, "mode": "forced" | "ngram", "min": 2, "max": 4} to the file named by
$SPECSIM_KPROBE_FILE and the proposer reads it before each proposal (only when the file changed).
"forced" drafts exactly K tokens for every request that sampled (the last token repeated: the
step's verification cost is what is measured, not acceptance); "ngram" delegates to vLLM's own
n-gram proposer with that K and lookup range, so served-traffic runs draft as n-gram does. A
compiled engine starts in minutes on this CPU; this is how the profile covers K = 0..K_max with
one start. Loaded as `{"method": "custom_class", "model": "specsim.profiler.kprobe.KProbeProposer",
"num_speculative_tokens": K_MAX}`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV = "SPECSIM_KPROBE_FILE"
PROPOSER = "specsim.profiler.kprobe.KProbeProposer"


def set_probe(path: str | os.PathLike[str], k: int, mode: str = "forced", lookup: tuple[int, int] = (2, 4)) -> None:
    """Tell a running KProbeProposer what to propose from its next step on (atomic replace)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps({"k": int(k), "mode": mode, "min": lookup[0], "max": lookup[1]}))
    os.replace(tmp, p)


class KProbeProposer:
    """custom_class proposer whose K and mode come from $SPECSIM_KPROBE_FILE (see module doc)."""

    def __init__(self, vllm_config: Any) -> None:
        path = os.environ.get(ENV)
        if not path:
            raise RuntimeError(f"{ENV} is not set: the KProbeProposer is for `specsim profile` only")
        from vllm.v1.spec_decode.ngram_proposer import NgramProposer

        self.path = path
        self.k_max = int(vllm_config.speculative_config.num_speculative_tokens)
        self.ngram = NgramProposer(vllm_config)
        self._stamp: float | None = None
        self.k = 0
        self.mode = "forced"
        self._read()

    def _read(self) -> None:
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except OSError:
            return
        if stamp == self._stamp:
            return
        try:
            cfg = json.loads(Path(self.path).read_text())
        except (OSError, ValueError):
            return  # half-written: keep the last setting, read again next step
        self._stamp = stamp
        self.k = max(0, min(int(cfg.get("k", 0)), self.k_max))
        self.mode = str(cfg.get("mode", "forced"))
        self.ngram.min_n = int(cfg.get("min", 2))
        self.ngram.max_n = int(cfg.get("max", 4))

    def propose(self, sampled_token_ids: list[list[int]], num_tokens_no_spec: Any, token_ids_cpu: Any,
                slot_mappings: Any = None) -> list[list[int]]:
        self._read()
        if self.k == 0:
            return [[] for _ in sampled_token_ids]
        if self.mode == "ngram":
            return self.ngram.propose(self.k, sampled_token_ids, num_tokens_no_spec, token_ids_cpu)
        return [[int(ids[-1])] * self.k if ids else [] for ids in sampled_token_ids]

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        pass
