"""The compiled loop's uncounted array views (simulator/borrowed.py) and the 32-bit block arenas."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from numba import njit

from specsim.errors import SpecsimError
from specsim.formats.traffic import Traffic
from specsim.simulator import prefix
from specsim.simulator.borrowed import borrowed


class Pair(NamedTuple):
    a: np.ndarray
    b: np.ndarray


@njit(cache=False)
def _write_through(t: Pair) -> float:
    v = borrowed(t)
    v.a[1] = 7
    v.b[0, 2] = 2.5
    return v.a.sum() + v.b.sum() + v.b.shape[1]


def test_borrowed_views_share_data_shape_and_strides() -> None:
    a = np.arange(5, dtype=np.int64)
    b = np.zeros((4, 6))[:, ::2]  # strided: the view keeps the strides, not a copy's
    got = _write_through(Pair(a, b))
    assert a[1] == 7 and b[0, 2] == 2.5
    assert got == pytest.approx(a.sum() + b.sum() + 3)


def test_block_arenas_are_32_bit_and_refuse_what_they_cannot_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 40
    tr = Traffic.from_arrays(np.arange(n) * 1.0, np.full(n, 2000), np.full(n, 100),
                             conversation_ids=[f"c{i % 5}" for i in range(n)], turns=[i // 5 for i in range(n)])
    ids = prefix.block_identities(tr, 16, 8)
    assert ids.ids.dtype == np.int32
    monkeypatch.setattr(prefix, "ARENA_DTYPE", np.int8)  # 127 ids: far fewer than these 40 x 132 blocks
    with pytest.raises(SpecsimError, match="32-bit block arenas"):
        prefix.block_identities(tr, 16, 8)
