"""Bad contract files give a one-line SpecsimError, and the CLI turns it into exit code 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from specsim.cli import build_parser, main
from specsim.errors import SpecsimError
from specsim.formats import load_policy, load_profile, load_traffic
from tests.formats.samples import VALID_POLICY, VALID_PROFILE, VALID_TRAFFIC, write_json, write_jsonl


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, assert exit code 2 and a single stderr line; return that line."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("specsim: error:")
    return lines[0]


def _has_command(name: str) -> bool:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return name in sub.choices  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------- traffic

BAD_TRAFFIC: dict[str, tuple[list[Any], str]] = {
    "malformed_json": (VALID_TRAFFIC[:2] + ['{"timestamp": 1.0, "input_length": 3,'], "line 3"),
    "not_an_object": (VALID_TRAFFIC[:2] + ["[1, 2, 3]"], "line 3"),
    "negative_input": (
        VALID_TRAFFIC[:2] + [{"timestamp": 1.0, "input_length": -4, "output_length": 3}],
        "input_length",
    ),
    "zero_output": (
        VALID_TRAFFIC[:2] + [{"timestamp": 1.0, "input_length": 4, "output_length": 0}],
        "output_length",
    ),
    "missing_output": (VALID_TRAFFIC[:2] + [{"timestamp": 1.0, "input_length": 4}], "'output_length'"),
    "missing_timestamp": (VALID_TRAFFIC[:2] + [{"input_length": 4, "output_length": 3}], "'timestamp'"),
    "fractional_length": (
        VALID_TRAFFIC[:2] + [{"timestamp": 1.0, "input_length": 4.5, "output_length": 3}],
        "input_length",
    ),
    "string_length": (
        VALID_TRAFFIC[:2] + [{"timestamp": 1.0, "input_length": "4", "output_length": 3}],
        "input_length",
    ),
    "backwards": (
        VALID_TRAFFIC[:2]
        + [
            {"timestamp": -0.0, "input_length": 4, "output_length": 3},
            {"timestamp": 2.0, "input_length": 4, "output_length": 3},
            {"timestamp": 1.5, "input_length": 4, "output_length": 3},
        ],
        "backwards",
    ),
    "negative_timestamp": (
        VALID_TRAFFIC[:1] + [{"timestamp": -1.0, "input_length": 4, "output_length": 3}],
        "timestamp",
    ),
    "nan_timestamp": (
        VALID_TRAFFIC[:1] + ['{"timestamp": NaN, "input_length": 4, "output_length": 1}'],
        "timestamp",
    ),
    "prompt_id_not_string": (
        VALID_TRAFFIC[:1] + [{"timestamp": 0.0, "input_length": 4, "output_length": 3, "prompt_id": 7}],
        "prompt_id must be a string",
    ),
    "unknown_version": ([{"schema": "specsim.traffic", "version": 99}] + VALID_TRAFFIC[1:], "version 99"),
    "wrong_schema": ([{"schema": "specsim.policy", "version": 1}] + VALID_TRAFFIC[1:], "schema"),
    "empty": ([VALID_TRAFFIC[0]], "no requests"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAFFIC))
def test_bad_traffic_loader(tmp_path: Path, case: str) -> None:
    """Each defect raises SpecsimError naming the problem."""
    records, needle = BAD_TRAFFIC[case]
    path = write_jsonl(tmp_path / "t.jsonl", records)
    with pytest.raises(SpecsimError, match=None) as info:
        load_traffic(path)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("case", sorted(BAD_TRAFFIC))
def test_bad_traffic_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    """`specsim traffic stats` on a bad trace: exit code 2, one stderr line."""
    records, needle = BAD_TRAFFIC[case]
    path = write_jsonl(tmp_path / "t.jsonl", records)
    line = _cli_error(capsys, ["traffic", "stats", str(path)])
    assert needle in line


def test_traffic_without_header_loads(tmp_path: Path) -> None:
    """Third-party traces without the version header load as version 1."""
    tr = load_traffic(write_jsonl(tmp_path / "t.jsonl", VALID_TRAFFIC[1:]))
    assert len(tr) == 3 and tr.categories[0] == "conv"


def test_missing_file_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing trace is a one-line error too."""
    assert "not found" in _cli_error(capsys, ["traffic", "stats", str(tmp_path / "nope.jsonl")])


# ------------------------------------------------------------------------------ profile & policy


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    keys = path.split(".")
    node: Any = doc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


_DELETE = object()

BAD_PROFILE: dict[str, tuple[str, Any, str]] = {
    "unknown_version": ("version", 7, "version 7"),
    "bool_version": ("version", True, "version"),
    "missing_version": ("version", _DELETE, "missing 'version'"),
    "wrong_schema": ("schema", "specsim.traffic", "schema"),
    "ks_unsorted": ("target.decode.ks", [0, 2, 1], "strictly increasing"),
    "no_k0": ("target.decode.ks", [1, 2, 3], "K=0"),
    "bad_shape": ("target.decode.step_ms", [[1.0, 2.0]], "shape"),
    "negative_cost": ("target.decode.step_ms", [[-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], "finite"),
    "k_max_beyond_table": ("k_max", 5, "k_max"),
    "r_above_k_max": ("acceptance.0.r", [0, 3], "0..k_max"),
    "unknown_drafter": ("acceptance.0.drafter", "eagle", "unknown drafter"),
    "extra_field": ("surprise", 1, "surprise"),
    "missing_metadata": ("metadata", _DELETE, "metadata"),
}

BAD_POLICY: dict[str, tuple[str, Any, str]] = {
    "unknown_version": ("version", 3, "version 3"),
    "missing_version": ("version", _DELETE, "missing 'version'"),
    "overlapping": ("k_schedule", [[1, 8, 2], [8, 16, 1]], "overlaps"),
    "unsorted": ("k_schedule", [[9, 16, 1], [1, 8, 2]], "overlaps or is out of order"),
    "inverted": ("k_schedule", [[8, 1, 2]], "lo <= hi"),
    "zero_lo": ("k_schedule", [[0, 4, 2]], "lo <= hi"),
    "negative_k": ("k_schedule", [[1, 4, -1]], "K must be >= 0"),
    "short_range": ("k_schedule", [[1, 4]], "k_schedule"),
    "no_drafter": ("drafter", None, "no drafter"),
    "negative_hysteresis": ("hysteresis", -1, "hysteresis"),
    "floor_above_one": ("acceptance_floor.min_rate", 1.5, "min_rate"),
}

_KINDS: dict[str, tuple[dict[str, Any], dict[str, tuple[str, Any, str]], Callable[[Path], Any]]] = {
    "profile": (VALID_PROFILE, BAD_PROFILE, load_profile),
    "policy": (VALID_POLICY, BAD_POLICY, load_policy),
}
_CASES = [(kind, case) for kind, (_, bad, _) in _KINDS.items() for case in sorted(bad)]


@pytest.mark.parametrize(("kind", "case"), _CASES)
def test_bad_document_loader(tmp_path: Path, kind: str, case: str) -> None:
    """Each defect in a profile or policy raises a one-line SpecsimError naming it."""
    valid, bad, loader = _KINDS[kind]
    field, value, needle = bad[case]
    doc = _set(json.loads(json.dumps(valid)), field, value)
    path = write_json(tmp_path / f"{kind}.json", doc)
    with pytest.raises(SpecsimError) as info:
        loader(path)
    assert needle in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kind", sorted(_KINDS))
def test_valid_documents_load(tmp_path: Path, kind: str) -> None:
    """The fixtures themselves are valid."""
    valid, _, loader = _KINDS[kind]
    loader(write_json(tmp_path / f"{kind}.json", valid))


@pytest.mark.parametrize("kind", sorted(_KINDS))
@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "", "\xff\xfe"])
def test_unparsable_documents(tmp_path: Path, kind: str, content: str) -> None:
    """Broken JSON, non-objects and non-UTF-8 bytes are one-line errors."""
    path = tmp_path / f"{kind}.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(SpecsimError):
        _KINDS[kind][2](path)


_CLI_CASES = [c for c in _CASES if c[1] in ("unknown_version", "missing_version")] + [
    ("policy", "overlapping"),
    ("policy", "unsorted"),
    ("profile", "ks_unsorted"),
]


def _sim_files(tmp_path: Path) -> dict[str, Path]:
    """A profile, policy and trace that `specsim simulate` accepts (greedy traces only)."""
    profile = json.loads(json.dumps(VALID_PROFILE))
    profile["acceptance"] = profile["acceptance"][:1]
    return {
        "profile": write_json(tmp_path / "profile.json", profile),
        "policy": write_json(tmp_path / "policy.json", VALID_POLICY),
        "traffic": write_jsonl(tmp_path / "t.jsonl", VALID_TRAFFIC),
    }


def _simulate_argv(files: dict[str, Path], tmp_path: Path) -> list[str]:
    return [
        "simulate",
        "--profile",
        str(files["profile"]),
        "--traffic",
        str(files["traffic"]),
        "--policy",
        str(files["policy"]),
        "--out",
        str(tmp_path / "out"),
    ]


def test_simulate_accepts_the_fixtures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Baseline for the CLI error tests: the unmodified files simulate with exit code 0."""
    if not _has_command("simulate"):
        pytest.skip("`specsim simulate` is not in this checkout yet")
    rc = main(_simulate_argv(_sim_files(tmp_path), tmp_path))
    assert rc == 0, capsys.readouterr().err


@pytest.mark.parametrize(("kind", "case"), _CLI_CASES)
def test_bad_document_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, case: str) -> None:
    """`specsim simulate` with a bad profile or policy: exit code 2 and one stderr line."""
    if not _has_command("simulate"):
        pytest.skip("`specsim simulate` is not in this checkout yet")
    files = _sim_files(tmp_path)
    field, value, needle = _KINDS[kind][1][case]
    write_json(files[kind], _set(json.loads(files[kind].read_text()), field, value))
    line = _cli_error(capsys, _simulate_argv(files, tmp_path))
    assert needle in line


@pytest.mark.parametrize(
    ("name", "records"),
    [
        (
            "backwards",
            VALID_TRAFFIC[:2]
            + [
                {"timestamp": 0.0, "input_length": 1, "output_length": 1},
                {"timestamp": -0.5, "input_length": 1, "output_length": 1},
            ],
        ),
        ("negative_length", VALID_TRAFFIC[:2] + [{"timestamp": 1.0, "input_length": -1, "output_length": 1}]),
        ("malformed", VALID_TRAFFIC[:2] + ["{"]),
    ],
)
def test_bad_traffic_simulate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, records: list[Any]
) -> None:
    """`specsim simulate` with a bad trace: exit code 2 and one stderr line."""
    if not _has_command("simulate"):
        pytest.skip("`specsim simulate` is not in this checkout yet")
    files = _sim_files(tmp_path)
    write_jsonl(files["traffic"], records)
    _cli_error(capsys, _simulate_argv(files, tmp_path))


def test_k_above_profile_k_max_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A policy K above the profile's k_max is refused with exit code 2."""
    if not _has_command("simulate"):
        pytest.skip("`specsim simulate` is not in this checkout yet")
    files = _sim_files(tmp_path)
    policy = json.loads(json.dumps(VALID_POLICY))
    policy["k_schedule"] = [[1, 4, VALID_PROFILE["k_max"] + 1]]
    write_json(files["policy"], policy)
    assert "K" in _cli_error(capsys, _simulate_argv(files, tmp_path))
