"""Where the real public data shared beside the checkout lives (`../shared/data`): read in place,
never copied into the repository; callers skip cleanly when a file is absent."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir(repo_root: Path | None = None) -> Path:
    """The shared data folder beside the repository root."""
    return ((repo_root if repo_root is not None else REPO_ROOT).parent / "shared" / "data").resolve()


def azure_trace_path(kind: str = "conv", repo_root: Path | None = None) -> Path:
    """An Azure LLM inference trace CSV (`conv` or `code`)."""
    return shared_data_dir(repo_root) / "traces" / f"AzureLLMInferenceTrace_{kind}.csv"


def spec_bench_path(repo_root: Path | None = None) -> Path:
    """Spec-Bench's question file."""
    return shared_data_dir(repo_root) / "prompts" / "spec_bench_question.jsonl"
