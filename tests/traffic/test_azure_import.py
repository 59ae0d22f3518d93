"""Azure CSV importer: exact timestamps, zero-length clamping, malformed rows, the real trace."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from specsim.errors import SpecsimError
from specsim.formats.traffic import load_traffic, save_traffic
from specsim.shared_data import azure_trace_path
from specsim.traffic.azure import category_from_name, import_azure
from specsim.traffic.stats import traffic_stats

CONV = azure_trace_path("conv")
CODE = azure_trace_path("code")

SMALL = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:04.0319600,3180,8
2023-11-16 18:17:04.0319601,110,0
2023-11-16 18:17:05.0000000,0,27
2023-11-16 18:18:03.9799599,7433,14
"""


def _csv(tmp_path: Path, text: str, name: str = "AzureLLMInferenceTrace_code.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_small_csv_exact(tmp_path: Path) -> None:
    """Timestamps are exact to 100 ns relative to the first row; lengths and category carried over."""
    tr = import_azure(_csv(tmp_path, SMALL))
    assert len(tr) == 5
    expected = [0.0, 0.052, 0.0520001, 1.02004, 59.9999999]
    assert np.allclose(tr.timestamps, expected, rtol=0, atol=1e-12)
    assert tr.input_lengths.tolist() == [4808, 3180, 110, 1, 7433]
    assert tr.output_lengths.tolist() == [10, 8, 1, 27, 14]
    assert set(tr.categories) == {"code"}
    assert tr.request_ids[0] == "code-0"
    assert tr.metadata["start_time"] == "2023-11-16 18:17:03.9799600"


def test_zero_lengths_clamped_and_counted(tmp_path: Path) -> None:
    """Zero token counts become 1 and are reported in the metadata."""
    tr = import_azure(_csv(tmp_path, SMALL))
    assert tr.metadata["clamped_input"] == 1
    assert tr.metadata["clamped_output"] == 1
    assert tr.input_lengths.min() >= 1 and tr.output_lengths.min() >= 1


def test_category_option_and_limit(tmp_path: Path) -> None:
    """--category overrides the file-name category; None leaves it unset; limit keeps the head."""
    path = _csv(tmp_path, SMALL)
    assert set(import_azure(path, category="chat").categories) == {"chat"}
    assert set(import_azure(path, category=None).categories) == {None}
    assert len(import_azure(path, limit=2)) == 2


def test_category_from_name() -> None:
    """File names map to their workload."""
    assert category_from_name("AzureLLMInferenceTrace_conv.csv") == "conv"
    assert category_from_name("/x/AzureLLMInferenceTrace_code_1week.csv") == "code"
    assert category_from_name("my_trace_chat.csv") == "chat"


def test_out_of_order_rows_sorted(tmp_path: Path) -> None:
    """Rows out of time order are stably sorted and counted, ids keep their file row."""
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-01-01 00:00:02.0,5,5\n2023-01-01 00:00:01.0,6,6\n"
    tr = import_azure(_csv(tmp_path, text, "t.csv"))
    assert tr.timestamps.tolist() == [0.0, 1.0]
    assert tr.input_lengths.tolist() == [6, 5]
    assert tr.metadata["reordered"] == 2
    assert tr.request_ids == ("t-1", "t-0")


def test_roundtrip_through_jsonl(tmp_path: Path) -> None:
    """An imported trace survives save/load unchanged (to the microsecond)."""
    tr = import_azure(_csv(tmp_path, SMALL))
    save_traffic(tr, tmp_path / "t.jsonl")
    back = load_traffic(tmp_path / "t.jsonl")
    assert np.allclose(back.timestamps, tr.timestamps, atol=1e-6)
    assert back.input_lengths.tolist() == tr.input_lengths.tolist()
    assert back.categories == tr.categories
    assert back.metadata["clamped_output"] == 1


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("2023-11-16 18:17:05.0000000,12", "expected 3"),
        ("2023-11-16 18:17:05.0000000,12,5,7", "expected 3"),
        ("yesterday,12,5", "TIMESTAMP"),
        ("2023-13-16 18:17:05.0000000,12,5", "TIMESTAMP"),
        ("2023-11-16 18:17:05.0000000,12.5,5", "ContextTokens"),
        ("2023-11-16 18:17:05.0000000,12,-5", "GeneratedTokens must be >= 0"),
        ("2023-11-16 18:17:05.0000000,abc,5", "ContextTokens"),
        ("2023-11-16 18:17:05.0000000,99999999999999999999999,5", "ContextTokens"),
    ],
)
def test_malformed_row_names_line(tmp_path: Path, row: str, needle: str) -> None:
    """A malformed row raises SpecsimError with its 1-based line number."""
    lines = SMALL.splitlines()
    lines.insert(3, row)
    with pytest.raises(SpecsimError) as info:
        import_azure(_csv(tmp_path, "\n".join(lines) + "\n"))
    msg = str(info.value)
    assert "line 4" in msg and needle in msg, msg


def test_bad_header_and_empty(tmp_path: Path) -> None:
    """Missing columns, empty files and missing files are SpecsimErrors."""
    with pytest.raises(SpecsimError, match="header"):
        import_azure(_csv(tmp_path, "time,in,out\n1,2,3\n"))
    with pytest.raises(SpecsimError, match="no requests"):
        import_azure(_csv(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n"))
    with pytest.raises(SpecsimError, match="empty"):
        import_azure(_csv(tmp_path, ""))
    with pytest.raises(SpecsimError, match="not found"):
        import_azure(tmp_path / "missing.csv")


@pytest.mark.skipif(not CONV.is_file(), reason="Azure conv trace not present")
def test_real_conv_trace() -> None:
    """The 2023 conv trace: 19,366 requests, ~5.5 req/s over ~58 minutes, imported quickly."""
    t0 = time.perf_counter()
    tr = import_azure(CONV)
    elapsed = time.perf_counter() - t0
    assert len(tr) == 19_366
    assert 57 * 60 < tr.duration < 59 * 60
    assert 5.4 < tr.rate < 5.65
    assert tr.timestamps[0] == 0.0 and np.all(np.diff(tr.timestamps) >= 0)
    assert set(tr.categories) == {"conv"}
    assert tr.metadata["clamped_input"] == 0 and tr.metadata["clamped_output"] == 0
    assert elapsed < 5.0
    s = traffic_stats(tr)
    assert 1100 < s["input_length"]["mean"] < 1200
    assert 200 < s["output_length"]["mean"] < 220
    assert 0.9 < s["burstiness_cv"] < 1.3


@pytest.mark.skipif(not CODE.is_file(), reason="Azure code trace not present")
def test_real_code_trace() -> None:
    """The code trace imports with category 'code' and is far burstier than conv."""
    tr = import_azure(CODE)
    assert len(tr) == 8_819
    assert set(tr.categories) == {"code"}
    assert traffic_stats(tr)["burstiness_cv"] > 5


AZURE_2024 = """TIMESTAMP,ContextTokens,GeneratedTokens
2024-05-10 00:00:00.009930+00:00,2048,31
2024-05-10 00:00:01+00:00,512,7
2024-05-10 00:00:01.500000+00:00,0,12
2024-05-10 23:59:59.999999+00:00,100,0
"""


def test_azure_2024_week_format(tmp_path: Path) -> None:
    """The 2024 week-long traces: UTC offsets and rows without a fraction, same columns."""
    tr = import_azure(_csv(tmp_path, AZURE_2024, "AzureLLMInferenceTrace_conv_1week.csv"))
    assert np.allclose(tr.timestamps, [0.0, 0.99007, 1.49007, 86399.990069], rtol=0, atol=1e-9)
    assert tr.input_lengths.tolist() == [2048, 512, 1, 100]
    assert tr.output_lengths.tolist() == [31, 7, 12, 1]
    assert set(tr.categories) == {"conv"}
    assert tr.metadata["clamped_input"] == 1 and tr.metadata["clamped_output"] == 1
    assert tr.metadata["start_time"] == "2024-05-10 00:00:00.009930+00:00"


def test_utc_offsets_are_applied(tmp_path: Path) -> None:
    """Other offsets move a row to UTC; a naive row counts as UTC."""
    text = ("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 02:00:00+02:00,5,5\n"
            "2024-05-10T00:00:30Z,5,5\n2024-05-09 19:01:00-0500,5,5\n2024-05-10 00:02:00,5,5\n")
    tr = import_azure(_csv(tmp_path, text, "t.csv"))
    assert tr.timestamps.tolist() == [0.0, 30.0, 60.0, 120.0]
    bad = text.replace("+02:00", "+25:00")
    with pytest.raises(SpecsimError, match=r"line 2: bad TIMESTAMP '2024-05-10 02:00:00\+25:00'"):
        import_azure(_csv(tmp_path, bad, "t.csv"))


def test_streamed_in_chunks_and_limit_reads_only_the_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks join exactly; with --limit, a bad row past the limit is never read."""
    import specsim.traffic.azure as azure

    rows = [f"2024-05-10 00:00:{i:02d}.5+00:00,{10 + i},{1 + i}" for i in range(50)]
    path = _csv(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\nbroken row\n",
                "AzureLLMInferenceTrace_code_1week.csv")
    monkeypatch.setattr(azure, "CHUNK_ROWS", 7)
    tr = import_azure(path, limit=50)
    assert len(tr) == 50 and tr.timestamps.tolist() == [float(i) for i in range(50)]
    assert tr.input_lengths.tolist() == list(range(10, 60))
    with pytest.raises(SpecsimError, match="line 52: expected 3 comma-separated fields"):
        import_azure(path)
