"""What the profiler makes an engine do while the recording scheduler (recorder.py) logs its steps.

Each workload drives a running `vllm.LLM` through its own engine loop (`add_request` / `step`),
so every step is formed by vLLM's scheduler exactly as when serving, and returns the time window
it ran in (perf_counter is CLOCK_MONOTONIC on Linux, shared with the engine-core process), which is
how the fit later tells the workloads' steps apart. The step compositions themselves come from the
recorder, never from these drivers.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_ids = itertools.count()


@dataclass
class Window:
    """A workload's time window and what it was."""

    label: str
    role: str
    """decode | mixed | prefill | cached_prefill | served | probe | warmup"""
    t0: float
    t1: float
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "role": self.role, "t0": self.t0, "t1": self.t1, "params": self.params}


def _params(max_tokens: int, ignore_eos: bool = True) -> Any:
    from vllm import SamplingParams

    return SamplingParams(max_tokens=max_tokens, ignore_eos=ignore_eos, temperature=0.0)


def _add(engine: Any, prompt: Sequence[int], max_tokens: int, ignore_eos: bool = True) -> str:
    rid = f"specsim-{next(_ids)}"
    engine.add_request(rid, {"prompt_token_ids": list(prompt)}, _params(max_tokens, ignore_eos))
    return rid


def drain(engine: Any, on_step: Callable[[int], None] | None = None, timeout: float = 3600.0) -> dict[str, Any]:
    """Step the engine until every request finished; returns the final outputs by request id."""
    outs: dict[str, Any] = {}
    n = 0
    deadline = time.monotonic() + timeout
    while engine.has_unfinished_requests():
        for o in engine.step():
            if o.finished:
                outs[o.request_id] = o
        n += 1
        if on_step is not None:
            on_step(n)
        if time.monotonic() > deadline:
            raise TimeoutError("workload did not finish in time")
    return outs


def decode(llm: Any, prompts: Sequence[Sequence[int]], max_tokens: int, label: str, params: dict[str, Any],
           on_step: Callable[[int], None] | None = None, max_steps: int | None = None) -> Window:
    """B requests prefilled together, then decoding side by side for max_tokens tokens (or until
    `max_steps` engine steps, when the rest is aborted: drafts that happen to be accepted must not
    end the run before every K of a cycle was measured)."""
    engine = llm.llm_engine
    t0 = time.perf_counter()
    ids = [_add(engine, p, max_tokens) for p in prompts]
    n = 0
    while engine.has_unfinished_requests():
        engine.step()
        n += 1
        if on_step is not None:
            on_step(n)
        if max_steps is not None and n >= max_steps:
            engine.abort_request(ids)
            drain(engine)
            break
    return Window(label, "decode", t0, time.perf_counter(), params)


def mixed(llm: Any, decoders: Sequence[Sequence[int]], decode_tokens: int, arrivals: Sequence[Sequence[int]],
          label: str, params: dict[str, Any], gap_steps: int = 4) -> Window:
    """B requests decoding while prompts arrive one after another (each prefilled in the budget's
    chunks between the decode rows): steps that mix prefill and decode, as under load."""
    engine = llm.llm_engine
    t0 = time.perf_counter()
    for p in decoders:
        _add(engine, p, decode_tokens)
    pending = list(arrivals)
    steps = 0
    waiting_for: str | None = None
    while engine.has_unfinished_requests():
        for o in engine.step():
            if waiting_for is not None and o.request_id == waiting_for and o.outputs and o.outputs[0].token_ids:
                waiting_for = None
        steps += 1
        if pending and waiting_for is None and steps >= gap_steps:
            waiting_for = _add(engine, pending.pop(0), 2)
            steps = 0
    return Window(label, "mixed", t0, time.perf_counter(), params)


def prefill(llm: Any, prompt: Sequence[int], label: str, params: dict[str, Any]) -> Window:
    """One request alone: prefill-only steps (chunked at the token budget), then one decode step, so
    that the last prefill step has a successor and therefore a measured period."""
    engine = llm.llm_engine
    t0 = time.perf_counter()
    _add(engine, prompt, 2)
    drain(engine)
    return Window(label, "prefill", t0, time.perf_counter(), params)


def cached_prefill(llm: Any, prefix: Sequence[int], new: Sequence[int], label: str, params: dict[str, Any]) -> Window:
    """A prompt, then the same prompt extended by `new` tokens, on an engine with prefix caching on:
    the second request finds the first's full blocks cached and computes only the rest, attending
    over the cached context. The window holds the second request only (its prefill, then one decode
    step, so that the prefill step has a successor and therefore a measured period)."""
    engine = llm.llm_engine
    _add(engine, prefix, 1)
    drain(engine)
    t0 = time.perf_counter()
    _add(engine, list(prefix) + list(new), 2)
    drain(engine)
    return Window(label, "cached_prefill", t0, time.perf_counter(), params)


def served(llm: Any, arrivals: Sequence[tuple[float, Sequence[int], int]], label: str, params: dict[str, Any],
           ignore_eos: bool = False) -> tuple[Window, dict[str, Any]]:
    """Open-loop traffic in real time: (seconds after start, prompt ids, max tokens) per request,
    natural output lengths (EOS ends a request unless ignore_eos). Returns the window and the
    final outputs by arrival index."""
    engine = llm.llm_engine
    order = sorted(range(len(arrivals)), key=lambda j: arrivals[j][0])
    ids: dict[str, int] = {}
    outs: dict[str, Any] = {}
    t0 = time.perf_counter()
    nxt = 0
    while nxt < len(order) or engine.has_unfinished_requests():
        now = time.perf_counter() - t0
        while nxt < len(order) and arrivals[order[nxt]][0] <= now:
            j = order[nxt]
            ids[_add(engine, arrivals[j][1], arrivals[j][2], ignore_eos)] = j
            nxt += 1
        if engine.has_unfinished_requests():
            for o in engine.step():
                if o.finished:
                    outs[o.request_id] = o
        elif nxt < len(order):
            time.sleep(max(0.0, min(0.05, arrivals[order[nxt]][0] - (time.perf_counter() - t0))))
    by_index = {ids[rid]: o for rid, o in outs.items() if rid in ids}
    return Window(label, "served", t0, time.perf_counter(), params), by_index
