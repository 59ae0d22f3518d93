"""The profiler's checkpoint keys, named in one place (the checkpoint is `OUT.partial.jsonl`)."""

from __future__ import annotations

ENGINE = "engine/"
WORKLOAD = "workload/"
REFERENCE = "ref/"
CROSSCHECK = "crosscheck/"
DRAFTER = "drafter/"
LOAD = "load/"
CONTEXT = "context"
KPROBE_DRAFTER = "kprobe"
"""Drafter label of the K-probe engine's served steps: fitted like a drafter, never exported as one."""
"""The machine and install a run measured on (hardware, vLLM version, environment)."""


def engine(label: str, n: int) -> str:
    """One engine start: its arguments, start-up time and KV capacity."""
    return f"{ENGINE}{n:02d}-{label}"


def repeat(engine_name: str, start: int) -> str:
    """The name of the `start`-th repeat of an engine's cost grid: plain, plain@1, plain@2, ..."""
    return engine_name if start == 0 else f"{engine_name}@{start}"


def engine_kind(engine_name: str) -> str:
    """The engine a (possibly repeated) engine name runs: plain@1 -> plain."""
    return engine_name.split("@", 1)[0]


def workload(engine_name: str, kind: str, point: str) -> str:
    """One finished workload's recorded steps, e.g. workload/plain/decode/b8-c64."""
    return f"{WORKLOAD}{engine_name}/{kind}/{point}"


def reference(prompt_id: str) -> str:
    """The target's greedy (or sampled) output for one prompt."""
    return f"{REFERENCE}{prompt_id}"


def crosscheck(drafter: str) -> str:
    """vLLM's own counters for the cross-check prompts under a drafter."""
    return f"{CROSSCHECK}{drafter}"


def drafter(name: str) -> str:
    """A drafter's acceptance data: teacher-forced argmax or top-k, or vLLM's per-request metrics."""
    return f"{DRAFTER}{name}"


def load(n: int) -> str:
    """A sample of the machine's load average."""
    return f"{LOAD}{n}"
