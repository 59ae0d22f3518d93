"""Prompt sets for acceptance profiling: Spec-Bench when present, else a small built-in set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specsim.errors import SpecsimError
from specsim.shared_data import spec_bench_path


@dataclass(frozen=True)
class Prompt:
    """One prompt: a stable id, a category and the user message."""

    prompt_id: str
    category: str
    text: str


BUILTIN: tuple[Prompt, ...] = (
    Prompt("code-1", "code", "Write a Python function that returns the n-th Fibonacci number using a loop."),
    Prompt(
        "code-2",
        "code",
        "Here is a function:\n\ndef add(a, b):\n    return a + b\n\n"
        "Rewrite the function add so that it also accepts a third argument c with default 0.",
    ),
    Prompt("code-3", "code", "Write a Python class Stack with push, pop and peek methods."),
    Prompt("chat-1", "chat", "Hi! Can you suggest three things to do on a rainy weekend?"),
    Prompt("chat-2", "chat", "What is your favourite season of the year, and why?"),
    Prompt("math-1", "math", "What is 17 multiplied by 23? Explain the steps."),
    Prompt("math-2", "math", "Solve for x: 3x + 7 = 22. Show your work."),
    Prompt(
        "summ-1",
        "summarisation",
        "Summarise the following text in two sentences: The city council met on Tuesday to discuss "
        "the new park. The park will have a playground, a pond and walking paths. Construction "
        "starts in spring and should finish by autumn. The council said the park will be free.",
    ),
    Prompt(
        "summ-2",
        "summarisation",
        "Summarise: Photosynthesis is the process by which green plants use sunlight, water and "
        "carbon dioxide to make glucose and oxygen. It happens in the chloroplasts of leaf cells.",
    ),
    Prompt("trans-1", "translation", "Translate into French: The cat is sleeping on the red chair."),
    Prompt("trans-2", "translation", "Translate into German: Good morning, how are you today?"),
)


def load_jsonl_prompts(path: str | Path) -> list[Prompt]:
    """Read Spec-Bench style JSONL (question_id, category, turns) or {id, category, prompt} lines."""
    from specsim.formats._common import parse_json, read_text, text_lines

    p = Path(path)
    prompts: list[Prompt] = []
    for lineno, line in enumerate(text_lines(read_text(p, "prompt")), start=1):
        if not line.strip():
            continue
        row = parse_json(line, f"prompt file {p}", line=lineno)
        if not isinstance(row, dict):
            raise SpecsimError(f"prompt file {p} line {lineno}: expected a JSON object")
        text = row.get("prompt") or row.get("text")
        if text is None and isinstance(row.get("turns"), list) and row["turns"]:
            text = row["turns"][0]
        if not isinstance(text, str) or not text.strip():
            raise SpecsimError(f"prompt file {p} line {lineno}: no 'prompt', 'text' or 'turns' string")
        pid = row.get("question_id", row.get("id", lineno))
        prompts.append(Prompt(str(pid), str(row.get("category") or "unknown"), text))
    if not prompts:
        raise SpecsimError(f"prompt file {p} holds no prompts")
    return prompts


def stratified(prompts: list[Prompt], limit: int | None) -> list[Prompt]:
    """Up to `limit` prompts taken round-robin across categories (file order within each)."""
    if limit is None or limit >= len(prompts):
        return list(prompts)
    by_cat: dict[str, list[Prompt]] = {}
    for pr in prompts:
        by_cat.setdefault(pr.category, []).append(pr)
    out: list[Prompt] = []
    queues = [list(v) for v in by_cat.values()]
    while len(out) < limit and any(queues):
        for q in queues:
            if q and len(out) < limit:
                out.append(q.pop(0))
    return out


def load_prompts(path: str | Path | None, limit: int | None = None) -> list[Prompt]:
    """The prompt set: a given file, else Spec-Bench when present, else the built-in set."""
    if path is not None and str(path) not in ("", "builtin"):
        prompts = load_jsonl_prompts(path)
    elif path is None and spec_bench_path().is_file():
        prompts = load_jsonl_prompts(spec_bench_path())
    else:
        prompts = list(BUILTIN)
    return stratified(prompts, limit)
