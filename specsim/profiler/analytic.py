"""Analytic profiles, so the simulator runs before anything was measured (or on hardware you do not have).

Step costs come from `specsim.profiler.stepmodel`: by default the roofline with efficiency terms fitted to
published measurements (`specsim.profiler.calibrate`, error table in docs/analytic-calibration.md); with
`calibrated=False` the plain roofline (max of weight bytes / bandwidth and FLOPs / peak, plus KV reads and
a fixed overhead). Acceptance traces are synthetic (i.i.d. per-token acceptance alpha per category) unless
measured traces are copied in (`acceptance_from`).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.profile import (
    AcceptanceTrace,
    CostTable,
    DecodeCost,
    DrafterFamily,
    DrafterSpec,
    PrefillCurve,
    Profile,
    ProfileMetadata,
    TargetCost,
)
from specsim.profiler.hardware import GPUS, MODEL_ALIASES, MODELS, GpuSpec, ModelSpec, lookup_gpu, lookup_model
from specsim.profiler.stepmodel import (
    BW_EFF,
    FLOP_EFF,
    STEP_OVERHEAD_S,
    Deployment,
    StepModel,
    committed_calibration,
    committed_fit,
)

# Per-token acceptance of a small same-family draft model, by workload (Spec-Bench-like figures).
DEFAULT_ALPHA = {"code": 0.8, "math": 0.75, "conv": 0.65, "chat": 0.65, "summarization": 0.7, "translation": 0.55}
NGRAM_ALPHA = {"code": 0.55, "math": 0.35, "conv": 0.3, "chat": 0.3, "summarization": 0.5, "translation": 0.2}
# EAGLE-style head: vLLM issue #20780 reports acceptance length 2.47 at K=7 for EAGLE-1 on MT-Bench (Llama-3.1-8B),
# i.e. alpha ~0.6 per token on chat; code and math accept more (Spec-Bench).
EAGLE_ALPHA = {"code": 0.75, "math": 0.7, "conv": 0.6, "chat": 0.6, "summarization": 0.6, "translation": 0.5}
DRAFTER_KINDS = {"draft_model": "draft_model", "eagle": "eagle", "eagle3": "eagle", "mtp": "eagle", "ngram": "ngram",
                 "suffix": "ngram"}
HEADS_DECAY = 0.8
"""Assumed, not measured: a Medusa-style head's acceptance falls by this factor per position (the
head j tokens ahead sees no token between it and the target's last hidden state). Replace with
measured traces (--acceptance-from) for decisions."""
FAMILY_DRAFTERS = {  # family -> (drafter name, vLLM-style method)
    "heads": ("medusa", "medusa"),
    "parallel": ("p-eagle", "eagle3"),
    "block": ("block", "dflash"),
    "tree": ("eagle-tree", "eagle"),
    "overlapped": ("ssd", "draft_model"),
}
TREE_SIZE, TREE_DEPTH = 59, 6
"""EAGLE-2's tree as Spec-Bench runs it for 7B models: 60 tokens with the root, 6 levels
(experiments/drafter_families/spec_bench_configs.md)."""
OVERLAP_HIT_RATE = 0.7
"""Assumed, not measured: how often an overlapped drafter pre-drafted the verification outcome."""


def tree_alpha(alpha: float, width: float = 2.0) -> float:
    """Per-depth acceptance of a tree drafter whose chain head accepts `alpha`, with `width` candidates
    per depth: the better of two independent candidates, 1 - (1 - alpha)^2, once the tree is at least
    two wide (a one-wide tree is a chain). An assumption, checked once: EAGLE's chat alpha 0.6 gives
    0.84, i.e. a mean accepted length of 4.41 at depth 6 against EAGLE-2's published 4.34 (Spec-Bench,
    A100 Vicuna-7B)."""
    return 1.0 - (1.0 - alpha) ** (2 if width >= 2 else 1)
"""Drafter families `analytic_profile(families=...)` adds beside the chain drafters."""
"""Measured drafter method -> the analytic drafter whose costs stand in for it."""


def synthetic_traces(
    drafter: str,
    alphas: dict[str | None, float],
    k_max: int,
    per_category: int = 32,
    length: int = 512,
    seed: int = 0,
    mode: str = "greedy",
    decay: float = 1.0,
    cap: int | None = None,
) -> list[AcceptanceTrace]:
    """Acceptance traces with per-token acceptance alpha: r[pos] = min(run of successes, k_max). With
    `decay` < 1 the j-th draft token (j = 0, 1, ...) is accepted with alpha * decay^j (heads); `cap`
    bounds a run below k_max (a tree of k_max nodes accepts at most its depth)."""
    if not 0.0 < decay <= 1.0:
        raise SpecsimError(f"acceptance decay must be in (0, 1], got {decay}")
    rng = np.random.default_rng(seed)
    out: list[AcceptanceTrace] = []
    for cat, alpha in alphas.items():
        if not 0.0 <= alpha < 1.0:
            raise SpecsimError(f"acceptance alpha must be in [0, 1), got {alpha} for {cat}")
        for j in range(per_category):
            common = dict(
                prompt_id=f"{cat or 'any'}-{j}",
                category=cat,
                drafter=drafter,
                prompt_length=256,
                output_length=length,
                k_max=k_max,
            )
            if mode == "greedy" and decay < 1.0:
                # position j accepted with alpha * decay^j: the run ends at the first failure
                ok = rng.random((length, k_max)) < alpha * decay ** np.arange(k_max)
                runs = np.where(ok.all(axis=1), k_max, np.argmin(ok, axis=1))
                out.append(AcceptanceTrace(**common, mode="greedy", r=np.minimum(runs, cap or k_max).tolist()))
            elif mode == "greedy":
                # successes before the first failure, capped: a geometric draw minus one
                runs = rng.geometric(1.0 - alpha, size=length) - 1 if alpha > 0 else np.zeros(length, int)
                out.append(AcceptanceTrace(**common, mode="greedy",
                                           r=np.minimum(runs, min(k_max, cap or k_max)).tolist()))
            else:
                out.append(AcceptanceTrace(**common, mode="sampled", p=[alpha] * length))
    return out


def _fit_summary(calibrated: bool) -> dict:
    """metadata.fit of an analytic profile: which model, and its held-out error against public figures."""
    rep = committed_fit()
    which = "calibrated" if calibrated else "uncalibrated"
    hold = rep.get("holdout", {})
    return {
        "cost_model": "calibrated" if calibrated else "uncalibrated roofline",
        "validation_mean_abs_rel_error": hold.get(f"{which}_mean"),
        "validation_max_abs_rel_error": hold.get(f"{which}_max"),
        "validation_points": hold.get("points"),
        "table": rep.get("table", "docs/analytic-calibration.md"),
    }


def analytic_profile(
    target: str = "llama-70b",
    drafter_model: str | None = "llama-1b",
    gpu: str = "h100",
    tp: int | None = None,
    k_max: int = 8,
    reference_context: int = 1024,
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    alphas: dict[str | None, float] | None = None,
    ngram: bool = True,
    seed: int = 0,
    *,
    calibrated: bool = True,
    dtype: str = "bf16",
    eagle: bool = False,
    acceptance_from: Profile | None = None,
    acceptance_drafter: str | None = None,
    families: tuple[str, ...] = (),
    heads: int = 4,
    trees: tuple[tuple[int, int], ...] = ((TREE_SIZE, TREE_DEPTH),),
    hit_rate: float = OVERLAP_HIT_RATE,
) -> Profile:
    """An analytic profile for a named target (and draft model) on a named GPU.

    `eagle` adds an EAGLE-style head drafter; `families` adds one drafter per family named
    (FAMILY_DRAFTERS: Medusa-style heads, parallel drafting, block drafting), each costed as its family
    drafts (StepModel.heads_s / parallel_s) with EAGLE-like synthetic acceptance (heads: falling by
    HEADS_DECAY per position); `acceptance_from` copies a measured profile's acceptance traces (of
    `acceptance_drafter`, default: each of its drafters) over the synthetic ones.
    """
    unknown = [f for f in families if f not in FAMILY_DRAFTERS]
    if unknown:
        raise SpecsimError(f"unknown drafter family {unknown[0]!r} for an analytic profile "
                           f"(choose from {', '.join(FAMILY_DRAFTERS)})")
    if "overlapped" in families and drafter_model is None:
        raise SpecsimError("an overlapped drafter is a draft model running beside the target: give --drafter")
    if not 1 <= heads <= 64:
        raise SpecsimError(f"heads must lie in 1..64, got {heads}")
    trees = tuple(sorted((int(z), int(d)) for z, d in trees))
    if not trees or len({z for z, _ in trees}) != len(trees):
        raise SpecsimError(f"trees must be distinct (size, depth) pairs, got {list(trees)}")
    for size, depth in trees:
        if not 1 <= depth <= size <= 512 or depth > 64:
            raise SpecsimError(f"a tree needs 1 <= depth <= size <= 512 (depth <= 64), got size {size}, depth {depth}")
    tree_size, tree_depth = trees[-1]
    if not 0.0 <= hit_rate <= 1.0:
        raise SpecsimError(f"the overlap hit rate must lie in [0, 1], got {hit_rate}")
    if "tree" in families:
        k_max = max(k_max, tree_size)  # NOTE: the target's table must cover verifying the whole tree
    tm = lookup_model(target)
    g = lookup_gpu(gpu)
    weights = Deployment(tm, g, 1, dtype).weight_bytes()
    if tp is None:
        tp = 1
        while weights * 1.15 > g.memory * tp:
            tp *= 2
    if tp < 1:
        raise SpecsimError("tp must be >= 1")
    dep = Deployment(tm, g, tp, dtype)
    if weights > 0.9 * g.memory * tp:
        raise SpecsimError(f"{target} ({dtype}) does not fit on {tp} x {gpu}; raise --tp")
    cal = committed_calibration() if calibrated else None
    sm = StepModel(dep, cal)
    ks = list(range(k_max + 1))
    ref = reference_context
    step = [[sm.decode_s(b, k, ref) * 1e3 for k in ks] for b in batch_sizes]
    kv_shards = min(tp, tm.kv_heads) if calibrated else tp
    kv_bw = g.bandwidth * (cal.attn_eff if cal is not None else BW_EFF)
    ctx_ms = dep.kv_bytes_per_token / kv_shards / kv_bw * 1e3
    pre_tokens = [16, 64, 256, 1024, 2048, 4096, 8192, 16384]
    pre_ms = [sm.prefill_s(p) * 1e3 for p in pre_tokens]
    kv_tokens = int((0.9 * g.memory * tp - weights) / dep.kv_bytes_per_token)

    def table(fn) -> CostTable:  # noqa: ANN001
        return CostTable(batch_sizes=list(batch_sizes), ks=ks,
                         step_ms=[[fn(b, k) * 1e3 for k in ks] for b in batch_sizes])

    drafters: dict[str, DrafterSpec] = {}
    traces: list[AcceptanceTrace] = []
    if drafter_model is not None:
        dm = lookup_model(drafter_model)
        drafters["draft_model"] = DrafterSpec(
            method="draft_model", model=drafter_model, k_max=k_max,
            cost=table(lambda b, k: sm.draft_model_s(dm, b, k, ref)),
        )
        traces += synthetic_traces("draft_model", alphas or DEFAULT_ALPHA, k_max, seed=seed)
    if eagle:
        drafters["eagle"] = DrafterSpec(method="eagle", model=f"{target}-eagle-head", k_max=k_max,
                                        cost=table(lambda b, k: sm.head_s(b, k, ref)))
        traces += synthetic_traces("eagle", EAGLE_ALPHA, k_max, seed=seed + 2)
    for n, fam in enumerate(dict.fromkeys(families)):
        name, method = FAMILY_DRAFTERS[fam]
        spec_k, alphas_f, depth = k_max, dict(EAGLE_ALPHA), None
        model_name: str | None = f"{target}-{name}"
        if fam == "heads":
            spec_k = min(k_max, heads)
            cost = table(lambda b, k, h=spec_k: sm.heads_s(b, h) if k > 0 else 0.0)
            family = DrafterFamily(kind="heads", heads=spec_k, source="analytic (StepModel.heads_s)")
        elif fam == "tree":
            spec_k, depth = tree_size, tree_depth

            def tree_cost(b: float, k: int) -> float:
                # drafting the smallest tree of at least K tokens (a policy drafts whole trees only)
                z, d = next(((z, d) for z, d in trees if z >= k), trees[-1])
                return sm.tree_draft_s(b, d, -(-z // d), ref) if k > 0 else 0.0

            cost = table(tree_cost)
            family = DrafterFamily(kind="tree", tree_size=tree_size, tree_depth=tree_depth,
                                   tree_sizes=[z for z, _ in trees] if len(trees) > 1 else None,
                                   source="tree drafted by an EAGLE-style head, depth passes of size/depth nodes; "
                                          "per-depth acceptance tree_alpha()")
            for z, d in trees[:-1]:  # the smaller trees' traces: same prompts and draws, their own depth
                small = synthetic_traces(name, {c: tree_alpha(a, z / d) for c, a in EAGLE_ALPHA.items()}, z,
                                         seed=seed + 3 + n, cap=d)
                traces += [t.model_copy(update={"tree_size": z}) for t in small]
            alphas_f = {c: tree_alpha(a, tree_size / tree_depth) for c, a in EAGLE_ALPHA.items()}
        elif fam == "overlapped":
            dm = lookup_model(str(drafter_model))
            model_name = drafter_model
            cost = table(lambda b, k, m=dm: sm.draft_model_s(m, b, k, ref))
            family = DrafterFamily(kind="overlapped", hit_rate=hit_rate,
                                   source="given hit rate; draft model costs")
            alphas_f = dict(alphas or DEFAULT_ALPHA)
        else:
            cost = table(lambda b, k: sm.parallel_s(b, k, ref))
            family = DrafterFamily(kind=fam, source="analytic (StepModel.parallel_s)")
        drafters[name] = DrafterSpec(method=method, model=model_name, k_max=spec_k, cost=cost, family=family)
        traces += synthetic_traces(name, alphas_f, spec_k, seed=seed + 3 + n,
                                   decay=HEADS_DECAY if fam == "heads" else 1.0, cap=depth)
    if ngram:
        drafters["ngram"] = DrafterSpec(
            method="ngram", params={"prompt_lookup_min": 2, "prompt_lookup_max": 4}, k_max=k_max,
            cost=table(lambda b, k: sm.ngram_s(b, k)),
        )
        traces += synthetic_traces("ngram", NGRAM_ALPHA, k_max, seed=seed + 1)
    acceptance_note = "synthetic i.i.d. acceptance"
    copied: dict = {}
    if acceptance_from is not None:
        traces, copied = _measured_acceptance(acceptance_from, acceptance_drafter, drafters, traces)
        acceptance_note = "acceptance measured (" + ", ".join(
            f"{c['measured_drafter']} -> {name}" for name, c in copied.items()) + ")"
    if calibrated:
        what = "Calibrated analytic estimate (roofline plus efficiency terms fitted to published measurements)"
    else:
        what = (f"Roofline estimate (bandwidth efficiency {BW_EFF:.0%}, compute efficiency {FLOP_EFF:.0%}, "
                f"{STEP_OVERHEAD_S * 1e3:.1f} ms per step)")
    meta = ProfileMetadata(
        source="analytic",
        hardware=f"{tp} x {g.name}",
        device="cuda",
        engine="analytic-calibrated" if calibrated else "roofline",
        target_model=target,
        dtype={"bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        notes=f"{what}; {acceptance_note}. Costs are estimated: replace with a measured profile for decisions.",
        fit=_fit_summary(calibrated),
        analytic={
            "target": asdict(tm), "drafter": drafter_model, "gpu": asdict(g), "tp": tp, "dtype": dtype,
            "calibrated": calibrated,
            "calibration": cal.to_dict() if cal is not None else None,
            "step_overhead_s": cal.overhead_s("vllm") if cal is not None else STEP_OVERHEAD_S,
            "alphas": alphas or DEFAULT_ALPHA,
            **({"acceptance_from": copied} if copied else {}),
        },
    )
    drafters = {n: d if d.acceptance_source is not None else d.model_copy(update={"acceptance_source": "synthetic"})
                for n, d in drafters.items()}
    return Profile(
        metadata=meta,
        k_max=k_max,
        target=TargetCost(
            decode=DecodeCost(
                batch_sizes=list(batch_sizes), ks=ks, step_ms=step,
                reference_context=reference_context, context_ms_per_token=ctx_ms,
            ),
            prefill=PrefillCurve(tokens=pre_tokens, step_ms=pre_ms),
            kv_cache_tokens=max(kv_tokens, 16),
        ),
        drafters=drafters,
        acceptance=traces,
    )


def _measured_acceptance(
    measured: Profile, name: str | None, drafters: dict[str, DrafterSpec], traces: list[AcceptanceTrace]
) -> tuple[list[AcceptanceTrace], dict]:
    """Replace the synthetic traces of the analytic drafter matching each measured drafter's method."""
    if name is not None and name not in measured.drafters:
        known = ", ".join(sorted(measured.drafters)) or "none"
        raise SpecsimError(f"the measured profile has no drafter {name!r} (it has: {known})")
    names = [name] if name is not None else [n for n in measured.drafters if measured.traces_for(n)]
    if not names:
        raise SpecsimError("the measured profile has no acceptance traces")
    copied: dict[str, dict] = {}
    out = list(traces)
    for n in names:
        spec = measured.drafters[n]
        kind = DRAFTER_KINDS.get(spec.method)
        if kind is None:
            raise SpecsimError(f"measured drafter {n!r} has method {spec.method!r}, which no analytic drafter models")
        if kind not in drafters:
            flag = {"draft_model": "--drafter MODEL", "eagle": "--eagle", "ngram": "(drop --no-ngram)"}[kind]
            raise SpecsimError(f"measured drafter {n!r} ({spec.method}) needs an analytic {kind} drafter: add {flag}")
        if kind in copied:
            raise SpecsimError(f"two measured drafters map to the analytic {kind} drafter; pick one with "
                               "--acceptance-drafter")
        src = measured.traces_for(n)
        if not src:
            raise SpecsimError(f"the measured profile has no acceptance traces for drafter {n!r}")
        out = [t for t in out if t.drafter != kind]
        out += [t.model_copy(update={"drafter": kind}) for t in src]
        k_cap = min(t.k_max for t in src)
        drafters[kind] = drafters[kind].model_copy(update={"k_max": min(drafters[kind].k_max, k_cap),
                                                           "acceptance_source": spec.acceptance_source or "traces"})
        copied[kind] = {"measured_drafter": n, "method": spec.method, "traces": len(src), "k_max": k_cap,
                        "target_model": measured.metadata.target_model, "hardware": measured.metadata.hardware}
    return out, copied


def constant_profile(
    step_ms: float,
    draft_ratio: float,
    alpha: float,
    k_max: int = 8,
    prefill_ms: float = 0.0,
    trace_length: int = 4096,
    traces: int = 16,
    seed: int = 0,
    mode: str = "greedy",
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
) -> Profile:
    """A textbook profile: constant target step, drafter costing `draft_ratio` x step per token.

    Matches the assumptions of Leviathan et al.'s speedup formula; used in tests and by the tuner's
    analytic check.
    """
    ks = list(range(k_max + 1))
    flat = [[step_ms for _ in ks] for _ in batch_sizes]
    draft = [[k * draft_ratio * step_ms for k in ks] for _ in batch_sizes]
    pre = max(prefill_ms, 1e-9)
    return Profile(
        metadata=ProfileMetadata(source="analytic", hardware="textbook", engine="constant", target_model="any"),
        k_max=k_max,
        target=TargetCost(
            decode=DecodeCost(batch_sizes=list(batch_sizes), ks=ks, step_ms=flat, reference_context=0),
            prefill=PrefillCurve(tokens=[1, 1 << 20], step_ms=[pre, pre]),
        ),
        drafters={
            "draft": DrafterSpec(
                method="draft_model", model="draft", k_max=k_max,
                cost=CostTable(batch_sizes=list(batch_sizes), ks=ks, step_ms=draft),
            )
        },
        acceptance=synthetic_traces("draft", {None: alpha}, k_max, traces, trace_length, seed, mode),
    )


def best_static_k(alpha: float, c: float, k_max: int) -> int:
    """Analytic optimum of the Leviathan speedup (1 - a^(K+1)) / ((1 - a)(Kc + 1)) over 0..k_max."""
    def speedup(k: int) -> float:
        return (1 - alpha ** (k + 1)) / ((1 - alpha) * (k * c + 1))

    return max(range(k_max + 1), key=lambda k: (speedup(k), -k))


__all__ = ["GPUS", "MODELS", "MODEL_ALIASES", "GpuSpec", "ModelSpec", "analytic_profile", "best_static_k",
           "constant_profile", "synthetic_traces"]
