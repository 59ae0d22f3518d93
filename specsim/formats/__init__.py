"""The three contracts between stages: traffic trace, profile and policy."""

from __future__ import annotations

from specsim.formats.policy import AcceptanceFloor, DrafterRef, KController, Policy, load_policy, save_policy
from specsim.formats.profile import (
    AcceptanceTrace,
    CostTable,
    DrafterSpec,
    PrefillCurve,
    Profile,
    ProfileMetadata,
    TargetCost,
    load_profile,
    save_profile,
)
from specsim.formats.traffic import Traffic, load_traffic, save_traffic

__all__ = [
    "AcceptanceFloor",
    "AcceptanceTrace",
    "CostTable",
    "DrafterRef",
    "DrafterSpec",
    "KController",
    "Policy",
    "PrefillCurve",
    "Profile",
    "ProfileMetadata",
    "TargetCost",
    "Traffic",
    "load_policy",
    "load_profile",
    "load_traffic",
    "save_policy",
    "save_profile",
    "save_traffic",
]
