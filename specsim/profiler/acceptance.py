"""Acceptance traces through vLLM: target generation, n-gram replay, teacher-forced draft argmax,
and a cross-check against vLLM's own speculative-decoding counters on the same prompts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from specsim.profiler.ngram import ngram_trace
from specsim.profiler.replay import Counters, relative_gap, step_agreement, walk
from specsim.profiler.steplogger import StepLogger
from specsim.prompts import Prompt


def chat_ids(tokenizer: Any, prompt: Prompt, max_prompt_tokens: int) -> list[int]:
    """Token ids of the prompt as a one-turn chat (the model's chat template), left-truncated."""
    messages = [{"role": "user", "content": prompt.text}]
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        ids = [int(x) for x in ids]
    except Exception:  # noqa: BLE001 - tokenizers without a chat template
        ids = [int(x) for x in tokenizer.encode(prompt.text)]
    if len(ids) > max_prompt_tokens:
        ids = ids[-max_prompt_tokens:]
    return ids


def _params(max_tokens: int, temperature: float = 0.0, ignore_eos: bool = False, **kw: Any) -> Any:
    from vllm import SamplingParams

    return SamplingParams(temperature=temperature, max_tokens=max_tokens, ignore_eos=ignore_eos, seed=0
                          if temperature > 0 else None, **kw)


def generate(llm: Any, prompts: Sequence[list[int]], max_tokens: int, ignore_eos: bool = False,
             temperature: float = 0.0) -> list[Any]:
    """Generation of every prompt in one batch (greedy unless temperature > 0, then seeded)."""
    outs = llm.generate([{"prompt_token_ids": list(p)} for p in prompts],
                        _params(max_tokens, temperature=temperature, ignore_eos=ignore_eos), use_tqdm=False)
    return [o.outputs[0] for o in outs]


def topk_logprobs(llm: Any, prompt_ids: Sequence[int], output_ids: Sequence[int],
                  k: int = 20) -> list[list[tuple[int, float]]]:
    """Teacher-forced top-k (raw) log-probabilities at every output position."""
    seq = list(prompt_ids) + list(output_ids)
    out = llm.generate([{"prompt_token_ids": seq}], _params(1, prompt_logprobs=k), use_tqdm=False)[0]
    plp = out.prompt_logprobs or []
    rows: list[list[tuple[int, float]]] = []
    for j in range(len(prompt_ids), len(seq)):
        entry = plp[j] if j < len(plp) else None
        pairs = [(int(t), float(getattr(lp, "logprob", lp))) for t, lp in (entry or {}).items()]
        pairs.sort(key=lambda tv: -tv[1])
        rows.append(pairs[:k])
    return rows


def tempered(dist: Sequence[tuple[int, float]], temperature: float) -> dict[int, float]:
    """Probabilities at a temperature from top-k raw log-probs (exact at T = 1; else renormalised
    over the top-k, which slightly overstates them)."""
    if not dist:
        return {}
    if temperature == 1.0:
        return {t: math.exp(lp) for t, lp in dist}
    m = max(lp for _, lp in dist)
    w = {t: math.exp((lp - m) / temperature) for t, lp in dist}
    z = sum(w.values())
    return {t: v / z for t, v in w.items()}


def p_deterministic(dist: Sequence[tuple[int, float]], draft: int | None, temperature: float) -> float:
    """Acceptance probability of a deterministic draft token: the target's probability of it."""
    if draft is None:
        return 0.0
    return min(1.0, tempered(dist, temperature).get(int(draft), 0.0))


def p_overlap(target: Sequence[tuple[int, float]], draft: Sequence[tuple[int, float]], temperature: float) -> float:
    """Acceptance probability of a sampled draft model: sum over tokens of min(p, q) (top-k union)."""
    pt, qd = tempered(target, temperature), tempered(draft, temperature)
    return min(1.0, sum(min(pt.get(t, 0.0), qd.get(t, 0.0)) for t in set(pt) | set(qd)))


def spec_steps(completion: Any) -> list[tuple[int, int]]:
    """Per verify step (drafted, accepted) from vLLM's detailed per-request metrics."""
    m = getattr(completion, "spec_decode_metrics", None)
    if m is None:
        return []
    if isinstance(m, dict):
        acc, dr = m.get("per_step_accepted") or [], m.get("per_step_drafted") or []
    else:
        acc, dr = getattr(m, "per_step_accepted", []) or [], getattr(m, "per_step_drafted", []) or []
    return [(int(d), int(a)) for d, a in zip(dr, acc, strict=False)]


def ngram_r(prompt_ids: Sequence[int], output_ids: Sequence[int], params: dict[str, Any],
            k_max: int) -> tuple[list[int], list[int]]:
    """r[pos] and drafted[pos] by exact replay of vLLM's n-gram proposer."""
    return ngram_trace(prompt_ids, output_ids, int(params["prompt_lookup_min"]),
                       int(params["prompt_lookup_max"]), k_max)


def draft_argmax(draft_llm: Any, prompt_ids: Sequence[int], output_ids: Sequence[int]) -> list[int]:
    """The draft model's argmax at every output position, teacher-forced on the target's output."""
    seq = list(prompt_ids) + list(output_ids)
    out = draft_llm.generate([{"prompt_token_ids": seq}], _params(1, prompt_logprobs=1), use_tqdm=False)[0]
    plp = out.prompt_logprobs or []
    argmax: list[int] = []
    for j in range(len(prompt_ids), len(seq)):
        entry = plp[j] if j < len(plp) else None
        best = -1
        if entry:
            ranked = sorted(entry.items(), key=lambda kv: getattr(kv[1], "rank", 1 << 30) or 1 << 30)
            best = int(ranked[0][0])
        argmax.append(best)
    return argmax


@dataclass
class CrossCheck:
    """How well replayed traces reproduce vLLM's own counters for the same speculative run."""

    k: int
    prompts: int
    identical_outputs: int
    replayed: Counters = field(default_factory=Counters)
    measured: dict[str, int] = field(default_factory=dict)
    """vLLM's aggregate counters (stat logger) for the run."""
    per_request: dict[str, int] = field(default_factory=dict)
    """Sums of vLLM's detailed per-request metrics."""
    step_agreement: float = 0.0

    def report(self) -> dict[str, Any]:
        """Plain-dict summary for the profile's metadata."""
        gaps = {
            name: round(relative_gap(getattr(self.replayed, name), self.measured.get(name, 0)), 5)
            for name in ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
        }
        return {
            "k": self.k,
            "prompts": self.prompts,
            "identical_outputs": self.identical_outputs,
            "vllm_counters": self.measured,
            "vllm_per_request_sums": self.per_request,
            "replayed_counters": {
                "num_drafts": self.replayed.num_drafts,
                "num_draft_tokens": self.replayed.num_draft_tokens,
                "num_accepted_tokens": self.replayed.num_accepted_tokens,
            },
            "relative_gap": gaps,
            "max_relative_gap": max(gaps.values()) if gaps else 0.0,
            "step_agreement": round(self.step_agreement, 5),
        }


def cross_check(
    k: int,
    references: Sequence[list[int]],
    traces: Sequence[tuple[list[int], list[int]]],
    spec_outputs: Sequence[list[int]],
    spec_step_lists: Sequence[list[tuple[int, int]]],
    measured: dict[str, int],
    max_tokens: int,
) -> CrossCheck:
    """Compare the walk over each replayed trace with what vLLM counted for the same prompts."""
    cc = CrossCheck(k=k, prompts=len(references), identical_outputs=0, measured=dict(measured))
    agree_steps = 0.0
    per_req = {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0}
    for ref, (r, drafted), out, steps in zip(references, traces, spec_outputs, spec_step_lists, strict=True):
        if list(out) == list(ref[: len(out)]):
            cc.identical_outputs += 1
        c = walk(r, drafted, k, min(max_tokens, len(out)))
        cc.replayed.add(c)
        mine = [s for s in c.steps if s[0] > 0]
        agree_steps += step_agreement(mine, steps)
        per_req["num_drafts"] += len(steps)
        per_req["num_draft_tokens"] += sum(d for d, _ in steps)
        per_req["num_accepted_tokens"] += sum(a for _, a in steps)
    cc.per_request = per_req
    cc.step_agreement = agree_steps / len(references) if references else 1.0
    return cc


def run_spec(llm: Any, logger: StepLogger, prompts: Sequence[list[int]], max_tokens: int,
             ignore_eos: bool = False) -> tuple[list[list[int]], list[list[tuple[int, int]]], dict[str, int]]:
    """A speculative run over the prompts: outputs, per-request steps and vLLM's counters."""
    logger.clear()
    outs = generate(llm, prompts, max_tokens, ignore_eos=ignore_eos)
    totals = dict(logger.spec_totals)
    return [list(o.token_ids) for o in outs], [spec_steps(o) for o in outs], totals
