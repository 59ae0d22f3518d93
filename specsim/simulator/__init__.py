"""Discrete-event simulator of a continuous-batching engine with speculative decoding (SimPy)."""

from __future__ import annotations

from specsim.simulator.config import SimConfig
from specsim.simulator.costs import StepCostModel
from specsim.simulator.metrics import SimResult
from specsim.simulator.run import check_policy, simulate

__all__ = ["SimConfig", "SimResult", "StepCostModel", "check_policy", "simulate"]
