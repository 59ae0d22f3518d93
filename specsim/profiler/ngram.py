"""Exact replay of vLLM's n-gram (prompt lookup) proposer over a token sequence.

vLLM (v1 `NgramProposer`) looks for the longest n-gram, min_n <= n <= max_n, that ends the
context and also occurs earlier; among the longest it takes the earliest occurrence and proposes
the k tokens that follow it (fewer when the context ends first). `propose` reimplements vLLM's
KMP scan token for token; `propose_bruteforce` states the same rule directly (used in tests).
"""

from __future__ import annotations

from collections.abc import Sequence


def propose(
    tokens: Sequence[int], min_n: int, max_n: int, k: int, max_model_len: int | None = None
) -> list[int]:
    """Draft tokens vLLM's n-gram proposer returns for this context (same algorithm as vLLM)."""
    total = len(tokens)
    if total < min_n:
        return []
    if max_model_len is not None:
        k = min(k, max_model_len - total)
    if k <= 0:
        return []
    rev = list(tokens)[::-1]
    lps = [0] * max_n
    longest = 0
    position = 0
    prev = 0
    i = 1
    while i < total:
        if rev[prev] == rev[i]:
            prev += 1
            if prev >= longest:
                longest = prev
                position = i
            if i < max_n:
                lps[i] = prev
            if prev == max_n:
                prev = lps[max_n - 1]
            i += 1
        elif prev != 0:
            prev = lps[prev - 1]
        else:
            i += 1
    if longest < min_n:
        return []
    start = total - 1 - position + longest
    k = min(k, total - start)
    return list(tokens[start : start + k])


def propose_bruteforce(tokens: Sequence[int], min_n: int, max_n: int, k: int) -> list[int]:
    """The proposer's rule stated directly: longest suffix n-gram, earliest earlier occurrence."""
    toks = list(tokens)
    total = len(toks)
    if total < min_n or k <= 0:
        return []
    for n in range(min(max_n, total - 1), min_n - 1, -1):
        suffix = toks[total - n :]
        for s in range(0, total - n):
            if toks[s : s + n] == suffix:
                return toks[s + n : s + n + k]
    return []


def accept_run(draft: Sequence[int], actual: Sequence[int]) -> int:
    """Number of leading draft tokens equal to the tokens the target actually produced."""
    n = 0
    for d, a in zip(draft, actual, strict=False):
        if d != a:
            break
        n += 1
    return n


def ngram_trace(
    prompt: Sequence[int], output: Sequence[int], min_n: int, max_n: int, k_max: int
) -> tuple[list[int], list[int]]:
    """Per output position pos: (r[pos], drafted[pos]) for a verification step starting at pos.

    The context at pos is prompt + output[:pos]; the draft guesses output[pos:pos+k]. r[pos] is
    the accepted run (capped at k_max and at the tokens known), drafted[pos] the draft length.
    Position 0 is produced by prefill (no draft), so r[0] = drafted[0] = 0.
    """
    ctx = list(prompt)
    out = list(output)
    r = [0] * len(out)
    drafted = [0] * len(out)
    for pos in range(1, len(out)):
        context = ctx + out[:pos]
        draft = propose(context, min_n, max_n, k_max)
        drafted[pos] = len(draft)
        r[pos] = accept_run(draft, out[pos:])
    return r, drafted
