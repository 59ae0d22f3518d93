"""BurstGPT CSV importer: failed rows dropped and counted, categories from Log Type, units, model filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.traffic import load_traffic
from specsim.traffic.burstgpt import import_burstgpt, log_category

SAMPLE = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,472,18,490,Conversation log
45,ChatGPT,1087,0,1087,Conversation log
118,GPT-4,417,276,693,API log
118,ChatGPT,0,0,0,Conversation log
130,ChatGPT,0,12,12,API log
127,GPT-4,2134,71,2205,Conversation log
"""


def _csv(tmp_path: Path, text: str = SAMPLE, name: str = "BurstGPT_1.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_sample() -> None:
    assert log_category("Conversation log") == "conv" and log_category("API log") == "api"
    assert log_category("Batch log") == "batch"


def test_failed_rows_dropped_and_counted(tmp_path: Path) -> None:
    tr = import_burstgpt(_csv(tmp_path))
    assert len(tr) == 4
    assert tr.timestamps.tolist() == [0.0, 113.0, 122.0, 125.0]  # relative to the first kept row, sorted
    assert tr.input_lengths.tolist() == [472, 417, 2134, 1]
    assert tr.output_lengths.tolist() == [18, 276, 71, 12]
    assert tr.categories == ("conv", "api", "conv", "api")
    assert tr.request_ids == ("burstgpt-0", "burstgpt-2", "burstgpt-5", "burstgpt-4")
    m = tr.metadata
    assert (m["dropped_failed"], m["clamped_input"], m["reordered"]) == (2, 1, 2)
    assert m["models"] == {"ChatGPT": 2, "GPT-4": 2} and m["start_offset_s"] == 5.0


def test_model_filter_limit_category(tmp_path: Path) -> None:
    p = _csv(tmp_path)
    tr = import_burstgpt(p, model="gpt-4")
    assert tr.input_lengths.tolist() == [417, 2134] and tr.metadata["other_model_rows"] == 4
    assert len(import_burstgpt(p, limit=2)) == 2
    assert set(import_burstgpt(p, category="chat").categories) == {"chat"}
    assert set(import_burstgpt(p, category=None).categories) == {None}
    with pytest.raises(SpecsimError, match="no successful requests of model 'Claude'"):
        import_burstgpt(p, model="Claude")


def test_time_units(tmp_path: Path) -> None:
    """Milliseconds need --time-unit ms: read as seconds they are refused."""
    rows = "".join(f"{i * 500},ChatGPT,10,5,15,Conversation log\n" for i in range(20))
    p = _csv(tmp_path, "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n" + rows)
    with pytest.raises(SpecsimError, match="look like milliseconds read as seconds.*--time-unit ms"):
        import_burstgpt(p)
    tr = import_burstgpt(p, time_unit="ms")
    assert tr.timestamps[-1] == pytest.approx(9.5) and tr.metadata["time_unit"] == "ms"


@pytest.mark.parametrize(("row", "needle"), [
    ("x,ChatGPT,1,1,2,API log", "line 3: Timestamp must be a number, got 'x'"),
    ("-1,ChatGPT,1,1,2,API log", "line 3: Timestamp must be a finite number >= 0"),
    ("7,ChatGPT,1.5,1,2,API log", "line 3: Request tokens must be an integer, got '1.5'"),
    ("7,ChatGPT,1,-4,2,API log", "line 3: Response tokens must be >= 0, got -4"),
    ("7,ChatGPT", "line 3: expected at least 6 comma-separated fields, got 2"),
])
def test_malformed_rows_name_the_line(tmp_path: Path, row: str, needle: str) -> None:
    lines = SAMPLE.splitlines()
    lines.insert(2, row)
    with pytest.raises(SpecsimError, match=needle):
        import_burstgpt(_csv(tmp_path, "\n".join(lines) + "\n"))


def test_header_and_empty(tmp_path: Path) -> None:
    with pytest.raises(SpecsimError, match="header lacks column 'Log Type'"):
        import_burstgpt(_csv(tmp_path, "Timestamp,Model,Request tokens,Response tokens\n1,a,1,1\n"))
    with pytest.raises(SpecsimError, match="is empty"):
        import_burstgpt(_csv(tmp_path, ""))
    with pytest.raises(SpecsimError, match=r"no successful requests \(1 failed rows"):
        import_burstgpt(_csv(tmp_path, SAMPLE.splitlines()[0] + "\n1,ChatGPT,0,0,0,API log\n"))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.jsonl"
    assert main(["traffic", "import", "--format", "burstgpt", str(_csv(tmp_path)), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 requests" in text and "dropped 2 failed requests (with Response tokens 0) from the trace" in text
    back = load_traffic(out)
    assert np.allclose(back.timestamps, [0, 113, 122, 125]) and back.metadata["dropped_failed"] == 2
    assert main(["traffic", "import", "--format", "burstgpt", str(_csv(tmp_path)), "--out", str(out),
                 "--hash-block-size", "16"]) == 2
    assert capsys.readouterr().err == ("specsim: error: --hash-block-size applies to --format mooncake, "
                                       "not burstgpt\n")
    assert main(["traffic", "stats", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["categories"] == {"api": 2, "conv": 2}
