"""Hypothesis fuzzing of the three loaders: any input either loads or raises SpecsimError."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specsim.errors import SpecsimError
from specsim.formats import load_policy, load_profile, load_traffic
from tests.formats.samples import VALID_POLICY, VALID_PROFILE, VALID_TRAFFIC

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LOADERS = {"traffic": load_traffic, "profile": load_profile, "policy": load_policy}

# JSON values, including the awkward ones: huge ints, non-finite floats, odd strings, nesting.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**18, max_value=10**30)
    | st.integers(min_value=-(10**30), max_value=-(10**18))
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, -1, 0.5, 1e308, -0.0, 2**63, "", "1", "greedy", "sampled", "ngram"])
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _check(kind: str, content: bytes) -> None:
    """Load `content` as `kind`; only success or SpecsimError is acceptable."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"doc.{kind}"
        path.write_bytes(content)
        try:
            LOADERS[kind](path)
        except SpecsimError as exc:
            assert "\n" not in str(exc).strip(), "error message must be one line"


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """A valid document with a few random edits: replace, delete, or duplicate a value."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            doc = draw(json_values)
            continue
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
        except (KeyError, IndexError, TypeError):
            continue
        last = path[-1]
        op = draw(st.sampled_from(["replace", "delete", "scalar", "extend"]))
        if op == "delete":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(json_values)
        elif op == "scalar":
            parent[last] = draw(scalars)
        elif isinstance(parent[last], list):
            parent[last].append(draw(json_values))
        else:
            parent[last] = [parent[last], draw(scalars)]
    return doc


@SETTINGS
@given(kind=st.sampled_from(sorted(LOADERS)), content=st.binary(max_size=300))
def test_random_bytes(kind: str, content: bytes) -> None:
    """Arbitrary bytes never crash a loader."""
    _check(kind, content)


@SETTINGS
@given(kind=st.sampled_from(sorted(LOADERS)), doc=json_values)
def test_random_json(kind: str, doc: Any) -> None:
    """Arbitrary JSON documents never crash a loader."""
    _check(kind, _dumps(doc))


@SETTINGS
@given(depth=st.integers(1, 200_000), kind=st.sampled_from(sorted(LOADERS)))
def test_deep_nesting(depth: int, kind: str) -> None:
    """Pathologically nested JSON is rejected cleanly, not with RecursionError."""
    _check(kind, b"[" * depth + b"]" * depth)


@SETTINGS
@given(doc=mutated(VALID_PROFILE))
def test_mutated_profile(doc: Any) -> None:
    """Edited valid profiles either load or raise SpecsimError."""
    _check("profile", _dumps(doc))


@SETTINGS
@given(doc=mutated(VALID_POLICY))
def test_mutated_policy(doc: Any) -> None:
    """Edited valid policies either load or raise SpecsimError."""
    _check("policy", _dumps(doc))


@SETTINGS
@given(records=mutated(VALID_TRAFFIC), raw=st.lists(st.text(max_size=20), max_size=2))
def test_mutated_traffic(records: Any, raw: list[str]) -> None:
    """Edited valid traces (plus stray raw lines) either load or raise SpecsimError."""
    if isinstance(records, list):
        lines = [json.dumps(r, allow_nan=True) for r in records]
    else:
        lines = [_dumps(records).decode()]
    _check("traffic", ("\n".join(lines + raw) + "\n").encode())


@SETTINGS
@given(
    n=st.integers(1, 4000),
    digits=st.integers(4000, 6000),
    field=st.sampled_from(["timestamp", "input_length", "output_length", "request_id"]),
)
def test_huge_numbers_traffic(n: int, digits: int, field: str) -> None:
    """Integers too large for float64/int64 (or for Python's int parser) are rejected cleanly."""
    rec = {"timestamp": 0, "input_length": 1, "output_length": 1}
    big = "9" * digits
    old = f'"{field}": 0' if field == "timestamp" else f'"{field}": 1'
    text = json.dumps(rec).replace(old, f'"{field}": {big}')
    if field == "request_id":
        text = text[:-1] + f', "request_id": {big}}}'
    _check("traffic", (text + "\n").encode())
    _check("traffic", (json.dumps({**rec, field: 10**n}) + "\n").encode())
