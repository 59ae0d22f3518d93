"""The names sweeps, baselines and plots give speculation off and the tuned policy, in one place
(a module of its own so that `plots` and `sweep` need not import each other)."""

from __future__ import annotations

OFF = "no speculation"
"""Speculation off, in baselines, sweeps and their plots."""
TUNED = "policy"
"""The policy under study, in sweeps and their plots."""
