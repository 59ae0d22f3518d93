"""specsim: simulate and tune speculative-decoding policy for LLM serving.

The Python API, loaded on first use so `import specsim` stays light (no numpy, Optuna or SimPy until
a name is touched):

    load_profile(path) -> Profile      load_traffic(path) -> Traffic      load_policy(path) -> Policy
    save_policy(policy, path)          SimConfig(...)                     engine limits, load, seed, SLO
    simulate(profile, traffic, policy, cfg=None) -> SimResult
    tune(profile, traffic, "goodput", slo="ttft=2s,tpot=50ms", trials=100) -> TuneResult
    sweep(profile, policy, traffic, rates="0.5:32") -> SweepResult

Example (the README's, run by tests/test_public_api.py):

    >>> import specsim
    >>> profile, traffic = specsim.load_profile("P.json"), specsim.load_traffic("T.jsonl")
    >>> result = specsim.tune(profile, traffic, "goodput", slo="ttft=2s,tpot=50ms", trials=20)
    >>> run = specsim.simulate(profile, traffic, result.policy)
    >>> print(run.summary["tpot_p99"])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_profile": "specsim.formats.profile",
    "load_traffic": "specsim.formats.traffic",
    "load_policy": "specsim.formats.policy",
    "save_policy": "specsim.formats.policy",
    "SimConfig": "specsim.simulator.config",
    "simulate": "specsim.simulator.run",
    "tune": "specsim.api",
    "sweep": "specsim.api",
}
"""Public name -> the module that defines it (imported on first access)."""

__all__ = ["SimConfig", "__version__", "load_policy", "load_profile", "load_traffic", "save_policy", "simulate",
           "sweep", "tune"]

if TYPE_CHECKING:
    from specsim.api import sweep, tune
    from specsim.formats.policy import load_policy, save_policy
    from specsim.formats.profile import load_profile
    from specsim.formats.traffic import load_traffic
    from specsim.simulator.config import SimConfig
    from specsim.simulator.run import simulate


def __getattr__(name: str) -> Any:
    """Import a public name from its stage module on first use (PEP 562) and cache it here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'specsim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
