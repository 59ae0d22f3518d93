"""Loader messages that used to mislead, values that used to slip through, and the UTF-8 BOM."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from specsim.errors import SpecsimError
from specsim.formats import load_policy, load_profile, load_traffic
from specsim.formats.policy import Policy, check_drafter_matches
from specsim.formats.profile import Profile
from specsim.prompts import load_jsonl_prompts
from specsim.traffic.azure import import_azure
from tests.formats.samples import VALID_POLICY, VALID_PROFILE, VALID_TRAFFIC, write_json, write_jsonl

BOM = b"\xef\xbb\xbf"


def _with_bom(path: Path) -> Path:
    path.write_bytes(BOM + path.read_bytes())
    return path


def test_a_utf8_bom_is_accepted_by_every_loader(tmp_path: Path) -> None:
    assert len(load_traffic(_with_bom(write_jsonl(tmp_path / "t.jsonl", VALID_TRAFFIC)))) == 3
    assert load_profile(_with_bom(write_json(tmp_path / "p.json", VALID_PROFILE))).k_max == 2
    assert load_policy(_with_bom(write_json(tmp_path / "pol.json", VALID_POLICY))).max_k == 2
    prompts = _with_bom(write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "category": "c", "prompt": "hi"}]))
    assert [p.text for p in load_jsonl_prompts(prompts)] == ["hi"]
    csv = tmp_path / "trace_conv.csv"
    csv.write_bytes(BOM + b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,10,5\n")
    assert len(import_azure(csv)) == 1


@pytest.mark.parametrize("kind", ["traffic", "profile", "policy"])
def test_a_folder_is_called_a_folder_not_a_missing_file(tmp_path: Path, kind: str) -> None:
    loader = {"traffic": load_traffic, "profile": load_profile, "policy": load_policy}[kind]
    with pytest.raises(SpecsimError, match="is a directory, not a file") as exc:
        loader(tmp_path)
    assert "not found" not in str(exc.value)


def test_json_errors_name_the_file_line_and_the_column(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"timestamp": 0, "input_length": 5, "output_length": 5}\n\x00\x00\n')
    with pytest.raises(SpecsimError) as exc:
        load_traffic(path)
    assert str(exc.value).endswith("line 2 is not valid JSON (column 1: Expecting value)")
    # a raw U+2028 inside a JSON string is not a line break: numbering follows the newlines
    lines = [json.dumps({"timestamp": 0, "input_length": 5, "output_length": 5, "category": "a\u2028b"},
                        ensure_ascii=False), '{"timestamp": 1, "input_length": 5, "output_length": 5', ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    col = len(lines[1]) + 1
    with pytest.raises(SpecsimError, match=rf"line 2 is not valid JSON \(column {col}: Expecting ',' delimiter\)"):
        load_traffic(path)
    policy = tmp_path / "p.json"
    policy.write_text('{\n  "version": 1,\n  "k_schedule": [1, 2\n}\n')
    with pytest.raises(SpecsimError, match=r"is not valid JSON \(line 4 column 1: "):
        load_policy(policy)


@pytest.mark.parametrize("bad", [True, 4.0, "4", 10**30])
def test_k_schedule_entries_are_strict_integers(tmp_path: Path, bad: object) -> None:
    doc = copy.deepcopy(VALID_POLICY)
    doc["k_schedule"] = [[1, 4, bad]]
    with pytest.raises(SpecsimError, match="k_schedule") as exc:
        load_policy(write_json(tmp_path / "p.json", doc))
    assert "\n" not in str(exc.value)
    assert Policy(drafter=VALID_POLICY["drafter"], k_schedule=[(1, 4, 2)]).k_schedule == [(1, 4, 2)]


def test_a_huge_step_time_names_the_real_limit(tmp_path: Path) -> None:
    doc = copy.deepcopy(VALID_PROFILE)
    doc["target"]["decode"]["step_ms"][0][0] = 1e9
    with pytest.raises(SpecsimError, match="below 1e9 ms"):
        load_profile(write_json(tmp_path / "p.json", doc))
    doc = copy.deepcopy(VALID_PROFILE)
    doc["target"]["prefill"]["step_ms"][0] = 2e9
    with pytest.raises(SpecsimError, match="below 1e9 ms"):
        load_profile(write_json(tmp_path / "p.json", doc))


def test_a_policy_drafter_must_match_the_profiles_method() -> None:
    profile = Profile.model_validate(VALID_PROFILE)
    check_drafter_matches(Policy.model_validate(VALID_POLICY), profile)
    liar = Policy.model_validate({**VALID_POLICY, "drafter": {"name": "ngram", "method": "eagle3"}})
    with pytest.raises(SpecsimError, match="'ngram' says method 'eagle3' but the profile measured 'ngram' as method "
                                           "'ngram'"):
        check_drafter_matches(liar, profile)
