"""Turn per-position accept runs into engine counters and back (pure, no vLLM).

A greedy trace r[pos] (with the draft length drafted[pos]) determines exactly what a vLLM run
with a fixed K does: a step at pos drafts min(K, drafted[pos]) tokens, accepts min(K, r[pos]) and
emits that many plus one bonus token. `walk` replays that, so a profile can be checked against
vLLM's own acceptance counters for the same prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Counters:
    """vLLM's speculative-decoding counters: drafts, draft tokens, accepted tokens, per position."""

    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_pos: list[int] = field(default_factory=list)
    steps: list[tuple[int, int]] = field(default_factory=list)
    """(drafted, accepted) of every decode step, in order."""

    def add(self, other: Counters) -> None:
        """Accumulate another request's counters."""
        self.num_drafts += other.num_drafts
        self.num_draft_tokens += other.num_draft_tokens
        self.num_accepted_tokens += other.num_accepted_tokens
        n = max(len(self.accepted_per_pos), len(other.accepted_per_pos))
        mine = self.accepted_per_pos + [0] * (n - len(self.accepted_per_pos))
        theirs = other.accepted_per_pos + [0] * (n - len(other.accepted_per_pos))
        self.accepted_per_pos = [a + b for a, b in zip(mine, theirs, strict=True)]
        self.steps.extend(other.steps)

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens."""
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens emitted per drafting step (accepted + 1 bonus), vLLM's definition."""
        return 1.0 + self.num_accepted_tokens / self.num_drafts if self.num_drafts else 1.0


def walk(r: Sequence[int], drafted: Sequence[int] | None, k: int, max_tokens: int) -> Counters:
    """Replay a K-fixed speculative run that stops after `max_tokens` output tokens.

    Output token 0 comes from prefill; each later step at position pos drafts
    d = min(k, drafted[pos]) tokens and accepts min(d, r[pos]). Positions past the trace end
    count as no-draft steps (the trace should be recorded long enough: max_tokens + k).
    """
    c = Counters(accepted_per_pos=[0] * k)
    pos = 1
    while pos < max_tokens:
        d = min(k, drafted[pos] if drafted is not None and pos < len(drafted) else k)
        if pos >= len(r):
            d = 0
        a = min(d, r[pos]) if d else 0
        if d:
            c.num_drafts += 1
            c.num_draft_tokens += d
            c.num_accepted_tokens += a
            for i in range(a):
                c.accepted_per_pos[i] += 1
        c.steps.append((d, a))
        pos += a + 1
    return c


def r_from_argmax(output: Sequence[int], draft_argmax: Sequence[int], k_max: int) -> list[int]:
    """Accept runs of an autoregressive greedy draft model from its teacher-forced argmax.

    draft_argmax[j] is the draft's most likely token for output position j given the prompt and
    output[:j]. A step at pos accepts while draft_argmax[j] == output[j] for j = pos, pos+1, ...
    (the draft's context equals the target's along an accepted run), capped at k_max.
    """
    n = len(output)
    match = [1 if draft_argmax[j] == output[j] else 0 for j in range(n)]
    r = [0] * n
    run = 0
    for j in range(n - 1, -1, -1):
        run = run + 1 if match[j] else 0
        r[j] = min(run, k_max)
    if n:
        r[0] = 0  # position 0 is produced by prefill, never verified
    return r


def r_from_steps(steps: Sequence[tuple[int, int]], output_length: int, k_max: int) -> list[int]:
    """Best-effort r[pos] from a run's per-step (drafted, accepted) counts (e.g. vLLM metrics).

    Positions a step started at get its accepted count; positions inside an accepted run get the
    remainder of that run (exact for autoregressive drafts when the run ended before K). Used
    for drafters that cannot be replayed exactly (eagle, mtp, sampled runs).
    """
    r = [0] * output_length
    pos = 1
    for _drafted, acc in steps:
        for i in range(acc + 1):
            if pos + i < output_length:
                r[pos + i] = min(k_max, acc - i)
        pos += acc + 1
        if pos >= output_length:
            break
    return r


def step_agreement(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> float:
    """Fraction of decode steps whose (drafted, accepted) agree, over the longer sequence."""
    n = max(len(a), len(b))
    if n == 0:
        return 1.0
    same = sum(1 for x, y in zip(a, b, strict=False) if tuple(x) == tuple(y))
    return same / n


def relative_gap(replayed: int, measured: int) -> float:
    """|replayed - measured| / measured (0 when both are zero)."""
    if measured == 0:
        return 0.0 if replayed == 0 else 1.0
    return abs(replayed - measured) / measured


def mean_acceptance_length(r: Sequence[int], drafted: Sequence[int] | None, k: int) -> float:
    """Mean tokens per step (accepted + 1) a K-fixed run over this trace would see."""
    c = walk(r, drafted, k, len(r))
    steps = len(c.steps)
    return (c.num_accepted_tokens + steps) / steps if steps else 1.0
