"""A vLLM `custom_class` proposer that enforces a whole specsim policy on a live server.

vLLM's own `num_speculative_tokens_per_batch_size` is a plain lookup; this proposer adds the
policy's hysteresis band (`KController`), per-request acceptance floor and context-length axis
(vLLM 0.32 has none; PRs 48944 / 54801 are not in it). It wraps vLLM's n-gram proposer and
is loaded through vLLM's supported extension point:
`--speculative-config '{"method": "custom_class", "model": "specsim.policies.proposer.PolicyProposer",
"num_speculative_tokens": K_MAX}'`, with the policy JSON in $SPECSIM_POLICY_JSON.

`PolicyLogic` holds all the decisions and imports nothing from vLLM, so it is unit-tested alone.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from specsim.formats.policy import KController, Policy, floor_trips
from specsim.io import atomic_write_text
from specsim.policies.export import POLICY_ENV, drafter_params

# Optional path where the proposer keeps a small JSON of what it decided (for tests and debugging).
STATS_ENV = "SPECSIM_PROPOSER_STATS"
STATS_EVERY = 1

log = logging.getLogger("specsim.policies.proposer")


@dataclass
class RequestState:
    """Running acceptance counts of one request."""

    drafted: int = 0
    accepted: int = 0
    verify_steps: int = 0
    pending: int = 0
    """Draft tokens proposed last step, verified in this one."""
    off: bool = False
    """The acceptance floor switched speculation off for this request."""


class PolicyLogic:
    """Per-step K for each request: the schedule with hysteresis, then the acceptance floor."""

    def __init__(self, policy: Policy, max_tracked: int = 4096) -> None:
        self.policy = policy
        self.kc = KController(policy)
        self.floor = policy.acceptance_floor
        self.states: dict[str, RequestState] = {}
        self.max_tracked = max_tracked
        self.last_batch_k = 0
        self.steps = 0
        self.k_steps: dict[int, int] = {}
        """Engine steps per batch-level K chosen."""
        self.switched_off = 0
        """Requests the acceptance floor has switched off."""

    def observe(self, req_ids: Sequence[str] | None, sampled: Sequence[Sequence[int]]) -> None:
        """Credit last step's drafts: a row that sampled n tokens accepted n - 1 of its drafts."""
        if req_ids is None or self.floor is None:
            return
        for rid, toks in zip(req_ids, sampled, strict=False):
            st = self.states.get(rid)
            if st is None or st.pending == 0 or not toks:
                continue
            st.drafted += st.pending
            st.accepted += min(len(toks) - 1, st.pending)
            st.verify_steps += 1
            st.pending = 0
            if not st.off and floor_trips(st.accepted, st.drafted, st.verify_steps, self.floor.min_rate,
                                          self.floor.warmup_steps):
                st.off = True
                self.switched_off += 1

    def ks(self, req_ids: Sequence[str] | None, sampled: Sequence[Sequence[int]],
           contexts: Sequence[int] | None = None) -> list[int]:
        """K for each row of this step (0 for rows still prefilling or switched off by the floor),
        capped by the policy's context-length axis when `contexts` (tokens per row) are given."""
        k = self.kc.k(len(sampled))
        self.last_batch_k = k
        self.steps += 1
        self.k_steps[k] = self.k_steps.get(k, 0) + 1
        out = [k if toks else 0 for toks in sampled]
        if self.policy.context_schedule and contexts is not None:
            out = [self.policy.context_cap(int(c), kk) if kk else 0
                   for kk, c in zip(out, contexts, strict=False)] + out[len(contexts):]
        if req_ids is not None and self.floor is not None:
            for i, rid in enumerate(req_ids[: len(out)]):
                st = self.states.get(rid)
                if st is not None and st.off:
                    out[i] = 0
        return out

    def record(self, req_ids: Sequence[str] | None, drafts: Sequence[Sequence[int]]) -> None:
        """Remember how many tokens each request was offered, to credit them next step."""
        if req_ids is None or self.floor is None:
            return
        for rid, d in zip(req_ids, drafts, strict=False):
            st = self.states.get(rid)
            if st is None:
                st = self.states[rid] = RequestState()
            st.pending = len(d)
        if len(self.states) > self.max_tracked:  # forget requests that are no longer running
            keep = set(req_ids)
            self.states = {r: s for r, s in self.states.items() if r in keep}

    def step(
        self,
        req_ids: Sequence[str] | None,
        sampled: Sequence[Sequence[int]],
        propose: Any,
        contexts: Sequence[int] | None = None,
    ) -> list[list[int]]:
        """One engine step: credit, choose K per row, call `propose(k_max)`, trim, record."""
        self.observe(req_ids, sampled)
        ks = self.ks(req_ids, sampled, contexts)
        kmax = max(ks, default=0)
        if kmax == 0:
            drafts: list[list[int]] = [[] for _ in sampled]
        else:
            raw = propose(kmax)
            drafts = [list(d[:k]) for d, k in zip(raw, ks, strict=True)]
        self.record(req_ids, drafts)
        return drafts

    def stats(self) -> dict[str, Any]:
        """Counts of what was decided so far."""
        return {"steps": self.steps, "k_steps": {str(k): v for k, v in sorted(self.k_steps.items())},
                "switched_off": self.switched_off, "tracked": len(self.states)}


def _find_runner() -> Any:
    """The model runner constructing this proposer (read-only, to learn request ids per row)."""
    frame = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if owner is not None and type(owner).__name__.endswith("ModelRunner"):
            return owner
        frame = frame.f_back
    return None


class PolicyProposer:
    """vLLM custom proposer: n-gram drafts with the policy's schedule, hysteresis and floor."""

    def __init__(self, vllm_config: Any) -> None:
        text = os.environ.get(POLICY_ENV)
        if not text:
            raise RuntimeError(f"{POLICY_ENV} is not set: start the server with `specsim serve`")
        policy = Policy.model_validate_json(text)
        if policy.drafter is None or policy.drafter.method != "ngram":
            raise RuntimeError("specsim's PolicyProposer wraps only the ngram drafter")
        from vllm.v1.spec_decode.ngram_proposer import NgramProposer

        params = drafter_params(policy)
        self.ngram = NgramProposer(vllm_config)
        # custom_class leaves vLLM's lookup sizes at 0; use the policy's.
        self.ngram.min_n = int(params["prompt_lookup_min"])
        self.ngram.max_n = int(params["prompt_lookup_max"])
        self.logic = PolicyLogic(policy)
        self.runner = _find_runner()
        if self.runner is None and policy.acceptance_floor is not None:
            log.warning("specsim PolicyProposer: model runner not found; the acceptance floor is inactive")
        self.stats_path = os.environ.get(STATS_ENV)
        log.info("specsim PolicyProposer: schedule %s, hysteresis %d, floor %s, ngram %d..%d",
                 policy.k_schedule, policy.hysteresis, policy.acceptance_floor,
                 self.ngram.min_n, self.ngram.max_n)

    def _req_ids(self, n: int) -> list[str] | None:
        batch = getattr(self.runner, "input_batch", None)
        ids = getattr(batch, "req_ids", None)
        if ids is None or len(ids) < n:
            return None
        return list(ids[:n])

    def propose(
        self,
        sampled_token_ids: list[list[int]],
        num_tokens_no_spec: Any,
        token_ids_cpu: Any,
        slot_mappings: Any = None,
    ) -> list[list[int]]:
        """Draft tokens for each request in the batch (lists may be shorter than K or empty)."""
        req_ids = self._req_ids(len(sampled_token_ids)) if self.logic.floor is not None else None

        def propose_k(k: int) -> list[list[int]]:
            return self.ngram.propose(k, sampled_token_ids, num_tokens_no_spec, token_ids_cpu)

        # NOTE: num_tokens_no_spec is each row's token count (prompt + output so far), the context
        # the policy's context-length axis is keyed on (vLLM 0.32 has no such axis of its own)
        n = len(sampled_token_ids)
        contexts = None if num_tokens_no_spec is None else [int(x) for x in num_tokens_no_spec[:n]]
        drafts = self.logic.step(req_ids, sampled_token_ids, propose_k, contexts)
        if self.stats_path and self.logic.steps % STATS_EVERY == 0:
            self.write_stats()
        return drafts

    def write_stats(self) -> None:
        """Write the decision counts to $SPECSIM_PROPOSER_STATS (best effort)."""
        if not self.stats_path:
            return
        try:
            info = dict(self.logic.stats(), runner_found=self.runner is not None)
            atomic_write_text(self.stats_path, json.dumps(info) + "\n")
        except OSError:
            pass

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """No model to load (n-gram)."""
