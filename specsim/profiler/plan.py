"""What a profiling run measures: the workloads of each engine, and which of them are held out.

Every workload runs through vLLM's own engine loop with the recording scheduler, so the fit sees
steps exactly as the engine forms them when serving: pure decode (B requests side by side, K
cycled 0..K_max in one run), prefill alone, steps that mix a prefill chunk with decode rows, and
open-loop traffic of real prompts at several loads. Held-out workloads are measured but not
fitted; the profile reports the model's error on them, by kind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class MeasurePlan:
    """The measurement grid (defaults: about 80 minutes on a 2-core CPU with the default model)."""

    decode: list[tuple[int, int]] = field(default_factory=lambda: [
        (1, 64), (2, 64), (4, 64), (8, 64), (16, 64), (32, 64), (64, 64),
        (1, 512), (4, 512), (16, 512), (32, 512),
        (1, 2000), (2, 2000), (4, 2000), (8, 2000),
    ])
    """(batch size, prompt tokens) of the decode workloads."""
    decode_heldout: list[tuple[int, int]] = field(default_factory=lambda: [(3, 64), (12, 64), (48, 64),
                                                                           (8, 1000), (24, 256)])
    ks: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    """K values cycled within each decode workload of the speculative engine."""
    steps_per_k: int = 10
    """Decode steps measured at each K in a decode workload."""
    prefill: list[int] = field(default_factory=lambda: [16, 64, 256, 1024, 2000])
    prefill_heldout: list[int] = field(default_factory=lambda: [512])
    mixed: list[tuple[int, int]] = field(default_factory=lambda: [(1, 64), (1, 1500), (8, 512), (32, 64), (32, 1500)])
    """(decoding requests, arriving prompt tokens) of the mixed workloads."""
    mixed_heldout: list[tuple[int, int]] = field(default_factory=lambda: [(16, 256), (4, 1000)])
    cached_prefill: list[tuple[int, int]] = field(default_factory=lambda: [(512, 64), (1024, 256), (1536, 512),
                                                                           (640, 1024)])
    """(cached prompt tokens, new tokens) of partly cached prefills, measured on an engine with prefix
    caching on: the new tokens attend over a context they did not compute, which tells the attention
    rate of prefill rows apart from F's curvature (stepfit.split_attention)."""
    cached_prefill_heldout: list[tuple[int, int]] = field(default_factory=lambda: [(1024, 64)])
    mixed_ks: list[int] = field(default_factory=lambda: [0, 4])
    """K of the decoding rows in mixed workloads (0: the plain engine; > 0: the speculative one)."""
    served_rates: list[float] = field(default_factory=lambda: [0.4, 1.2, 2.5])
    """Open-loop arrival rates (req/s) of the served-traffic workloads (real prompts, natural outputs)."""
    served_heldout: list[float] = field(default_factory=lambda: [0.8])
    served_requests: int = 40
    served_max_tokens: int = 128
    probe_starts: int = 2
    """Extra starts of the plain engine that only run the probe (start-to-start spread)."""
    cost_starts: int = 1
    """Starts of the plain and K-probe engines that each measure their whole cost grid; the fit pools
    them, and the start spread is measured over all of them. NOTE: one by default, because each start
    adds most of the profile's time again (about 40 minutes here); the spread a single start leaves is
    recorded (probe starts, and the live spread a fidelity study writes), not hidden."""
    probe: list[tuple[int, int]] = field(default_factory=lambda: [(1, 64), (16, 64)])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def quick(cls) -> MeasurePlan:
        """A few minutes: enough to exercise every phase (tests, smoke runs)."""
        return cls(decode=[(1, 32), (4, 32), (8, 96)], decode_heldout=[(2, 32)], ks=[0, 2], steps_per_k=4,
                   prefill=[16, 128], prefill_heldout=[64], mixed=[(2, 64)], mixed_heldout=[(3, 48)],
                   cached_prefill=[(256, 32)], cached_prefill_heldout=[(128, 64)],
                   mixed_ks=[0, 2], served_rates=[4.0], served_heldout=[], served_requests=6,
                   served_max_tokens=24, probe_starts=0, probe=[(1, 32)])

    def max_batch(self) -> int:
        sizes = [b for b, _ in self.decode + self.decode_heldout + self.mixed + self.mixed_heldout]
        return max(sizes + [1]) + 1

    def max_context(self) -> int:
        cached = [c + n for c, n in [*self.cached_prefill, *self.cached_prefill_heldout]]
        return max([c for _, c in self.decode + self.decode_heldout + self.mixed + self.mixed_heldout]
                   + self.prefill + self.prefill_heldout + cached)
