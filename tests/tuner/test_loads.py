"""multi_load: load levels in sequence, every request keeping its category and prompt."""

from __future__ import annotations

import numpy as np
import pytest

from specsim.formats.traffic import Traffic
from specsim.tuner.loads import multi_load


def test_levels_follow_each_other_and_keep_prompt_ids() -> None:
    shape = Traffic.from_arrays([0.0, 1.0, 2.0], [4, 5, 6], [1, 2, 3], categories=["a", "b", None],
                                prompt_ids=["p0", None, "p2"])
    tr = multi_load(shape, [1.0, 2.0], gap_s=10.0)
    assert len(tr) == 6
    assert tr.prompt_ids == ("p0", None, "p2") * 2
    assert tr.categories == ("a", "b", None) * 2
    assert tr.timestamps[3] == pytest.approx(tr.timestamps[2] + 10.0)
    assert np.diff(tr.timestamps[3:]) == pytest.approx([0.5, 0.5])
