"""`specsim traffic import|synth|stats` end to end through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specsim.cli import main
from specsim.formats.traffic import load_traffic

CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:04.0319600,3180,0
2023-11-16 18:17:06.0000000,100,27
"""


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_import_stats_synth_roundtrip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Import a CSV, summarise it, then synthesise a rate-scaled trace from it."""
    csv = tmp_path / "AzureLLMInferenceTrace_conv.csv"
    csv.write_text(CSV)
    t = tmp_path / "t.jsonl"
    rc, out, _ = _run(capsys, ["traffic", "import", "--format", "azure", str(csv), "--out", str(t)])
    assert rc == 0 and "3 requests" in out and "clamped zero lengths" in out
    assert load_traffic(t).categories == ("conv",) * 3

    rc, out, _ = _run(capsys, ["traffic", "stats", str(t), "--json"])
    stats = json.loads(out)
    assert rc == 0 and stats["requests"] == 3 and stats["categories"] == {"conv": 3}

    rc, out, _ = _run(capsys, ["traffic", "stats", str(t)])
    assert rc == 0 and "rate (req/s)" in out

    s = tmp_path / "s.jsonl"
    argv = [
        "traffic",
        "synth",
        "--out",
        str(s),
        "--rate-scale",
        "10",
        "--lengths-from",
        str(t),
        "--seed",
        "3",
    ]
    rc, out, _ = _run(capsys, argv)
    assert rc == 0
    syn = load_traffic(s)
    assert set(syn.categories) == {"conv"}
    assert set(syn.input_lengths.tolist()) <= {4808, 3180, 100}
    assert syn.metadata["generator"]["seed"] == 3


def test_synth_distribution_and_determinism(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same seed writes byte-identical files."""
    base = ["traffic", "synth", "--rate", "5", "--num-requests", "500", "--arrival", "gamma", "--cv", "2"]
    base += ["--input-mean", "800", "--input-median", "500", "--output-mean", "128", "--seed", "9"]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert _run(capsys, [*base, "--out", str(a)])[0] == 0
    assert _run(capsys, [*base, "--out", str(b)])[0] == 0
    assert a.read_bytes() == b.read_bytes()
    tr = load_traffic(a)
    assert len(tr) == 500 and set(tr.output_lengths.tolist()) == {128}


def test_import_limit_and_category(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--limit and --category are honoured; 'none' leaves the category unset."""
    csv = tmp_path / "trace.csv"
    csv.write_text(CSV)
    t = tmp_path / "t.jsonl"
    assert (
        _run(capsys, ["traffic", "import", str(csv), "--out", str(t), "--limit", "2", "--category", "x"])[0]
        == 0
    )
    assert load_traffic(t).categories == ("x", "x")
    assert _run(capsys, ["traffic", "import", str(csv), "--out", str(t), "--category", "none"])[0] == 0
    assert load_traffic(t).categories == (None, None, None)


@pytest.mark.parametrize(
    "argv",
    [
        ["traffic", "synth", "--num-requests", "5", "--input-mean", "10", "--output-mean", "5"],  # no rate
        ["traffic", "synth", "--rate", "1", "--num-requests", "5"],  # no lengths
        ["traffic", "synth", "--rate", "1", "--num-requests", "5", "--input-mean", "10"],  # one side only
        [
            "traffic",
            "synth",
            "--rate",
            "1",
            "--num-requests",
            "5",
            "--cv",
            "2",
            "--input-mean",
            "10",
            "--output-mean",
            "5",
        ],  # cv without gamma
        [
            "traffic",
            "synth",
            "--rate",
            "1",
            "--num-requests",
            "5",
            "--input-mean",
            "10",
            "--input-median",
            "20",
            "--output-mean",
            "5",
        ],  # median above mean
        [
            "traffic",
            "synth",
            "--rate-scale",
            "2",
            "--num-requests",
            "5",
            "--input-mean",
            "10",
            "--output-mean",
            "5",
        ],  # rate scale without a source
        ["traffic", "import", "MISSING.csv", "--out", "x.jsonl"],
        ["traffic", "stats", "MISSING.jsonl"],
    ],
)
def test_cli_errors_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """Bad arguments give exit code 2 and one stderr line, and write no output file."""
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(capsys, [*argv, *(["--out", "o.jsonl"] if argv[1] == "synth" else [])])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("specsim: error:"), err
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "x.jsonl").exists()


def test_malformed_csv_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed CSV row is a one-line error naming the line."""
    csv = tmp_path / "t.csv"
    csv.write_text(CSV + "2023-11-16 18:17:07.0000000,12,five\n")
    rc, _, err = _run(capsys, ["traffic", "import", str(csv), "--out", str(tmp_path / "t.jsonl")])
    assert rc == 2 and "line 5" in err and len(err.strip().splitlines()) == 1
