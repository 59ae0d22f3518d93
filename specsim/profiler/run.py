"""Orchestrate a profiling run: engines, workloads, checkpoints. The profile itself is assembled by
the pure `assemble.assemble()` from the checkpoint's records.

Engines, each started once (a compiled engine takes minutes to start here, so each covers many
workloads), all with the recording scheduler (recorder.py) and the mode the model is served in:

- **plain**: no speculation. Reference outputs for the acceptance traces, then decode, prefill,
  mixed and served-traffic workloads at K = 0, and the engine's KV capacity.
- **kprobe**: specsim's KProbeProposer at K_max, K changed between steps: decode workloads cycle
  K = 0..K_max, mixed workloads decode at K, served traffic drafts as n-gram does; it also runs the
  n-gram cross-check against vLLM's own counters.
- one engine per drafter as it is served: each n-gram setting with vLLM's own n-gram engine
  (served traffic: what the drafter's terms are fitted on, so a policy is costed by the engine it
  runs in, not by the K-probe standing in for it), suffix (served traffic; traces from vLLM's
  per-request metrics), draft models (decode and served workloads at K = 1 and K_max; traces
  teacher-forced).
- **prefix**: the plain engine with prefix caching on, for partly cached prefills (new tokens
  attending over a cached context: the attention rate of prefill rows).
- **probe** starts of the plain engine: the same small workload on each fresh start, for the
  start-to-start spread.

Every finished workload's steps go to the checkpoint (`keys.py` names every record) before the next
starts, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.profile import Profile
from specsim.profiler import acceptance as acc
from specsim.profiler import keys, workloads
from specsim.profiler.checkpoint import Checkpoint, checkpoint_path
from specsim.profiler.config import ProfileConfig
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
from specsim.profiler.plan import MeasurePlan
from specsim.profiler.stepfit import features
from specsim.profiler.steplogger import StepLogger
from specsim.prompts import Prompt, load_prompts
from specsim.vllmkit.recorder import ASYNC_SCHEDULER, SCHEDULER
from specsim.vllmkit.recorder import ENV as STEP_LOG_ENV

FILLER = "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm red chair. "
MODEL_DRAFTERS = ("draft_model", "eagle", "eagle3", "mtp")
"""Drafters that run a model of their own: their costs are measured in engines of their own at each K."""


def drafter_ks(plan: MeasurePlan, k_max: int) -> list[int]:
    """The K values a model-based drafter's engines run at: 1, k_max and every K the plan's decode cycles."""
    return sorted({1, k_max, *(k for k in plan.ks if 0 < k <= k_max)})


Advance = Callable[[str, str], None]


def filler_ids(tokenizer: Any, n: int, offset: int = 0) -> list[int]:
    """n token ids of a repetitive English text (distinct offsets give distinct prompts)."""
    base = tokenizer.encode(FILLER, add_special_tokens=False)
    reps = (n + offset) // len(base) + 2
    return (base * reps)[offset: offset + n]


class StepReader:
    """Reads an engine's step log incrementally and files its steps under workload windows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.steps: list[dict[str, Any]] = []

    def poll(self) -> None:
        import json

        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind("\n")
        if end < 0:
            return
        self.offset += len(chunk[: end + 1].encode("utf-8"))
        for line in chunk[:end].splitlines():
            try:
                self.steps.append(json.loads(line))
            except json.JSONDecodeError:
                continue

    def window(self, w: workloads.Window) -> list[list[float]]:
        """[period_ms, features...] of every step that started inside the window and has a period."""
        self.poll()
        rows: list[list[float]] = []
        steps = self.steps
        for a, b in zip(steps, steps[1:], strict=False):
            if not (w.t0 <= a["t"] <= w.t1) or not a["rows"] or a.get("w", 1) == 0:
                continue
            rows.append([round((b["t"] - a["t"]) * 1e3, 4), *features(a["rows"]).tolist()])
        return rows


class Profiler:
    """One profiling run (see module docstring)."""

    def __init__(self, cfg: ProfileConfig, out: Path, resume: bool = True, advance: Advance | None = None) -> None:
        from specsim.models.prepare import resolve_model

        if cfg.costs_only:
            from dataclasses import replace

            cfg = replace(cfg, skip_acceptance=True)
        self.cfg = cfg
        self.out = out
        self.device = detect_device()
        self.env = prepare_env(self.device, kv_cache_gib=cfg.kv_space_gib)
        if cfg.k_max < 1:
            raise SpecsimError("--k-max must be >= 1")
        if any(k < 0 or k > cfg.k_max for k in cfg.plan.ks) or 0 not in cfg.plan.ks:
            raise SpecsimError(f"the K values must include 0 and lie in 0..k_max={cfg.k_max}, got {cfg.plan.ks}")
        self.target = resolve_model(cfg.model)
        self.drafters: list[DrafterConfig] = [parse_drafter(d) for d in cfg.drafters]
        if len({d.name for d in self.drafters}) != len(self.drafters):
            raise SpecsimError("the same drafter was given twice")
        for d in self.drafters:
            check_drafter_supported(d, self.device, self.target, weights=not cfg.costs_only)
        self.prompts: list[Prompt] = load_prompts(cfg.prompts, cfg.num_prompts)
        longest = cfg.plan.max_context() + cfg.plan.steps_per_k * len(cfg.plan.ks) * (cfg.k_max + 1) + 64
        max_len = max(2048, cfg.max_prompt_tokens + cfg.max_tokens + 2 * cfg.k_max + 16, longest)
        seqs = max(cfg.max_num_seqs, cfg.plan.max_batch())
        self.settings = EngineSettings(
            model=str(self.target), device=self.device, dtype=cfg.dtype, max_model_len=max_len,
            max_num_seqs=seqs, max_num_batched_tokens=max(cfg.max_num_batched_tokens, seqs), seed=cfg.seed,
            enforce_eager=not cfg.compiled,
            # NOTE: the draft inherits the target's load config (vllm/model_executor/model_loader/utils.py,
            # get_draft_load_config), so both are built from their config.json alone
            extra={"load_format": "dummy"} if cfg.costs_only else {},
        )
        self.ckpt = Checkpoint(checkpoint_path(out), cfg.fingerprint() | {"target": str(self.target)},
                               resume=resume)
        self.advance: Advance = advance or (lambda phase, msg: None)
        self.logdir = Path(str(checkpoint_path(out)) + ".steps")
        self.logdir.mkdir(parents=True, exist_ok=True)

    # --- bookkeeping ---------------------------------------------------------------------------
    def units(self) -> dict[str, int]:
        """Progress units per phase."""
        p, cfg = self.cfg.plan, self.cfg
        u = {"reference": 0, "plain": 0, "kprobe": 0, "drafters": 0, "probe": 0}
        if not cfg.skip_acceptance:
            u["reference"] = len(self.prompts)
        if not cfg.skip_costs:
            n = len(p.decode) + len(p.decode_heldout) + len(p.prefill) + len(p.prefill_heldout)
            n_mixed = len(p.mixed) + len(p.mixed_heldout)
            n_served = len(p.served_rates) + len(p.served_heldout)
            u["plain"] = n + n_mixed + n_served + len(p.cached_prefill) + len(p.cached_prefill_heldout)
            u["kprobe"] = len(p.decode) + len(p.decode_heldout) + n_mixed * len([k for k in p.mixed_ks if k]) + n_served
            u["probe"] = p.probe_starts * len(p.probe)
            u["plain"] += (p.cost_starts - 1) * (n + n_mixed + n_served)
            u["kprobe"] *= p.cost_starts
            for d in self.drafters:
                if d.method in ("suffix", "ngram"):
                    u["drafters"] += n_served
                elif d.method in MODEL_DRAFTERS:
                    u["drafters"] += len(drafter_ks(p, cfg.k_max)) * (len(p.decode[:4]) + 1)
        if not cfg.skip_acceptance:
            u["drafters"] += len([d for d in self.drafters if d.method != "ngram"])
            if any(d.method == "ngram" for d in self.drafters) and cfg.temperature == 0:
                u["kprobe"] += 1
        return u

    def _note_load(self) -> None:
        try:
            self.ckpt.put(keys.load(len(self.ckpt.records)), {"load1": os.getloadavg()[0]})
        except OSError:
            pass

    def _start(self, label: str, spec: dict[str, Any] | None = None, detailed: bool = False,
               model: str | None = None, eager: bool = False,
               extra: dict[str, Any] | None = None) -> tuple[Any, StepReader, StepLogger]:
        """Start an engine with the recording scheduler; its step log is a fresh file."""
        n = sum(1 for k in self.ckpt.records if k.startswith("engine/"))
        log = self.logdir / f"{n:02d}-{label.replace('/', '_')}.jsonl"
        log.unlink(missing_ok=True)
        os.environ[STEP_LOG_ENV] = str(log)
        settings = EngineSettings(**{**asdict(self.settings), "model": model or self.settings.model,
                                     "extra": {**self.settings.extra, **(extra or {})},
                                     "enforce_eager": True if eager else self.settings.enforce_eager})
        settings.extra["scheduler_cls"] = SCHEDULER
        t0 = time.monotonic()
        llm, kwargs = build_llm(settings, spec, detailed_spec=detailed)
        kv = _kv_info(llm)
        self.ckpt.put(keys.engine(label, n), {"llm_kwargs": {k: v for k, v in kwargs.items() if k != "model"},
                                              "startup_s": round(time.monotonic() - t0, 1), "kv": kv,
                                              "start": n})
        self._start_index = n
        return llm, StepReader(log), StepLogger().attach(llm)

    def _save(self, key: str, reader: StepReader, w: workloads.Window, drafter: str | None, heldout: bool) -> None:
        rows = reader.window(w)
        self.ckpt.put(key, {**w.to_dict(), "drafter": drafter, "heldout": heldout, "start": self._start_index,
                            "steps": rows})

    # --- workloads -----------------------------------------------------------------------------
    def _decode_workloads(self, llm: Any, reader: StepReader, engine: str, ks: list[int],
                          probe_file: Path | None, drafter: str | None) -> None:
        from specsim.profiler.kprobe import set_probe

        p = self.cfg.plan
        tok = llm.get_tokenizer()
        points = [(b, c, False) for b, c in p.decode] + [(b, c, True) for b, c in p.decode_heldout]
        for b, c, held in points:
            key = keys.workload(engine, "decode", f"b{b}-c{c}")
            if self.ckpt.done(key):
                continue
            def on_step(n: int, ks: list[int] = ks) -> None:
                if probe_file is not None and n % p.steps_per_k == 0 and n // p.steps_per_k < len(ks):
                    set_probe(probe_file, ks[n // p.steps_per_k])

            if probe_file is not None:
                set_probe(probe_file, ks[0])
            steps = p.steps_per_k * len(ks)
            prompts = [filler_ids(tok, c, offset=i) for i in range(b)]
            self._note_load()
            w = workloads.decode(llm, prompts, (steps + 2) * (1 + max(ks)), key, {"batch": b, "context": c, "ks": ks},
                                 on_step, max_steps=steps + 1)
            self._save(key, reader, w, drafter, held)
            self.advance(keys.engine_kind(engine), f"decode B={b} C={c}")

    def _prefill_workloads(self, llm: Any, reader: StepReader, engine: str) -> None:
        p = self.cfg.plan
        tok = llm.get_tokenizer()
        for t, held in [(t, False) for t in p.prefill] + [(t, True) for t in p.prefill_heldout]:
            key = keys.workload(engine, "prefill", f"t{t}")
            if self.ckpt.done(key):
                continue
            w = workloads.prefill(llm, filler_ids(tok, t, offset=7), key, {"tokens": t})
            self._save(key, reader, w, None, held)
            self.advance(keys.engine_kind(engine), f"prefill {t} tokens")

    def _mixed_workloads(self, llm: Any, reader: StepReader, engine: str, k: int, probe_file: Path | None,
                         drafter: str | None) -> None:
        from specsim.profiler.kprobe import set_probe

        p = self.cfg.plan
        tok = llm.get_tokenizer()
        for (b, t), held in [(m, False) for m in p.mixed] + [(m, True) for m in p.mixed_heldout]:
            key = keys.workload(engine, "mixed", f"k{k}-b{b}-t{t}")
            if self.ckpt.done(key):
                continue
            if probe_file is not None:
                set_probe(probe_file, k)
            arrivals = [filler_ids(tok, t, offset=100 + j) for j in range(3)]
            # decode long enough to cover the three arrivals' chunks
            chunks = sum(-(-t // max(1, self.settings.max_num_batched_tokens - b * (1 + k))) for _ in arrivals)
            w = workloads.mixed(llm, [filler_ids(tok, 64, offset=j) for j in range(b)], 3 * 4 + chunks + 8,
                                arrivals, key, {"decoders": b, "arrival_tokens": t, "k": k})
            self._save(key, reader, w, drafter, held)
            self.advance(keys.engine_kind(engine), f"mixed B={b} + {t}-token prompts, K={k}")

    def _served_workloads(self, llm: Any, reader: StepReader, engine: str, drafter: str | None) -> None:
        p = self.cfg.plan
        refs = [self.ckpt.records.get(keys.reference(q.prompt_id)) for q in self.prompts]
        ids = [r["prompt_ids"] for r in refs if r is not None]
        if not ids:
            tok = llm.get_tokenizer()
            ids = [acc.chat_ids(tok, q, self.cfg.max_prompt_tokens) for q in self.prompts]
        rates = [(r, False) for r in p.served_rates] + [(r, True) for r in p.served_heldout]
        for n, (rate, held) in enumerate(rates):
            key = keys.workload(engine, "served", f"r{rate:g}")
            if self.ckpt.done(key):
                continue
            rng = np.random.default_rng(self.cfg.seed + n)
            gaps = rng.exponential(1.0 / rate, p.served_requests)
            times = np.concatenate([[0.0], np.cumsum(gaps[1:])])
            pick = rng.integers(0, len(ids), p.served_requests)
            arrivals = [(float(t), ids[j], p.served_max_tokens) for t, j in zip(times, pick, strict=True)]
            self._note_load()
            w, _ = workloads.served(llm, arrivals, key, {"rate": rate, "requests": p.served_requests})
            self._save(key, reader, w, drafter, held)
            self.advance(keys.engine_kind(engine), f"served traffic at {rate:g} req/s")

    def _warmup(self, llm: Any) -> None:
        tok = llm.get_tokenizer()
        workloads.decode(llm, [filler_ids(tok, 64, offset=i) for i in range(4)], 8, "warmup", {})

    # --- engines -------------------------------------------------------------------------------
    def _engine_done(self, name: str) -> bool:
        return all(self.ckpt.done(k) for k in self._engine_keys(name))

    def _engine_keys(self, name: str) -> list[str]:
        p, cfg = self.cfg.plan, self.cfg
        out: list[str] = []
        if cfg.skip_costs:
            return out
        dec = [f"b{b}-c{c}" for b, c in p.decode + p.decode_heldout]
        mixed = [f"b{b}-t{t}" for b, t in p.mixed + p.mixed_heldout]
        served = [f"r{r:g}" for r in p.served_rates + p.served_heldout]
        kind = keys.engine_kind(name)
        if kind == "plain":
            out += [keys.workload(name, "decode", d) for d in dec]
            out += [keys.workload(name, "prefill", f"t{t}") for t in p.prefill + p.prefill_heldout]
            out += [keys.workload(name, "mixed", f"k0-{m}") for m in mixed]
            out += [keys.workload(name, "served", s) for s in served]
        elif kind == "kprobe":
            out += [keys.workload(name, "decode", d) for d in dec]
            out += [keys.workload(name, "mixed", f"k{k}-{m}") for k in p.mixed_ks if k for m in mixed]
            out += [keys.workload(name, "served", s) for s in served]
        return out

    def _plain(self, start: int = 0) -> None:
        """The plain engine; `start` > 0 is a repeat of its cost grid on a fresh engine (plan.cost_starts)."""
        cfg = self.cfg
        name = keys.repeat("plain", start)
        need_ref = start == 0 and not cfg.skip_acceptance and any(
            not self.ckpt.done(keys.reference(q.prompt_id)) for q in self.prompts)
        if not need_ref and self._engine_done(name):
            return
        llm, reader, logger = self._start(name)
        try:
            self._warmup(llm)
            if need_ref:
                self._reference(llm)
            if not cfg.skip_costs:
                self._decode_workloads(llm, reader, name, [0], None, None)
                self._prefill_workloads(llm, reader, name)
                self._mixed_workloads(llm, reader, name, 0, None, None)
                self._served_workloads(llm, reader, name, None)
        finally:
            shutdown(llm)

    def _kprobe(self, start: int = 0) -> None:
        """The K-probe engine; `start` > 0 is a repeat of its cost grid on a fresh engine (plan.cost_starts)."""
        from specsim.profiler.kprobe import ENV as PROBE_ENV
        from specsim.profiler.kprobe import PROPOSER, set_probe

        cfg = self.cfg
        name = keys.repeat("kprobe", start)
        ngram = next((d for d in self.drafters if d.method == "ngram"), None)
        need_check = (start == 0 and not cfg.skip_acceptance and cfg.temperature == 0 and ngram is not None
                      and not self.ckpt.done(keys.crosscheck(ngram.name)))
        if not need_check and self._engine_done(name):
            return
        probe = self.logdir / "kprobe.json"
        os.environ[PROBE_ENV] = str(probe)
        lookup = (int(ngram.params["prompt_lookup_min"]), int(ngram.params["prompt_lookup_max"])) if ngram else (2, 4)
        set_probe(probe, cfg.k_max, "ngram", lookup)
        spec = {"method": "custom_class", "model": PROPOSER, "num_speculative_tokens": cfg.k_max}
        llm, reader, logger = self._start(name, spec, detailed=need_check)
        try:
            self._warmup(llm)
            if need_check and ngram is not None:
                set_probe(probe, cfg.k_max, "ngram", lookup)
                self._crosscheck(llm, logger, ngram)
            if not cfg.skip_costs:
                ks = sorted(set(cfg.plan.ks))
                self._decode_workloads(llm, reader, name, ks, probe, None)
                for k in cfg.plan.mixed_ks:
                    if k:
                        self._mixed_workloads(llm, reader, name, k, probe, None)
                set_probe(probe, cfg.k_max, "ngram", lookup)
                # NOTE: labelled as the probe, not as the n-gram drafter: the drafter's own terms come
                # from its real engine (_served_engine), which costs up to 5% more or less per step
                # than the probe at the same composition (experiments/fidelity/proposer_check.py)
                self._served_workloads(llm, reader, name, keys.KPROBE_DRAFTER)
        finally:
            shutdown(llm)

    def _drafter_engines(self) -> None:
        cfg = self.cfg
        for d in self.drafters:
            if d.method == "ngram":
                self._served_engine(d)
            elif d.method == "suffix":
                self._suffix(d)
            elif d.method == "draft_model":
                self._draft_model(d)
            elif d.method in MODEL_DRAFTERS:
                if not cfg.skip_acceptance:
                    self._metrics_traces(d)
                self._model_drafter_costs(d)

    def _suffix(self, d: DrafterConfig) -> None:
        served = [keys.workload(f"drafter-{d.name}", "served", f"r{r:g}")
                  for r in self.cfg.plan.served_rates + self.cfg.plan.served_heldout]
        need = (not self.cfg.skip_acceptance and not self.ckpt.done(keys.drafter(d.name))) or (
            not self.cfg.skip_costs and not all(self.ckpt.done(k) for k in served))
        if not need:
            return
        llm, reader, logger = self._start(f"drafter-{d.name}", d.speculative_config(self.cfg.k_max),
                                          detailed=True)
        try:
            self._warmup(llm)
            if not self.cfg.skip_acceptance and not self.ckpt.done(keys.drafter(d.name)):
                self._vllm_metrics_traces(llm, logger, d)
            if not self.cfg.skip_costs:
                self._served_workloads(llm, reader, f"drafter-{d.name}", d.name)
        finally:
            shutdown(llm)

    def _served_engine(self, d: DrafterConfig) -> None:
        """Served traffic through the drafter's own vLLM engine at K_max (its acceptance comes from the
        n-gram replay of the reference outputs, cross-checked against vLLM's counters)."""
        if self.cfg.skip_costs:
            return
        engine = f"drafter-{d.name}"
        served = [keys.workload(engine, "served", f"r{r:g}")
                  for r in self.cfg.plan.served_rates + self.cfg.plan.served_heldout]
        if all(self.ckpt.done(k) for k in served):
            return
        llm, reader, _ = self._start(engine, d.speculative_config(self.cfg.k_max))
        try:
            self._warmup(llm)
            self._served_workloads(llm, reader, engine, d.name)
        finally:
            shutdown(llm)

    def _metrics_traces(self, d: DrafterConfig) -> None:
        if self.ckpt.done(keys.drafter(d.name)):
            return
        llm, reader, logger = self._start(f"drafter-{d.name}", d.speculative_config(self.cfg.k_max), detailed=True)
        try:
            self._vllm_metrics_traces(llm, logger, d)
        finally:
            shutdown(llm)

    def _vllm_metrics_traces(self, llm: Any, logger: StepLogger, d: DrafterConfig) -> None:
        refs = [self.ckpt.get(keys.reference(q.prompt_id)) for q in self.prompts]
        outs, steps, totals = acc.run_spec(llm, logger, [r["prompt_ids"] for r in refs], self.cfg.max_tokens)
        self.ckpt.put(keys.drafter(d.name), {"outputs": outs, "steps": steps, "totals": totals})
        self.advance("drafters", f"{d.name}: traces from vLLM's per-request metrics")

    def _draft_model(self, d: DrafterConfig) -> None:
        cfg = self.cfg
        if not cfg.skip_acceptance and not self.ckpt.done(keys.drafter(d.name)):
            # teacher-forced argmax (or top-k) of the draft model over the target's outputs
            # eager: this engine only reads the draft's argmax, its costs are not measured
            llm, _, _ = self._start(f"teacher-{d.name}", model=str(d.model), eager=True)
            try:
                rs: dict[str, Any] = {}
                for q in self.prompts:
                    ref = self.ckpt.get(keys.reference(q.prompt_id))
                    if cfg.temperature > 0:
                        rs[q.prompt_id] = acc.topk_logprobs(llm, ref["prompt_ids"], ref["output_ids"][: cfg.max_tokens],
                                                            cfg.logprobs_k)
                    else:
                        rs[q.prompt_id] = acc.draft_argmax(llm, ref["prompt_ids"], ref["output_ids"])
            finally:
                shutdown(llm)
            self.ckpt.put(keys.drafter(d.name), {"argmax" if cfg.temperature == 0 else "topk": rs})
            self.advance("drafters", f"{d.name}: teacher-forced")
        self._model_drafter_costs(d)

    def _model_drafter_costs(self, d: DrafterConfig) -> None:
        """The drafter's own engines at each K of `drafter_ks`: decode workloads (its K passes per step and
        the verification of K + 1 tokens) and one served-traffic workload (its prefill and KV beside the
        target's). The same code for a draft model and an EAGLE head: only their shapes differ."""
        cfg = self.cfg
        if cfg.skip_costs:
            return
        for k in drafter_ks(cfg.plan, cfg.k_max):
            engine = f"drafter-{d.name}-k{k}"
            todo = [(b, c) for b, c in cfg.plan.decode[:4]
                    if not self.ckpt.done(keys.workload(engine, "decode", f"b{b}-c{c}"))]
            served_key = keys.workload(engine, "served", f"r{cfg.plan.served_rates[0]:g}")
            if not todo and self.ckpt.done(served_key):
                continue
            llm, reader, _ = self._start(engine, d.speculative_config(k))
            try:
                self._warmup(llm)
                tok = llm.get_tokenizer()
                for b, c in todo:
                    key = keys.workload(engine, "decode", f"b{b}-c{c}")
                    w = workloads.decode(llm, [filler_ids(tok, c, offset=i) for i in range(b)],
                                         cfg.plan.steps_per_k * 2, key, {"batch": b, "context": c, "k": k})
                    self._save(key, reader, w, d.name, False)
                    self.advance("drafters", f"{d.name} K={k} decode B={b}")
                if not self.ckpt.done(served_key):
                    plan, cfg.plan = cfg.plan, MeasurePlan(**{**cfg.plan.to_dict(),
                                                             "served_rates": cfg.plan.served_rates[:1],
                                                             "served_heldout": []})
                    try:
                        self._served_workloads(llm, reader, engine, d.name)
                    finally:
                        cfg.plan = plan
            finally:
                shutdown(llm)

    def _cached_prefill(self) -> None:
        p = self.cfg.plan
        todo = [(c, n, held) for c, n, held in [(c, n, False) for c, n in p.cached_prefill]
                + [(c, n, True) for c, n in p.cached_prefill_heldout]
                if not self.ckpt.done(keys.workload("prefix", "cached_prefill", f"c{c}-n{n}"))]
        if self.cfg.skip_costs or not todo:
            return
        llm, reader, _ = self._start("prefix", extra={"enable_prefix_caching": True})
        try:
            self._warmup(llm)
            tok = llm.get_tokenizer()
            for j, (c, n, held) in enumerate(todo):
                key = keys.workload("prefix", "cached_prefill", f"c{c}-n{n}")
                self._note_load()
                prefix, new = filler_ids(tok, c, offset=300 + j), filler_ids(tok, n, offset=500 + j)
                w = workloads.cached_prefill(llm, prefix, new, key, {"cached": c, "new": n})
                self._save(key, reader, w, None, held)
                self.advance("plain", f"prefill of {n} tokens after {c} cached")
        finally:
            shutdown(llm)

    def _probes(self) -> None:
        p = self.cfg.plan
        for s in range(p.probe_starts):
            todo = [(b, c) for b, c in p.probe
                    if not self.ckpt.done(keys.workload(f"probe{s}", "decode", f"b{b}-c{c}"))]
            if not todo or self.cfg.skip_costs:
                continue
            llm, reader, _ = self._start(f"probe{s}")
            try:
                self._warmup(llm)
                tok = llm.get_tokenizer()
                for b, c in todo:
                    key = keys.workload(f"probe{s}", "decode", f"b{b}-c{c}")
                    w = workloads.decode(llm, [filler_ids(tok, c, offset=i) for i in range(b)], 2 * p.steps_per_k,
                                         key, {"batch": b, "context": c})
                    self._save(key, reader, w, None, False)
                    self.advance("probe", f"start {s + 2}: B={b}")
            finally:
                shutdown(llm)

    # --- acceptance ----------------------------------------------------------------------------
    def _reference(self, llm: Any) -> None:
        """Greedy target outputs (max_tokens + k_max + 1, so every r[pos] is exact), in batches."""
        tok = llm.get_tokenizer()
        ids = [acc.chat_ids(tok, q, self.cfg.max_prompt_tokens) for q in self.prompts]
        batch = self.settings.max_num_seqs
        for start in range(0, len(self.prompts), batch):
            chunk = list(range(start, min(start + batch, len(self.prompts))))
            if all(self.ckpt.done(keys.reference(self.prompts[i].prompt_id)) for i in chunk):
                continue
            self._note_load()
            outs = acc.generate(llm, [ids[i] for i in chunk], self.cfg.max_tokens + self.cfg.k_max + 1,
                                temperature=self.cfg.temperature)
            for i, o in zip(chunk, outs, strict=True):
                rec: dict[str, Any] = {"prompt_ids": ids[i], "output_ids": list(o.token_ids)}
                if self.cfg.temperature > 0:
                    rec["topk"] = acc.topk_logprobs(llm, ids[i], rec["output_ids"][: self.cfg.max_tokens],
                                                    self.cfg.logprobs_k)
                self.ckpt.put(keys.reference(self.prompts[i].prompt_id), rec)
                self.advance("reference", self.prompts[i].prompt_id)

    def _crosscheck(self, llm: Any, logger: StepLogger, drafter: DrafterConfig) -> None:
        n = min(self.cfg.crosscheck_prompts, len(self.prompts))
        refs = [self.ckpt.get(keys.reference(q.prompt_id)) for q in self.prompts[:n]]
        self._note_load()
        outs, steps, totals = acc.run_spec(llm, logger, [r["prompt_ids"] for r in refs], self.cfg.max_tokens)
        self.ckpt.put(keys.crosscheck(drafter.name), {"outputs": outs, "steps": steps, "totals": totals,
                                                      "k": self.cfg.k_max})
        self.advance("kprobe", f"{drafter.name}: cross-check on {n} prompts")

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> Profile:
        """Measure everything missing, then assemble and return the profile."""
        from specsim.profiler.assemble import assemble

        if not self.ckpt.done(keys.CONTEXT):
            self.ckpt.put(keys.CONTEXT, self.context())
        self._plain()
        self._kprobe()
        self._drafter_engines()
        self._cached_prefill()
        self._probes()
        # NOTE: the repeats come last, hours after the first starts: this machine's speed wanders over
        # minutes (benchmarks/host_stability.py), so a repeat far apart in time averages more of it
        for start in range(1, self.cfg.plan.cost_starts):
            self._plain(start)
            self._kprobe(start)
        return assemble(self.ckpt.records, self.cfg, self.prompts, self.drafters, self.ckpt.get(keys.CONTEXT))

    def context(self) -> dict[str, Any]:
        """Facts about this machine and install that assemble() writes into the metadata."""
        threads = None
        if self.device == "cpu":
            threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or max(1, (os.cpu_count() or 2) - 1)
        return {"device": self.device, "hardware": hardware_name(self.device), "engine_version": engine_version(),
                "environment": self.env, "threads": threads, "cores": os.cpu_count() or 1,
                "settings": asdict(self.settings)}


def _kv_info(llm: Any) -> dict[str, Any]:
    """The engine's KV capacity: blocks, block size, bytes per block, KV space / memory share."""
    try:
        vc = llm.llm_engine.vllm_config
        cache = vc.cache_config
        mc = vc.model_config
        blocks = int(cache.num_gpu_blocks or 0)
        layers = int(mc.get_num_layers(vc.parallel_config))
        heads = int(mc.get_num_kv_heads(vc.parallel_config))
        head = int(mc.get_head_size())
        import torch

        dt = mc.dtype if cache.cache_dtype in ("auto", None) else getattr(torch, str(cache.cache_dtype), mc.dtype)
        elem = torch.tensor([], dtype=dt).element_size()
        space = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        return {"blocks": blocks, "block_size": int(cache.block_size), "dtype": str(mc.dtype).replace("torch.", ""),
                "bytes_per_block": 2 * layers * heads * head * int(cache.block_size) * elem,
                "space_gib": float(space) if space else None,
                "gpu_memory_utilization": None if space else float(cache.gpu_memory_utilization)}
    except Exception as exc:  # noqa: BLE001 - recorded, never fatal
        return {"error": str(exc)}


__all__ = ["ASYNC_SCHEDULER", "ProfileConfig", "Profiler", "filler_ids"]
