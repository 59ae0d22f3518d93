"""Options shared by every command that runs the simulator (simulate, tune, sweep, verify, demo).

Defaults come from `SimConfig`, the one place they live; this module only spells them as flags.
"""

from __future__ import annotations

import argparse
import dataclasses

from specsim.errors import SpecsimError
from specsim.formats.traffic import add_time_unit_arg
from specsim.metrics import parse_duration, parse_slo  # noqa: F401 - re-exported
from specsim.simulator.config import SimConfig

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SimConfig)}


def parse_category_map(text: str | None) -> dict[str, tuple[str, ...]] | None:
    """'conv=writing+roleplay,code=coding' -> {'conv': ('writing', 'roleplay'), 'code': ('coding',)}."""
    if text is None:
        return None
    out: dict[str, tuple[str, ...]] = {}
    usage = "use TRACE_CATEGORY=PROFILE_CATEGORY[+...], e.g. conv=writing+roleplay,code=coding"
    for part in text.split(","):
        if "=" not in part:
            raise SpecsimError(f"cannot read category map entry {part.strip()!r} ({usage})")
        key, val = (x.strip() for x in part.split("=", 1))
        targets = tuple(t.strip() for t in val.split("+"))
        if not key or not all(targets):
            raise SpecsimError(f"cannot read category map entry {part.strip()!r} ({usage})")
        if key in out:
            raise SpecsimError(f"category {key!r} mapped twice in {text!r}")
        out[key] = tuple(dict.fromkeys(targets))
    return out


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Engine and load-mode options shared by simulate, tune and sweep (defaults: SimConfig)."""
    d = _DEFAULTS
    g = p.add_argument_group("engine (vLLM's scheduler settings; defaults are vLLM's)")
    g.add_argument("--max-num-seqs", type=int, default=d["max_num_seqs"], help="max running requests per replica")
    g.add_argument("--max-num-batched-tokens", type=int, default=d["max_num_batched_tokens"],
                   help="token budget per step, draft tokens included")
    g.add_argument("--kv-blocks", type=int, default=None,
                   help="KV blocks per replica as vLLM counts them (default: the profile's measured capacity)")
    g.add_argument("--kv-space", type=float, default=None,
                   help="KV cache per replica in GiB, converted with the profile's bytes per block")
    g.add_argument("--block-size", type=int, default=None, help="tokens per KV block (default: the profile's)")
    g.add_argument("--no-chunked-prefill", action="store_true")
    g.add_argument("--max-model-len", type=int, default=None,
                   help="longest prompt + output (default: long enough for the trace)")
    g.add_argument("--k-basis", choices=("scheduled", "decoding", "running"), default=d["k_basis"],
                   help="batch size the K schedule is keyed on (vLLM: requests scheduled in the step, prefills "
                        "included; 'decoding' counts only requests past their prefill)")
    g.add_argument("--async-scheduling", choices=("auto", "on", "off"), default=d["async_scheduling"],
                   help="vLLM's async scheduling (auto: vLLM's default for the profile's device and drafter)")
    g.add_argument("--lookahead", choices=("auto", "none"), default=d["lookahead"],
                   help="KV lookahead slots for EAGLE/MTP/draft-model drafters (auto: vLLM's, at the static K)")
    g.add_argument("--no-reserve-full-isl", action="store_true",
                   help="admit a request when its first chunk fits in KV, not its whole prompt (vLLM's "
                        "scheduler_reserve_full_isl=False)")
    g.add_argument("--watermark", type=float, default=d["watermark"],
                   help="fraction of KV blocks kept free when admitting (vLLM --watermark)")
    g.add_argument("--long-prefill-token-threshold", type=int, default=d["long_prefill_token_threshold"])
    g.add_argument("--scheduler", choices=("fast", "vllm"), default=d["scheduler"],
                   help="fast: specsim's compiled copy of vLLM's scheduler; vllm: the installed vLLM's own "
                        "Scheduler class (exact for that version, slower)")
    g.add_argument("--replicas", type=int, default=d["replicas"])
    g.add_argument("--router", choices=("round_robin", "least_loaded"), default=d["router"])
    lm = p.add_argument_group("load")
    lm.add_argument("--concurrency", type=int, default=None, help="closed loop with N clients")
    lm.add_argument("--think-time", type=float, default=d["think_time"],
                    help="closed loop: seconds between requests")
    lm.add_argument("--rate-scale", type=float, default=d["rate_scale"], help="open loop: multiply the arrival rate")
    lm.add_argument("--max-requests", type=int, default=None, help="replay only the first N requests")
    lm.add_argument("--seed", type=int, default=d["seed"])
    lm.add_argument("--slo", default=None, help="e.g. ttft=2s,tpot=50ms (for goodput)")
    tr = p.add_argument_group("trace")
    add_time_unit_arg(tr)
    tr.add_argument("--category-map", default=None, metavar="MAP",
                    help="acceptance traces for trace categories the profile lacks, e.g. "
                         "conv=writing+roleplay,code=coding (prompt ids and categories the profile has come first)")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """SimConfig from the shared options."""
    slo = parse_slo(args.slo)
    cfg = SimConfig(
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size,
        num_kv_blocks=args.kv_blocks,
        kv_space_gib=args.kv_space,
        chunked_prefill=not args.no_chunked_prefill,
        max_model_len=args.max_model_len,
        k_basis=args.k_basis,
        async_scheduling=args.async_scheduling,
        lookahead=args.lookahead,
        reserve_full_isl=not args.no_reserve_full_isl,
        watermark=args.watermark,
        long_prefill_token_threshold=args.long_prefill_token_threshold,
        scheduler=args.scheduler,
        replicas=args.replicas,
        router=args.router,
        concurrency=args.concurrency,
        think_time=args.think_time,
        rate_scale=args.rate_scale,
        seed=args.seed,
        slo_ttft=slo.get("ttft"),
        slo_tpot=slo.get("tpot"),
        max_requests=args.max_requests,
        category_map=parse_category_map(args.category_map),
    )
    cfg.validate()
    return cfg
