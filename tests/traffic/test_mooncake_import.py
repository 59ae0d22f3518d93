"""Mooncake/Bailian JSONL importer: millisecond timestamps, hash_ids kept in the contract, units checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.traffic import load_traffic
from specsim.traffic.mooncake import import_mooncake

# Mooncake's FAST'25 layout: integer ms timestamps, 512-token hash blocks shared by common prefixes
LINES = [
    {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48, 49, 50, 51, 52, 53,
                                                                                 54, 55, 56, 57, 58, 59]},
    {"timestamp": 30535, "input_length": 6472, "output_length": 26, "hash_ids": [46, 47, 48, 49, 50, 51, 52, 53,
                                                                                 54, 55, 56, 57, 60]},
    {"timestamp": 30000, "input_length": 600, "output_length": 0, "hash_ids": [61, 62]},
    {"timestamp": 31000, "input_length": 100, "output_length": 9},
]


def _jsonl(tmp_path: Path, rows: list[dict], name: str = "conversation_trace.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


def test_mooncake_sample(tmp_path: Path) -> None:
    tr = import_mooncake(_jsonl(tmp_path, LINES))
    assert np.allclose(tr.timestamps, [0.0, 2.518, 3.053, 3.518])  # ms -> s, relative, sorted
    assert tr.input_lengths.tolist() == [6955, 600, 6472, 100]
    assert tr.output_lengths.tolist() == [52, 1, 26, 9]
    assert tr.hash_ids[0][:3] == (46, 47, 48) and tr.hash_ids[1] == (61, 62) and tr.hash_ids[3] is None
    m = tr.metadata
    assert m["hash_block_size"] == 512 and m["time_unit"] == "ms" and m["start_offset_s"] == pytest.approx(27.482)
    assert (m["clamped_output"], m["reordered"], m["requests_with_hash_ids"]) == (1, 2, 3)
    assert tr.request_ids == ("mooncake-0", "mooncake-2", "mooncake-1", "mooncake-3")


def test_hash_ids_survive_the_contract(tmp_path: Path) -> None:
    """Written as a specsim trace and read back: hash_ids and their block size stay."""
    from specsim.formats.traffic import save_traffic

    tr = import_mooncake(_jsonl(tmp_path, LINES), hash_block_size=16)
    save_traffic(tr, tmp_path / "t.jsonl")
    back = load_traffic(tmp_path / "t.jsonl")
    assert back.hash_ids == tr.hash_ids and back.metadata["hash_block_size"] == 16
    assert back.digest() == tr.digest()


def test_bailian_seconds_and_type(tmp_path: Path) -> None:
    """Bailian-style lines: seconds with fractions (--time-unit s), `type` as the category, chat ids kept."""
    rows = [{"chat_id": 10 + i, "parent_chat_id": -1, "timestamp": 0.123 + 0.05 * i, "input_length": 40,
             "output_length": 8, "type": "text" if i % 2 else "image", "turn": 1, "hash_ids": [i, i + 1]}
            for i in range(40)]
    p = _jsonl(tmp_path, rows, "qwen_traceA.jsonl")
    with pytest.raises(SpecsimError, match=r"look like seconds read as milliseconds .*pass --time-unit s"):
        import_mooncake(p)
    tr = import_mooncake(p, time_unit="s", hash_block_size=16)
    assert tr.timestamps[-1] == pytest.approx(1.95) and tr.rate == pytest.approx(20.0)
    assert tr.categories[:2] == ("image", "text") and tr.request_ids[0] == "10"
    assert tr.metadata["hash_block_size"] == 16
    assert set(import_mooncake(p, time_unit="s", category=None).categories) == {None}


@pytest.mark.parametrize(("line", "needle"), [
    ('{"input_length": 5, "output_length": 5}', "line 2: missing 'timestamp'"),
    ('{"timestamp": -1, "input_length": 5, "output_length": 5}', "line 2: 'timestamp' must be a finite number"),
    ('{"timestamp": 1, "input_length": 5.5, "output_length": 5}', "line 2: 'input_length' must be an integer"),
    ('{"timestamp": 1, "input_length": 5, "output_length": 5, "hash_ids": [1, "a"]}', "line 2: 'hash_ids' must be"),
    ("[1, 2]", "line 2: expected a JSON object"),
    ("{", "line 2 is not valid JSON"),
])
def test_bad_lines(tmp_path: Path, line: str, needle: str) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps(LINES[0]) + "\n" + line + "\n")
    with pytest.raises(SpecsimError, match=needle):
        import_mooncake(p)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = _jsonl(tmp_path, LINES), tmp_path / "t.jsonl"
    assert main(["traffic", "import", "--format", "mooncake", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 requests over 3.5 s" in text
    assert "timestamps read as ms; 3 requests carry hash_ids (blocks of 512 tokens)" in text
    assert load_traffic(out).hash_ids is not None
    # the raw file read as a specsim trace in seconds is refused by the loaders too
    rows = [{"timestamp": 27482 + 900_000 * i, "input_length": 64, "output_length": 8} for i in range(6)]
    raw = _jsonl(tmp_path, rows, "raw.jsonl")
    assert main(["traffic", "stats", str(raw)]) == 2
    assert "--time-unit ms" in capsys.readouterr().err
    assert main(["traffic", "import", "--format", "azure", str(src), "--out", str(out), "--time-unit", "ms"]) == 2
    assert "--time-unit applies to --format burstgpt or mooncake, not azure (its timestamps are wall-clock times)" \
        in capsys.readouterr().err
