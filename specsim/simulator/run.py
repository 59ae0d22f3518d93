"""`simulate()`: replay a traffic trace through replicas of a simulated engine under a policy."""

from __future__ import annotations

import dataclasses

import numpy as np
import simpy

import specsim.simulator.kernel as kernel
from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.formats.profile import SIMULATED_FAMILIES, Profile
from specsim.formats.traffic import Traffic
from specsim.simulator.acceptance import MODE_SAMPLED_LEGACY, AcceptanceReplay, check_category_map
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


LOOKAHEAD_METHODS = ("eagle", "eagle3", "mtp", "draft_model")
"""Drafters that write KV past the verified tokens: vLLM reserves K lookahead slots for them
(VllmConfig.num_lookahead_tokens)."""
DRAFT_SLOT_METHODS = {"draft_model": 1}
"""Extra input-budget slots per scheduled request (SpeculativeConfig.max_num_new_slots_for_drafting)."""


ASYNC_METHODS = LOOKAHEAD_METHODS
"""Drafters vLLM runs with async scheduling by default on GPU (VllmConfig.__post_init__)."""


def async_scheduling(cfg: SimConfig, policy: Policy, device: str) -> bool:
    """Whether the engine schedules asynchronously (cfg.async_scheduling, 'auto' = vLLM's default)."""
    if cfg.async_scheduling != "auto":
        return cfg.async_scheduling == "on"
    if device != "cuda":
        return False  # vLLM's CPU platform turns async scheduling off
    speculating = policy.drafter is not None and policy.max_k > 0
    if speculating and (policy.hysteresis or policy.acceptance_floor is not None):
        return False  # specsim's custom proposer (method custom_class): vLLM schedules it synchronously
    return policy.drafter is None or not speculating or policy.drafter.method in ASYNC_METHODS


def prefix_caching_on(cfg: SimConfig, traffic: Traffic) -> bool:
    """cfg.prefix_caching, 'auto' being on when the trace says which requests share content."""
    if cfg.prefix_caching != "auto":
        return cfg.prefix_caching == "on"
    return getattr(traffic, "hash_ids", None) is not None or getattr(traffic, "conversation_ids", None) is not None


def kv_blocks(profile: Profile, cfg: SimConfig) -> int:
    """KV blocks per replica: --kv-blocks, else --kv-space with the profile's bytes per block, else the
    capacity the profile measured, else effectively unlimited."""
    if cfg.num_kv_blocks is not None:
        return cfg.num_kv_blocks
    kv = profile.target.kv
    if cfg.kv_space_gib is not None:
        if kv is None or not kv.bytes_per_block:
            raise SpecsimError("--kv-space needs a profile that records its KV bytes per block (profile version 2); "
                               "give --kv-blocks instead")
        per_block = kv.bytes_per_block * cfg.block_tokens / kv.block_size
        return max(2, int(cfg.kv_space_gib * (1 << 30) // per_block))
    if kv is not None:
        return max(2, kv.blocks * kv.block_size // cfg.block_tokens)
    tokens = profile.target.kv_cache_tokens
    return tokens // cfg.block_tokens if tokens else _UNLIMITED_BLOCKS


def engine_params(cfg: SimConfig, policy: Policy, replay: AcceptanceReplay | None, max_model_len: int,
                  detail: bool = False, is_async: bool = False) -> kernel.Params:
    """The integer/float settings and the K lookup the compiled engine reads."""
    pi = np.zeros(kernel.P_SIZE, dtype=np.int64)
    pf = np.zeros(kernel.PF_SIZE)
    speculating = replay is not None
    method = policy.drafter.method if policy.drafter is not None else ""
    pi[kernel.P_MAXSEQS] = cfg.max_num_seqs
    pi[kernel.P_TOKBUDGET] = cfg.max_num_batched_tokens
    pi[kernel.P_INBUDGET] = cfg.max_num_batched_tokens
    pi[kernel.P_DRAFTSLOTS] = DRAFT_SLOT_METHODS.get(method, 0) if speculating else 0
    pi[kernel.P_BS] = cfg.block_tokens
    pi[kernel.P_LOOKAHEAD] = (policy.max_k if speculating and cfg.lookahead == "auto"
                              and method in LOOKAHEAD_METHODS else 0)
    pi[kernel.P_MAXLEN] = max_model_len
    pi[kernel.P_CHUNKED] = int(cfg.chunked_prefill)
    pi[kernel.P_FULLISL] = int(cfg.reserve_full_isl)
    pi[kernel.P_WATERMARK] = 0  # set per replica from the block count
    pi[kernel.P_LONGTHR] = cfg.long_prefill_token_threshold
    pi[kernel.P_KBASIS] = kernel.K_BASIS[cfg.k_basis]
    pi[kernel.P_STATICK] = policy.static_k if speculating else 0
    pi[kernel.P_HYSTBAND] = policy.hysteresis
    pi[kernel.P_KMAX] = policy.max_k
    pi[kernel.P_DETAIL] = int(detail)
    pi[kernel.P_STOPFIN] = int(cfg.concurrency is not None)
    pi[kernel.P_ASYNC] = int(is_async)
    if speculating:
        assert replay is not None
        pi[kernel.P_ACCMODE] = replay.mode
        pi[kernel.P_HASDRAFTED] = int(replay.has_drafted)
        floor = policy.acceptance_floor
        if floor is not None:
            pf[kernel.PF_FLOORRATE] = floor.min_rate
            pi[kernel.P_FLOORWARM] = floor.warmup_steps
    klookup = np.array([policy.k_at(b) for b in range(cfg.max_num_seqs + 1)], dtype=np.int64)
    kranges = np.array(policy.k_schedule, dtype=np.int64).reshape(-1, 3)
    fam = np.zeros(kernel.F_SIZE, dtype=np.int64)
    famf = np.zeros(kernel.FF_SIZE)
    fam[kernel.F_QMAX] = -1
    ftab = np.zeros((1, 3), dtype=np.int64)
    ftabf = np.zeros((1, 3))
    cgbs = np.zeros(0, dtype=np.int64)
    if policy.queue is not None:
        fam[kernel.F_QMAX], fam[kernel.F_QK] = policy.queue.max_waiting, policy.queue.k
    if policy.family == "sglang" and policy.sglang is not None:
        sg = policy.sglang
        fam[kernel.F_FAMILY] = kernel.FAM_SGLANG
        fam[kernel.F_SLOTS], fam[kernel.F_INTERVAL], fam[kernel.F_WARMUP] = (len(sg.slots), sg.update_interval,
                                                                             sg.warmup_batches)
        famf[kernel.FF_ALPHA] = sg.ema_alpha
        width = max(len(sl.steps) for sl in sg.slots)
        ftab = np.zeros((len(sg.slots), 2 + width), dtype=np.int64)
        ftabf = np.zeros((len(sg.slots), 3))
        fam[kernel.F_INIT] = sg.start_steps
        for j, sl in enumerate(sg.slots):
            ftab[j, 0], ftab[j, 1] = sl.lo, len(sl.steps)
            ftab[j, 2:2 + len(sl.steps)] = sl.steps
            ftabf[j] = sl.up_hysteresis, sl.down_hysteresis, sl.ceiling_coeff
        cgbs = np.array(sorted(sg.cuda_graph_batch_sizes), dtype=np.int64)
    elif policy.family == "trtllm" and policy.trtllm is not None:
        tr = policy.trtllm
        fam[kernel.F_FAMILY] = kernel.FAM_TRTLLM
        if tr.acceptance_rate_window_size and tr.acceptance_rate_threshold is not None:
            fam[kernel.F_WINDOW] = tr.acceptance_rate_window_size
            famf[kernel.FF_THRESHOLD] = tr.acceptance_rate_threshold
    ctxr = np.array(policy.context_schedule, dtype=np.int64).reshape(-1, 3)
    return kernel.Params(pi, pf, klookup, kranges, fam, famf, ftab, ftabf, cgbs, ctxr)


def simulate(
    profile: Profile,
    traffic: Traffic,
    policy: Policy,
    cfg: SimConfig | None = None,
    cost: StepCostModel | None = None,
    replay: AcceptanceReplay | None = None,
    detail: bool = False,
) -> SimResult:
    """Run one simulation and return per-request and aggregate metrics.

    `cost` and `replay` may be passed in to reuse their precomputation across many runs (tuning).
    `detail` records every scheduled row and preemption (`SimResult.detail`), for parity checks.

    Example (also `specsim.simulate`):
        >>> import specsim
        >>> run = specsim.simulate(specsim.load_profile("P.json"), specsim.load_traffic("T.jsonl"),
        ...                        specsim.load_policy("POL.json"), specsim.SimConfig(max_num_seqs=64))
        >>> run.summary["tpot_p99"], run.summary["output_tokens_per_s"]
        >>> run.write_csv("requests.csv")
    """
    cfg = cfg or SimConfig()
    cfg.validate()
    check_policy(profile, policy)
    check_category_map(profile, cfg.category_map)
    if len(traffic) == 0:
        raise SpecsimError("traffic holds no requests")
    if cfg.max_requests is not None:
        traffic = traffic.head(cfg.max_requests)
    knobs = policy.engine  # the policy's engine knobs win, on a copy: the caller's config stays as it was
    kv = profile.target.kv
    cfg = dataclasses.replace(
        cfg,
        max_num_seqs=knobs.max_num_seqs or cfg.max_num_seqs,
        max_num_batched_tokens=knobs.max_num_batched_tokens or cfg.max_num_batched_tokens,
        block_size=cfg.block_size or (kv.block_size if kv is not None else 16),
    )
    cfg.validate()
    speculating = policy.drafter is not None and policy.max_k > 0
    drafter = policy.drafter.name if policy.drafter is not None and speculating else None
    spec = profile.drafters.get(drafter) if drafter is not None else None
    if spec is not None and spec.family_kind not in SIMULATED_FAMILIES:
        raise SpecsimError(f"drafter {drafter!r} is a {spec.family_kind} drafter, which the simulator does not "
                           f"replay (it replays {', '.join(SIMULATED_FAMILIES)})")
    if spec is not None and spec.family is not None and spec.family.kind == "tree":
        # NOTE: a tree verifies tree_size tokens and its traces were made for that size; a smaller tree
        # accepts less than min(r, K), so the policy may only turn the whole tree on or off
        used = sorted({int(r[2]) for r in policy.k_schedule if r[2] > 0})
        allowed = spec.family.sizes
        if not set(used) <= set(allowed):
            names = " or ".join(str(z) for z in allowed)
            raise SpecsimError(f"drafter {drafter!r} is a tree with traces for {names} tokens: a policy may draft "
                               f"K={names} (a whole tree) or 0, not {used}")
    if spec is not None and spec.family is not None and spec.family.kind == "overlapped" \
            and profile.target.composition is not None:
        raise SpecsimError(f"drafter {drafter!r} drafts overlapped with verification, which the simulator "
                           "costs from cost tables only (this profile has a composition model)")
    if spec is not None and spec.family is not None and spec.family.heads is not None \
            and policy.max_k > spec.family.heads:
        raise SpecsimError(f"the policy drafts K={policy.max_k} but drafter {drafter!r} has {spec.family.heads} heads")
    if cost is None:
        cost = StepCostModel(profile, drafter, b_max=max(cfg.max_num_seqs, 1))
    if drafter is not None and replay is None:
        tree = spec.family.sizes if spec is not None and spec.family is not None else []
        traces = profile.traces_for(drafter)
        levels = tree or sorted({t.at_k for t in traces if t.at_k is not None})
        replay = AcceptanceReplay(traces, seed=cfg.seed, tree_sizes=levels or None)
    if not speculating:
        replay = None

    num_blocks = kv_blocks(profile, cfg)
    usable = num_blocks - 1  # vLLM's block pool keeps one block as its null block
    lengths = traffic.input_lengths + traffic.output_lengths
    longest = int(lengths.max())
    max_model_len = cfg.max_model_len or (longest + policy.max_k + 2)
    out_lengths = traffic.output_lengths
    capped = 0
    if cfg.max_model_len is not None:
        too_long = traffic.input_lengths >= cfg.max_model_len
        if too_long.any():
            i = int(np.argmax(too_long))
            raise SpecsimError(f"request {traffic.request_ids[i]} has a {int(traffic.input_lengths[i])}-token prompt, "
                               f"not shorter than max_model_len {cfg.max_model_len} (vLLM rejects it)")
        over = lengths > cfg.max_model_len
        capped = int(over.sum())
        if capped:
            out_lengths = np.minimum(out_lengths, cfg.max_model_len - traffic.input_lengths)
    lookahead = policy.max_k if policy.drafter is not None and speculating and cfg.lookahead == "auto" and \
        policy.drafter.method in LOOKAHEAD_METHODS else 0
    largest = min(longest + policy.max_k + lookahead, max_model_len)
    if -(-largest // cfg.block_tokens) > usable:
        raise SpecsimError(
            f"a request needs {largest} tokens of KV cache but a replica holds only "
            f"{usable * cfg.block_tokens}; raise --kv-blocks or cut long requests"
        )
    if not cfg.chunked_prefill and longest > cfg.max_num_batched_tokens:
        raise SpecsimError(
            f"without chunked prefill every prompt (plus any output recomputed after a preemption) must fit "
            f"in one step: the longest request has {longest} tokens but max_num_batched_tokens is "
            f"{cfg.max_num_batched_tokens} (vLLM refuses max_num_batched_tokens < max_model_len without chunked "
            f"prefill)"
        )

    table = RequestTable(traffic)
    if capped:
        table.cols.out[:] = out_lengths
    prefix = prefix_caching_on(cfg, traffic)
    identities = None
    if prefix:
        from specsim.simulator.prefix import block_identities

        identities = block_identities(traffic, cfg.block_tokens, policy.max_k + lookahead + 2)
        table.with_arenas(identities.offsets, identities.ids)
        if num_blocks >= _UNLIMITED_BLOCKS:  # never binds: room for every request's blocks at once
            num_blocks = int(len(identities.ids)) + 2
            usable = num_blocks - 1
    if replay is not None:
        table.cols.tstart[:], table.cols.tlen[:] = replay.assign(traffic.categories, prompt_ids=traffic.prompt_ids,
                                                                 category_map=cfg.category_map)
        kernel.seed_rng(cfg.seed)
    is_async = async_scheduling(cfg, policy, profile.metadata.device)
    if is_async and policy.max_k and (policy.hysteresis or policy.acceptance_floor is not None):
        raise SpecsimError("hysteresis and the acceptance floor need specsim's proposer, which vLLM runs only "
                           "without async scheduling: pass --async-scheduling off")
    params = engine_params(cfg, policy, replay, max_model_len, detail, is_async)
    params.pi[kernel.P_PREFIX] = int(prefix)
    params.pi[kernel.P_WATERMARK] = int(cfg.watermark * num_blocks)
    acc = replay.arrays if replay is not None else _NO_TRACES
    env = simpy.Environment()
    closed: ClosedLoop | None = None

    def on_finish(i: int) -> None:
        if closed is not None:
            closed.on_finish(i)

    engine_cls = ReplicaEngine
    if cfg.scheduler == "vllm":
        from specsim.simulator.vllm_oracle import VllmReplicaEngine

        engine_cls = VllmReplicaEngine
    engines = [
        engine_cls(env, r, table, params, acc, cost.arrays, usable, on_finish, detail=detail,
                   identities=identities.count if identities is not None else 0)
        for r in range(cfg.replicas)
    ]
    if cfg.scheduler == "vllm":
        for e in engines:
            assert isinstance(e, VllmReplicaEngine)
            e.configure(cfg, policy, profile, num_blocks, max_model_len, traffic)
    router = Router(engines, table, cfg.router)
    if cfg.concurrency is not None:
        closed = ClosedLoop(env, len(traffic), router, cfg.concurrency, cfg.think_time)
    else:
        t0 = float(traffic.timestamps[0])
        arrival = (traffic.timestamps - t0) / cfg.rate_scale
        if type(engines[0]) is ReplicaEngine and cfg.replicas == 1 and not params.pi[kernel.P_STOPFIN]:
            # NOTE: one replica in open loop needs no router and no SimPy event per request: the
            # compiled loop takes the arrivals itself (the same order of events; the parity tests
            # against vLLM's scheduler run through this path)
            table.arrival[:] = arrival
            table.replica[:] = 0
            engines[0].run_open_loop(np.ascontiguousarray(arrival, dtype=np.float64))
        else:
            env.process(open_loop(env, arrival.tolist(), router))
    env.run()

    if not np.isfinite(table.finish).all():  # pragma: no cover - would be a simulator bug
        raise RuntimeError(f"{int((~np.isfinite(table.finish)).sum())} requests never finished")
    for e in engines:
        e.finish_log()
    steps = _merge_steps(engines)
    itl_hist = np.sum([e.rep.itl_hist for e in engines], axis=0)
    itl_sum = sum(float(e.rep.rf[kernel.RF_ITL_SUM]) for e in engines)
    busy = sum(e.busy_time for e in engines)
    summary = summarise(table, steps, itl_hist, itl_sum, busy, cfg.replicas, cfg.slo_ttft, cfg.slo_tpot)
    summary["policy_max_k"] = policy.max_k
    summary["drafter"] = drafter
    summary["scheduler"] = cfg.scheduler
    summary["async_scheduling"] = is_async
    extrap = sum(float(e.rep.rf[kernel.RF_EXTRAP]) for e in engines)
    summary["extrapolated_step_share"] = extrap / max(len(steps["start"]), 1)
    summary["kv_blocks"] = int(num_blocks) if num_blocks < _UNLIMITED_BLOCKS else None
    summary["prefix_caching"] = bool(prefix)
    if prefix:
        hits = sum(int(e.rep.ri[kernel.RI_HIT_TOKENS]) for e in engines)
        queries = sum(int(e.rep.ri[kernel.RI_QUERY_TOKENS]) for e in engines)
        summary["prefix_cache_hit_rate"] = hits / queries if queries else 0.0
        summary["prefix_cached_tokens"] = hits
        summary["prefix_identities_from"] = identities.source if identities is not None else None
    if profile.target.start_spread is not None:
        summary["start_spread"] = profile.target.start_spread
    if capped:
        summary["capped_at_max_model_len"] = capped
    if replay is not None:
        n = len(traffic)
        summary["acceptance_matching"] = {
            "by_prompt": replay.prompt_matches, "by_category": replay.category_matches,
            "by_category_map": replay.map_matches,
            "drawn": n - replay.prompt_matches - replay.category_matches - replay.map_matches,
            "drawn_categories": {c: k for c, k in sorted(replay.drawn.items(), key=lambda kv: kv[0] or "")
                                 if c is not None},
            "profile_categories": replay.categories}
        if traffic.prompt_ids is not None:
            summary["acceptance_prompt_matches"] = replay.prompt_matches
        if replay.mode == MODE_SAMPLED_LEGACY:
            summary["acceptance_note"] = ("sampled traces without per-draft-token probabilities: the j-th draft "
                                          "token uses p[pos + j] (approximate)")
    detail_rows = None
    if detail:
        detail_rows = _merge_detail(engines)
    return SimResult(
        summary=summary,
        requests=request_columns(table),
        request_ids=traffic.request_ids,
        categories=traffic.categories,
        steps=steps,
        detail=detail_rows,
    )


_NO_TRACES = kernel.Acc(np.zeros((1, 1), dtype=np.int16), np.zeros(1, dtype=np.int16), np.zeros((1, 1)),
                        np.zeros(1, dtype=np.int64))


def _merge_steps(engines: list[ReplicaEngine]) -> dict[str, np.ndarray]:
    logs = [e.log.columns() for e in engines]
    if len(logs) == 1:  # one replica: its columns as they are (a day of steps is not copied again)
        return {**logs[0], "replica": np.zeros(len(logs[0]["start"]), dtype=np.int32)}
    out = {k: np.concatenate([lg[k] for lg in logs]) for k in logs[0]}
    out["replica"] = np.concatenate([np.full(len(lg["start"]), e.index) for e, lg in zip(engines, logs, strict=True)])
    return out


def _merge_detail(engines: list[ReplicaEngine]) -> dict[str, np.ndarray]:
    rows, pre = [], []
    for e in engines:
        d, p = e.log.detail_rows()
        rows.append(np.column_stack([np.full(len(d), e.index), d]))
        pre.append(np.column_stack([np.full(len(p), e.index), p]))
    return {"rows": np.concatenate(rows), "preemptions": np.concatenate(pre)}
