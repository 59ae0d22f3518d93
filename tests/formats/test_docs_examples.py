"""The examples in docs/formats.md are valid documents of their contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from specsim.formats import load_policy, load_profile, load_traffic

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(json|jsonl)\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


@pytest.mark.skipif(not DOC.is_file(), reason="docs/formats.md not present")
def test_doc_examples_load(tmp_path: Path) -> None:
    """Each full example block loads with its contract's loader."""
    loaded = set()
    for kind, body in _blocks():
        if kind == "jsonl":
            path = tmp_path / "t.jsonl"
            path.write_text(body, encoding="utf-8")
            assert len(load_traffic(path)) > 0
            loaded.add("traffic")
        elif '"schema": "specsim.profile"' in body:
            path = tmp_path / "p.json"
            path.write_text(body, encoding="utf-8")
            load_profile(path)
            loaded.add("profile")
        elif '"schema": "specsim.policy"' in body:
            path = tmp_path / "q.json"
            path.write_text(body, encoding="utf-8")
            load_policy(path)
            loaded.add("policy")
    assert loaded == {"traffic", "profile", "policy"}
