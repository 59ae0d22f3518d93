"""Importer for ShareGPT-style conversation datasets: multi-turn requests with synthesised arrivals.

The file is a JSON list of conversations `{"id": ..., "conversations": [{"from": "human", "value":
"..."}, {"from": "gpt", "value": "..."}, ...]}` (roles `human`/`user`, `gpt`/`assistant`/`chatgpt`/
`bard`/`bing`/`model`, and `system`, which counts as context; a conversation with any other role is
skipped and counted). Every user message followed by an assistant message is one request (a turn):

- its prompt holds the whole conversation so far: input length = the tokens of every earlier message
  (user, assistant and system) + this user message, so each turn's prompt extends the previous
  turn's prompt and answer, which prefix caching reuses; output length = the assistant message's tokens;
- `conversation_ids` (the conversation's `id`, made unique) and `turns` (0-based) are set;
- token counts: with `tokenizer` (a local Hugging Face tokenizer folder) each message's text is
  tokenized without special tokens and without a chat template; without one they are estimated as
  ceil(characters / 4), and the trace's metadata says so (`token_counts`);
- a user message without an answer, or an answer of 0 tokens, makes no request (its text still
  counts as context); conversations without any request are skipped and counted.

Arrival times are synthesised, seeded: conversations start as a Poisson process at `rate`
conversations per second (the first at t = 0); each next turn of a conversation arrives after the
previous turn's arrival plus an estimate of its answer's duration (output tokens / `answer_rate`
tokens per second) plus `think_time` seconds (a constant, like the closed loop's `--think-time`).
The estimate does not know the simulated server's speed: a slow server can still be answering
when the next turn arrives.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats._common import read_json
from specsim.formats.traffic import Traffic

USER_ROLES = ("human", "user")
ASSISTANT_ROLES = ("gpt", "assistant", "chatgpt", "bard", "bing", "model")
CONTEXT_ROLES = ("system",)
CHARS_PER_TOKEN = 4
"""Characters per token of the estimate used without a tokenizer."""


def estimate_tokens(text: str) -> int:
    """ceil(len(text) / 4): the common rule of thumb for English text with GPT-style tokenizers."""
    return -(-len(text) // CHARS_PER_TOKEN)


def load_tokenizer(path: str | Path) -> Any:
    """A local Hugging Face tokenizer folder (`tokenizer.json` / `tokenizer_config.json`), never the hub."""
    p = Path(path)
    if not p.is_dir():
        raise SpecsimError(f"--tokenizer {p} is not a folder (give a local Hugging Face tokenizer or model folder)")
    try:
        from transformers import AutoTokenizer
    except ImportError:  # pragma: no cover - transformers comes with vLLM
        raise SpecsimError("--tokenizer needs the transformers package (pip install transformers)") from None
    try:
        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError ... for a folder it cannot read
        raise SpecsimError(f"cannot load a tokenizer from {p}: {type(exc).__name__}: {exc}") from None


def _messages(conv: Any, k: int, where: str) -> tuple[str, list[tuple[str, str]]] | None:
    """(id, [(role, text)]) of conversation k, roles normalised to user / assistant / system; None
    when a message has a role outside USER_ROLES, ASSISTANT_ROLES and CONTEXT_ROLES."""
    if not isinstance(conv, dict):
        raise SpecsimError(f"{where}: conversation {k} is not a JSON object")
    msgs = conv.get("conversations", conv.get("messages"))
    if not isinstance(msgs, list):
        raise SpecsimError(f"{where}: conversation {k} has no 'conversations' list")
    out: list[tuple[str, str]] = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise SpecsimError(f"{where}: conversation {k} message {j} is not a JSON object")
        role, text = m.get("from", m.get("role")), m.get("value", m.get("content"))
        if not isinstance(role, str) or not isinstance(text, str):
            raise SpecsimError(f"{where}: conversation {k} message {j} needs string 'from' and 'value'")
        r = role.strip().lower()
        if r in USER_ROLES:
            out.append(("user", text))
        elif r in ASSISTANT_ROLES:
            out.append(("assistant", text))
        elif r in CONTEXT_ROLES:
            out.append(("system", text))
        else:
            return None
    cid = conv.get("id")
    return (str(cid) if isinstance(cid, (str, int)) and not isinstance(cid, bool) else str(k)), out


def import_sharegpt(
    path: str | Path,
    rate: float = 1.0,
    think_time: float = 10.0,
    answer_rate: float = 50.0,
    tokenizer: str | Path | None = None,
    seed: int = 0,
    category: str | None = "conv",
    limit: int | None = None,
) -> Traffic:
    """Read a ShareGPT-style JSON dataset into a multi-turn Traffic (see the module docstring).

    `rate`: conversations started per second; `think_time`: seconds a user takes between an
    answer and the next turn; `answer_rate`: output tokens per second assumed for an answer's
    duration; `limit`: keep the first N conversations that make requests."""
    for name, v, lo in (("--rate", rate, 0.0), ("--answer-rate", answer_rate, 0.0)):
        if not (math.isfinite(v) and v > lo and v <= 1e9):
            raise SpecsimError(f"{name} must be a finite number in (0, 1e9], got {v:g}")
    if not (math.isfinite(think_time) and 0 <= think_time <= 1e9):
        raise SpecsimError(f"--think-time must be a finite number of seconds in [0, 1e9], got {think_time:g}")
    if limit is not None and limit < 1:
        raise SpecsimError(f"--limit must be >= 1, got {limit}")
    if not 0 <= seed < 2**63:
        raise SpecsimError(f"--seed must lie in 0..2^63-1, got {seed}")
    p = Path(path)
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    data = read_json(p, "sharegpt dataset")
    if not isinstance(data, list):
        raise SpecsimError(f"sharegpt dataset {p} must be a JSON list of conversations")
    convs: list[tuple[str, list[tuple[str, str]]]] = []
    skipped = unknown_roles = 0
    for k, conv in enumerate(data):
        parsed = _messages(conv, k, f"sharegpt dataset {p}")
        if parsed is None:
            unknown_roles += 1
            continue
        cid, msgs = parsed
        if any(msgs[j][0] == "user" and msgs[j + 1][0] == "assistant" for j in range(len(msgs) - 1)):
            convs.append((cid, msgs))
            if len(convs) == limit:
                break
        else:
            skipped += 1
    if not convs:
        other = f" ({unknown_roles} skipped for roles other than user, assistant and system)" if unknown_roles else ""
        raise SpecsimError(f"sharegpt dataset {p} holds no conversation with a user message and its answer{other}")
    texts = [t for _, msgs in convs for _, t in msgs]
    if tok is not None:
        counts = iter(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])
    else:
        counts = iter(estimate_tokens(t) for t in texts)

    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0.0], np.cumsum(rng.exponential(1.0 / rate, len(convs) - 1))])
    ts: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    conv_ids: list[str] = []
    turns: list[int] = []
    ids: list[str] = []
    seen: dict[str, int] = {}
    empty_answers = unanswered = 0
    for (cid, msgs), start in zip(convs, starts.tolist(), strict=True):
        n_seen = seen.get(cid, 0)
        seen[cid] = n_seen + 1
        uid = cid if n_seen == 0 else f"{cid}#{n_seen}"
        tokens = [next(counts) for _ in msgs]
        context = 0
        t = start
        turn = 0
        for j, (role, _) in enumerate(msgs):
            if role == "user":
                answered = j + 1 < len(msgs) and msgs[j + 1][0] == "assistant"
                if not answered:
                    unanswered += 1
                elif tokens[j + 1] == 0:
                    empty_answers += 1
                else:
                    if turn > 0:  # the previous answer's estimated duration, then the user's think time
                        t += out[-1] / answer_rate + think_time
                    ts.append(t)
                    inp.append(max(context + tokens[j], 1))
                    out.append(tokens[j + 1])
                    conv_ids.append(uid)
                    turns.append(turn)
                    ids.append(f"{uid}-{turn}")
                    turn += 1
            context += tokens[j]
    order = np.argsort(np.asarray(ts), kind="stable")
    pick = order.tolist()
    meta: dict[str, Any] = {
        "source": "sharegpt",
        "source_file": p.name,
        "conversations": len(convs),
        "skipped_conversations": skipped,
        "unknown_role_conversations": unknown_roles,
        "unanswered_turns": unanswered,
        "empty_answers": empty_answers,
        "token_counts": f"tokenizer {tokenizer}" if tok is not None else "estimated: ceil(chars / 4)",
        "lengths_estimated": tok is None,
        "generator": {"rate": rate, "think_time": think_time, "answer_rate": answer_rate, "seed": seed},
    }
    if limit is not None:
        meta["limit"] = limit
    return Traffic.from_arrays(np.asarray(ts)[order], np.asarray(inp)[order], np.asarray(out)[order],
                               [category] * len(ts), [ids[k] for k in pick], meta,
                               conversation_ids=[conv_ids[k] for k in pick], turns=[turns[k] for k in pick])
