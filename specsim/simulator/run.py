"""`simulate()`: replay a traffic trace through replicas of a simulated engine under a policy."""

from __future__ import annotations

import dataclasses

import numpy as np
import simpy

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.formats.profile import Profile
from specsim.formats.traffic import Traffic
from specsim.simulator.acceptance import AcceptanceReplay
from specsim.simulator.config import SimConfig
from specsim.simulator.costs import StepCostModel
from specsim.simulator.engine import ReplicaEngine
from specsim.simulator.metrics import SimResult, request_columns, summarise
from specsim.simulator.state import RequestTable
from specsim.simulator.workload import ClosedLoop, Router, open_loop

_UNLIMITED_BLOCKS = 1 << 40


def check_policy(profile: Profile, policy: Policy) -> None:
    """Refuse a policy the profile cannot simulate (unknown drafter, K beyond what was measured)."""
    if policy.drafter is None or policy.max_k == 0:
        return
    name = policy.drafter.name
    if name not in profile.drafters:
        known = ", ".join(sorted(profile.drafters)) or "none"
        raise SpecsimError(f"policy drafter {name!r} is not in the profile (it measured: {known})")
    limit = min(profile.k_max, profile.drafters[name].k_max)
    if policy.max_k > limit:
        raise SpecsimError(f"policy uses K={policy.max_k} but the profile covers K <= {limit} for {name!r}")
    if not profile.traces_for(name):
        raise SpecsimError(f"profile has no acceptance traces for drafter {name!r}")


def simulate(
    profile: Profile,
    traffic: Traffic,
    policy: Policy,
    cfg: SimConfig | None = None,
    cost: StepCostModel | None = None,
    replay: AcceptanceReplay | None = None,
) -> SimResult:
    """Run one simulation and return per-request and aggregate metrics.

    `cost` and `replay` may be passed in to reuse their precomputation across many runs (tuning).
    """
    cfg = cfg or SimConfig()
    cfg.validate()
    check_policy(profile, policy)
    if len(traffic) == 0:
        raise SpecsimError("traffic holds no requests")
    if cfg.max_requests is not None:
        traffic = traffic.head(cfg.max_requests)
    knobs = policy.engine  # the policy's engine knobs win, on a copy: the caller's config stays as it was
    cfg = dataclasses.replace(
        cfg,
        max_num_seqs=knobs.max_num_seqs or cfg.max_num_seqs,
        max_num_batched_tokens=knobs.max_num_batched_tokens or cfg.max_num_batched_tokens,
    )
    speculating = policy.drafter is not None and policy.max_k > 0
    drafter = policy.drafter.name if speculating else None
    if cost is None:
        cost = StepCostModel(profile, drafter, b_max=max(cfg.max_num_seqs, 1))
    if speculating and replay is None:
        replay = AcceptanceReplay(profile.traces_for(drafter), seed=cfg.seed)
    if not speculating:
        replay = None

    num_blocks = cfg.num_kv_blocks
    if num_blocks is None:
        kv = profile.target.kv_cache_tokens
        num_blocks = kv // cfg.block_size if kv else _UNLIMITED_BLOCKS
    largest = int((traffic.input_lengths + traffic.output_lengths).max()) + policy.max_k
    if -(-largest // cfg.block_size) > num_blocks:
        raise SpecsimError(
            f"a request needs {largest} tokens of KV cache but a replica holds only "
            f"{num_blocks * cfg.block_size}; raise --kv-blocks or cut long requests"
        )

    table = RequestTable(traffic)
    if replay is not None:
        longest = int(traffic.output_lengths.max()) + policy.max_k + 1
        table.trace_offset, table.trace_length = replay.assign(traffic.categories, max_len=longest,
                                                               prompt_ids=traffic.prompt_ids)
    env = simpy.Environment()
    itl: list[np.ndarray] = []
    closed: ClosedLoop | None = None

    def on_finish(i: int) -> None:
        if closed is not None:
            closed.on_finish(i)

    engines = [
        ReplicaEngine(env, r, table, cost, policy, replay, cfg, num_blocks, on_finish, itl)
        for r in range(cfg.replicas)
    ]
    router = Router(engines, table, cfg.router)
    if cfg.concurrency is not None:
        closed = ClosedLoop(env, len(traffic), router, cfg.concurrency, cfg.think_time)
    else:
        t0 = float(traffic.timestamps[0])
        times = ((traffic.timestamps - t0) / cfg.rate_scale).tolist()
        env.process(open_loop(env, times, router))
    env.run()

    if not np.isfinite(table.finish).all():  # pragma: no cover - would be a simulator bug
        raise RuntimeError(f"{int((~np.isfinite(table.finish)).sum())} requests never finished")
    steps = _merge_steps(engines)
    itl_all = np.concatenate(itl) if itl else np.zeros(0)
    busy = sum(e.busy_time for e in engines)
    summary = summarise(table, steps, itl_all, busy, cfg.replicas, cfg.slo_ttft, cfg.slo_tpot)
    summary["policy_max_k"] = policy.max_k
    summary["drafter"] = drafter
    if traffic.prompt_ids is not None and replay is not None:
        summary["acceptance_prompt_matches"] = replay.prompt_matches
    return SimResult(
        summary=summary,
        requests=request_columns(table),
        request_ids=traffic.request_ids,
        categories=traffic.categories,
        steps=steps,
        itl=itl_all,
    )


def _merge_steps(engines: list[ReplicaEngine]) -> dict[str, np.ndarray]:
    logs = [e.log.arrays() for e in engines]
    out = {k: np.concatenate([lg[k] for lg in logs]) for k in logs[0]}
    out["replica"] = np.concatenate([np.full(len(lg["start"]), e.index) for e, lg in zip(engines, logs, strict=True)])
    return out
