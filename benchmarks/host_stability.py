"""How steady is this machine's CPU speed? The same fixed work, timed back to back for a while.

Run it with nothing else on the machine, before profiling or a fidelity study:

    .venv/bin/python benchmarks/host_stability.py [--seconds 180] [--windows 9]

Two kinds of fixed work alternate: a single-thread matmul of the size of a small model's projection
(torch, like an engine step) and a pure-Python loop (like the engine's scheduler). On a quiet
dedicated core both repeat within a few percent. The spread printed here is what any measurement on
the machine inherits, vLLM or not: on the 2-core development machine (2026-12-03) the 20-second
medians wandered from 0.92x to 1.11x of the overall median with nothing else running and CPU steal
under 1%, the size of the fast and slow engine starts in `experiments/fidelity/README.md`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def matmul_work(a: object, w: object, repeats: int = 200) -> float:
    """Seconds for `repeats` single-thread matmuls of a (256 x 576) by a (576 x 1536) fp32 matrix."""
    t = time.perf_counter()
    for _ in range(repeats):
        a @ w  # type: ignore[operator]
    return time.perf_counter() - t


def python_work(n: int = 300_000) -> float:
    """Seconds for a pure-Python loop of `n` multiply-adds."""
    t = time.perf_counter()
    s = 0
    for i in range(n):
        s += i * i
    return time.perf_counter() - t


def summary(name: str, x: np.ndarray, windows: int) -> str:
    """One line: median, p5-p95 as ratios of the median, and each window's median as a ratio."""
    med = float(np.median(x))
    p5, p95 = np.percentile(x, [5, 95]) / med
    parts = " ".join(f"{np.median(p) / med:.2f}" for p in np.array_split(x, windows))
    return f"{name:8s} median {med * 1e3:7.1f} ms   p5..p95 {p5:.2f}..{p95:.2f}   windows: {parts}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="how long to measure (default 180)")
    ap.add_argument("--windows", type=int, default=9, help="time windows to report medians for (default 9)")
    args = ap.parse_args()
    if args.seconds <= 0 or args.windows < 1:
        raise SystemExit("error: --seconds must be positive and --windows at least 1")
    import os

    import torch

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    a, w = torch.randn(256, 576, generator=gen), torch.randn(576, 1536, generator=gen)
    mm, py = [], []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        mm.append(matmul_work(a, w))
        py.append(python_work())
    if len(mm) < args.windows:
        raise SystemExit(f"error: only {len(mm)} samples in {args.seconds:g} s; measure for longer")
    print(f"{len(mm)} samples over {args.seconds:g} s, load average {os.getloadavg()[0]:.2f} at the end")
    print(summary("matmul", np.asarray(mm), args.windows))
    print(summary("python", np.asarray(py), args.windows))


if __name__ == "__main__":
    main()
