"""Regenerate small-checkpoint.jsonl: a tiny real profiling run's checkpoint (vLLM on this machine, a few
minutes), which tests/profiler/test_assemble_checkpoint.py assembles in milliseconds without vLLM.

    python tests/profiler/data/make_small_checkpoint.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

from specsim.profiler.checkpoint import checkpoint_path
from specsim.profiler.plan import MeasurePlan
from specsim.profiler.run import ProfileConfig, Profiler

HERE = Path(__file__).resolve().parent


def main() -> None:
    plan = MeasurePlan(decode=[(1, 32), (4, 32), (2, 96)], decode_heldout=[(3, 32)], ks=[0, 1, 2], steps_per_k=4,
                       prefill=[16, 128], prefill_heldout=[64], mixed=[(2, 64)], mixed_heldout=[], mixed_ks=[0, 2],
                       cached_prefill=[(256, 32), (128, 96)], cached_prefill_heldout=[(256, 64)],
                       served_rates=[6.0], served_heldout=[], served_requests=6, served_max_tokens=16,
                       probe_starts=0, probe=[(1, 32)])
    cfg = ProfileConfig(model="default", drafters=["ngram", "ngram:min=3,max=6"], prompts="builtin", num_prompts=4,
                        crosscheck_prompts=4, max_tokens=24, k_max=2, plan=plan, compiled=False, max_num_seqs=8,
                        max_num_batched_tokens=256)
    work = Path("/tmp/specsim-small-checkpoint/small.json")
    work.parent.mkdir(parents=True, exist_ok=True)
    Profiler(cfg, work, resume=False).run()
    dest = HERE / "small-checkpoint.jsonl"
    shutil.copyfile(checkpoint_path(work), dest)
    print(f"wrote {dest} ({dest.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
