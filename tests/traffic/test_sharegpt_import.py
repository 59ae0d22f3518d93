"""ShareGPT importer: multi-turn prompts that hold the conversation so far, conversation ids and turns,
token counts from a local tokenizer or a stated estimate, seeded arrivals with think time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.traffic import load_traffic
from specsim.traffic.sharegpt import estimate_tokens, import_sharegpt

DATA = [
    {"id": "a", "conversations": [
        {"from": "human", "value": "x" * 40},   # 10 tokens estimated
        {"from": "gpt", "value": "y" * 80},     # 20
        {"from": "human", "value": "z" * 8},    # 2
        {"from": "gpt", "value": "w" * 400},    # 100
    ]},
    {"id": "b", "conversations": [
        {"from": "system", "value": "s" * 12},  # 3: context only
        {"from": "human", "value": "q" * 17},   # 5 (ceil)
        {"from": "gpt", "value": "r" * 4},      # 1
        {"from": "human", "value": "left unanswered"},
    ]},
    {"id": "c", "conversations": [{"from": "gpt", "value": "hello"}]},  # no turn: skipped
    {"id": "a", "conversations": [{"from": "user", "value": "dup id"}, {"from": "assistant", "value": "ok"}]},
]


def _write(tmp_path: Path, data: list = DATA) -> Path:
    p = tmp_path / "sharegpt.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    return p


def _by_id(tr):  # noqa: ANN001, ANN202
    return {rid: i for i, rid in enumerate(tr.request_ids)}


def test_turns_hold_the_conversation_so_far(tmp_path: Path) -> None:
    tr = import_sharegpt(_write(tmp_path), rate=0.5, think_time=10.0, answer_rate=50.0, seed=3)
    ix = _by_id(tr)
    assert set(ix) == {"a-0", "a-1", "b-0", "a#1-0"}
    a0, a1, b0 = ix["a-0"], ix["a-1"], ix["b-0"]
    assert (tr.input_lengths[a0], tr.output_lengths[a0]) == (10, 20)
    assert (tr.input_lengths[a1], tr.output_lengths[a1]) == (10 + 20 + 2, 100)  # earlier turns + this message
    assert (tr.input_lengths[b0], tr.output_lengths[b0]) == (3 + 5, 1)  # the system message is context
    assert tr.conversation_ids[a1] == "a" and tr.turns[a1] == 1 and tr.turns[a0] == 0
    assert tr.conversation_ids[ix["a#1-0"]] == "a#1"  # a repeated id is made unique
    assert tr.timestamps[a0] == 0.0 and np.all(np.diff(tr.timestamps) >= 0)
    # the next turn comes after the answer's estimated duration (20 tokens at 50/s) plus a think time
    assert tr.timestamps[a1] - tr.timestamps[a0] > 20 / 50.0
    m = tr.metadata
    assert (m["conversations"], m["skipped_conversations"], m["unanswered_turns"]) == (3, 1, 1)
    assert m["lengths_estimated"] and m["token_counts"] == "estimated: ceil(chars / 4)"
    assert set(tr.categories) == {"conv"}


def test_arrivals_are_seeded_and_scale_with_rate(tmp_path: Path) -> None:
    convs = [{"id": str(i), "conversations": [{"from": "human", "value": "hi there"},
                                              {"from": "gpt", "value": "hello"}]} for i in range(400)]
    p = _write(tmp_path, convs)
    a = import_sharegpt(p, rate=4.0, seed=1)
    assert a.timestamps.tolist() == import_sharegpt(p, rate=4.0, seed=1).timestamps.tolist()
    assert a.timestamps.tolist() != import_sharegpt(p, rate=4.0, seed=2).timestamps.tolist()
    assert 3.4 < a.rate < 4.6  # Poisson starts at 4 conversations/s
    assert len(import_sharegpt(p, limit=7)) == 7


def test_no_think_time_is_answer_duration_only(tmp_path: Path) -> None:
    tr = import_sharegpt(_write(tmp_path, DATA[:1]), think_time=0.0, answer_rate=10.0)
    assert tr.timestamps.tolist() == [0.0, 2.0]  # 20 tokens at 10 tokens/s


def test_think_time_is_constant_and_unknown_roles_skip(tmp_path: Path) -> None:
    """The next turn arrives after the answer's estimated duration plus --think-time exactly; a
    conversation with a role the importer does not know is skipped and counted, not an error."""
    data = [*DATA[:1], {"id": "r", "conversations": [{"from": "robot", "value": "beep"},
                                                      {"from": "gpt", "value": "ok"}]}]
    tr = import_sharegpt(_write(tmp_path, data), think_time=3.0, answer_rate=10.0)
    assert tr.timestamps.tolist() == [0.0, 5.0]  # 20 tokens at 10 tokens/s, then 3 s of thinking
    assert tr.metadata["unknown_role_conversations"] == 1 and tr.metadata["conversations"] == 1


def test_tokenizer_counts(tmp_path: Path) -> None:
    """With a local tokenizer folder the counts are the tokenizer's, without special tokens."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    d = tmp_path / "tok"
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                         "unk_token": "[UNK]"}))
    data = [{"id": "t", "conversations": [{"from": "human", "value": "hello world hello"},
                                          {"from": "gpt", "value": "world"},
                                          {"from": "human", "value": "a b c d e f g h i j k l"},
                                          {"from": "gpt", "value": "hello hello"}]}]
    tr = import_sharegpt(_write(tmp_path, data), tokenizer=d)
    assert tr.input_lengths.tolist() == [3, 3 + 1 + 12] and tr.output_lengths.tolist() == [1, 2]
    assert tr.metadata["lengths_estimated"] is False and tr.metadata["token_counts"] == f"tokenizer {d}"
    with pytest.raises(SpecsimError, match="is not a folder"):
        import_sharegpt(_write(tmp_path, data), tokenizer=tmp_path / "missing")
    with pytest.raises(SpecsimError, match="cannot load a tokenizer from"):
        import_sharegpt(_write(tmp_path, data), tokenizer=tmp_path)


@pytest.mark.parametrize(("data", "needle"), [
    ({"id": 1}, "must be a JSON list of conversations"),
    ([1], "conversation 0 is not a JSON object"),
    ([{"id": "x"}], "conversation 0 has no 'conversations' list"),
    ([{"conversations": [{"from": "human"}]}], "conversation 0 message 0 needs string 'from' and 'value'"),
    ([{"conversations": [{"from": "robot", "value": "hi"}]}],
     r"no conversation with a user message and its answer \(1 skipped for roles other than"),
    ([{"conversations": [{"from": "human", "value": "hi"}]}], "holds no conversation with a user message"),
])
def test_bad_datasets(tmp_path: Path, data: object, needle: str) -> None:
    with pytest.raises(SpecsimError, match=needle):
        import_sharegpt(_write(tmp_path, data))


def test_bad_settings(tmp_path: Path) -> None:
    p = _write(tmp_path)
    for kw, needle in (({"rate": 0.0}, "--rate"), ({"rate": float("nan")}, "--rate"),
                       ({"think_time": -1.0}, "--think-time"), ({"answer_rate": float("inf")}, "--answer-rate"),
                       ({"limit": 0}, "--limit"), ({"seed": -1}, "--seed")):
        with pytest.raises(SpecsimError, match=needle):
            import_sharegpt(p, **kw)


def test_cli_and_simulation_with_prefix_caching(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Imported conversations simulate with prefix caching on (the trace says which prompts share content)
    and the stats and simulate both say the lengths are estimates."""
    from specsim.formats.profile import save_profile
    from specsim.profiler.analytic import constant_profile

    assert estimate_tokens("") == 0 and estimate_tokens("abcde") == 2
    out = tmp_path / "t.jsonl"
    assert main(["traffic", "import", "--format", "sharegpt", str(_write(tmp_path)), "--out", str(out),
                 "--rate", "2", "--think-time", "1", "--seed", "4"]) == 0
    text = capsys.readouterr().out
    assert "4 requests" in text and "3 conversations (1 without an answered turn skipped)" in text
    assert "token lengths are estimates (characters / 4); give --tokenizer DIR for exact counts" in text
    tr = load_traffic(out)
    assert tr.conversation_ids is not None and tr.turns is not None and tr.metadata["lengths_estimated"]
    assert main(["traffic", "stats", str(out)]) == 0
    assert "estimates (estimated: ceil(chars / 4))" in capsys.readouterr().out
    prof = tmp_path / "p.json"
    save_profile(constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.6, k_max=2, traces=2, trace_length=64), prof)
    assert main(["simulate", "--profile", str(prof), "--traffic", str(out), "--no-plot", "--block-size", "4",
                 "--out", str(tmp_path / "sim")]) == 0
    text = capsys.readouterr().out
    assert "note: the trace's token lengths are estimates" in text
    s = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert s["prefix_caching"] is True and s["prefix_cached_tokens"] > 0
    assert main(["traffic", "import", "--format", "sharegpt", str(_write(tmp_path)), "--out", str(out),
                 "--model", "x"]) == 2
    assert "--model applies to --format burstgpt, not sharegpt" in capsys.readouterr().err
