"""Fidelity study: measured (real vLLM via `specsim serve` + `specsim loadgen`) vs simulated metrics.

For each policy (speculation off, a static K, optionally a tuned schedule) one server is started;
each load level (light, near the crossover, saturated) is replayed `--repeats` times with a fresh
Poisson trace per repeat, and the same traces are simulated with the profile. Writes results.json,
table.md and fidelity.png into --out. The same command runs on a GPU machine (see README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from specsim.formats.policy import DrafterRef, Policy, load_policy, save_policy
from specsim.formats.profile import Profile, load_profile
from specsim.formats.traffic import Traffic
from specsim.policies.loadgen import LoadgenConfig, run_loadgen
from specsim.simulator.config import SimConfig
from specsim.simulator.run import simulate

METRICS = ("output_tokens_per_s", "ttft_mean", "ttft_p99", "tpot_mean", "tpot_p99")
TARGET = {"output_tokens_per_s": 0.10, "ttft_mean": 0.10, "tpot_mean": 0.10, "ttft_p99": 0.20, "tpot_p99": 0.20}


def capacity_rps(profile: Profile, cfg: dict[str, int], inp: int, out: int) -> float:
    """Saturation request rate the simulator predicts without speculation (prefill included)."""
    flood = poisson_trace(50.0, 96, inp, out, seed=1)
    return float(simulate(profile, flood, Policy(), SimConfig(**cfg)).summary["requests_per_s"])


def poisson_trace(rate: float, n: int, inp: int | list[int], out: int, seed: int,
                  categories: list[str | None] | None = None, prompt_ids: list[str] | None = None) -> Traffic:
    """n requests with Poisson arrivals at `rate` req/s; input lengths fixed or given per request."""
    rng = np.random.default_rng(seed)
    ts = np.concatenate([[0.0], np.cumsum(rng.exponential(1.0 / rate, n - 1))])
    inps = inp if isinstance(inp, list) else [inp] * n
    return Traffic.from_arrays(ts, inps, [out] * n, categories=categories, metadata={"rate": rate, "seed": seed},
                               prompt_ids=prompt_ids)


def natural_prompts(url: str, prompts: list[tuple[str, str, str]], n: int) -> tuple[list[int], list[str], list[str]]:
    """Input length (chat-formatted tokens, as the profiler sends them), category and prompt id of
    requests 0..n-1: request i names prompt i mod len(prompts), which loadgen sends and whose own
    acceptance trace the simulator replays."""
    import asyncio

    from specsim.policies.loadgen import Endpoint, server_model, tokenize

    async def lengths() -> list[int]:
        ep = Endpoint.parse(url)
        model = await server_model(ep)
        out = []
        for _, _, text in prompts:
            ids = await tokenize(ep, model, text, chat=True)
            if not ids:
                raise RuntimeError("server has no /tokenize")
            out.append(len(ids))
        return out

    lens = asyncio.run(lengths())
    idx = [i % len(prompts) for i in range(n)]
    return [lens[j] for j in idx], [prompts[j][0] for j in idx], [prompts[j][1] for j in idx]


def warm_up(url: str, requests: int = 2) -> None:
    """A few short completions before measuring: the first request after start-up pays one-off
    costs (1.7-2.4 s extra TTFT here) that belong to no load level."""
    import asyncio

    from specsim.policies.loadgen import Endpoint, fetch, server_model

    async def go() -> None:
        ep = Endpoint.parse(url)
        model = await server_model(ep)
        for _ in range(requests):
            await fetch(ep, "POST", "/v1/completions",
                        {"model": model, "prompt": "Hello, how are you today?", "max_tokens": 16,
                         "temperature": 0.0}, timeout=120.0)

    asyncio.run(go())


def cpu_times() -> tuple[float, float]:
    """(total, steal) CPU jiffies from /proc/stat: steal is time the hypervisor gave to others."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return (0.0, 0.0)
    return (sum(fields), fields[7] if len(fields) > 7 else 0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`specsim serve POLICY` in its own process group; always stopped on exit."""

    def __init__(self, policy_path: Path, profile_path: str, log: Path, model: str | None,
                 extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # --profile makes the server use the engine settings the profile was measured with.
        cmd = [sys.executable, "-m", "specsim", "serve", str(policy_path), "--profile", profile_path,
               "--port", str(self.port)] + (["--model", model] if model else [])
        if extra:
            cmd += ["--", *extra]
        self.log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_up(self, limit: float = 600.0) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1.0)
        raise RuntimeError("server did not come up")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


def summarise_runs(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max()),
            "spread": float((a.max() - a.min()) / np.median(a)) if np.median(a) else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="profiles/smollm2-135m-cpu.json")
    ap.add_argument("--model", default=None, help="model to serve (default: the profile's target)")
    ap.add_argument("--drafter", default="ngram", help="profile drafter for the static-K policy")
    ap.add_argument("--k", type=int, default=None, help="static K (default: the drafter's k_max)")
    ap.add_argument("--tuned", default=None, help="a tuned policy JSON (from `specsim tune`)")
    ap.add_argument("--policies", default="off,static,tuned", help="which of off, static, tuned to run")
    ap.add_argument("--loads", default="0.15,0.6,1.3",
                    help="light, crossover and saturated load as fractions of the simulated capacity")
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--input", type=int, default=128, help="input length used only to estimate capacity")
    ap.add_argument("--output", type=int, default=32)
    ap.add_argument("--prompts", default=None,
                    help="prompt content for loadgen (default: Spec-Bench if present, else built-in, as the profiler)")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound for each loadgen run, seconds")
    ap.add_argument("--out", default="experiments/fidelity/results")
    ap.add_argument("--server-args", default="",
                    help="extra `vllm serve` arguments as one string, e.g. --server-args=--no-async-scheduling")
    args = ap.parse_args(argv)
    # SIGTERM ends the study through the `finally` blocks, so no server is left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profile = load_profile(args.profile)
    wanted = set(args.policies.split(","))
    policies: dict[str, Policy] = {}
    if "off" in wanted:
        policies["off"] = Policy()
    if "static" in wanted:
        spec = profile.drafters[args.drafter]
        k = args.k or min(spec.k_max, profile.k_max)
        drafter = DrafterRef(name=args.drafter, method=spec.method, model=spec.model, params=spec.params)
        policies[f"static-k{k}"] = Policy.static(drafter, k)
    if "tuned" in wanted and args.tuned:
        policies["tuned"] = load_policy(args.tuned)
    from specsim.policies.serve import profile_engine_kwargs

    kw = profile_engine_kwargs(profile)
    seqs = int(kw.get("max_num_seqs", 16))
    sim_cfg = {"max_num_seqs": seqs, "max_num_batched_tokens": int(kw.get("max_num_batched_tokens", 8192))}
    cap = capacity_rps(profile, sim_cfg, args.input, args.output)
    loads = {name: float(x) * cap for name, x in zip(("light", "crossover", "saturated"), args.loads.split(","),
                                                       strict=True)}
    from specsim.profiler.prompts import load_prompts

    # Real prompts, stratified over categories, each sent whole in the chat template: the content
    # the profile's acceptance traces were measured on (no repetition or truncation).
    chosen = load_prompts(args.prompts, limit=max(args.requests, 24))
    prompts = [(p.category, p.prompt_id, p.text) for p in chosen]
    by_id = {p.prompt_id: p.text for p in chosen}
    known = {t.prompt_id for t in profile.acceptance}
    missing = [p.prompt_id for p in chosen if p.prompt_id not in known]
    if missing:
        print(f"note: {len(missing)} prompts have no acceptance trace in the profile "
              f"(the simulator draws one of their category): {', '.join(missing[:5])}", flush=True)
    results: list[dict[str, Any]] = []
    for pname, pol in policies.items():
        pol_path = out / f"policy-{pname}.json"
        save_policy(pol, pol_path)
        server = Server(pol_path, args.profile, out / f"server-{pname}.log", args.model, args.server_args.split())
        try:
            server.wait_up()
            warm_up(server.url)
            in_lens, cats, pids = natural_prompts(server.url, prompts, args.requests)
            for lname, rate in loads.items():
                for rep in range(args.repeats):
                    tr = poisson_trace(rate, args.requests, in_lens, args.output, seed=1000 * rep + 7,
                                       categories=list(cats), prompt_ids=list(pids))
                    cfg = LoadgenConfig(timeout=args.timeout, prompts=[(c, t) for c, _, t in prompts],
                                        prompts_by_id=by_id, chat=True)
                    load_before = os.getloadavg()[0]
                    cpu0 = cpu_times()
                    meas = run_loadgen(server.url, tr, cfg)
                    cpu1 = cpu_times()
                    load_after = os.getloadavg()[0]
                    total = cpu1[0] - cpu0[0]
                    steal = (cpu1[1] - cpu0[1]) / total if total > 0 else 0.0
                    meas.write(out / f"measured-{pname}-{lname}-{rep}")
                    sim = simulate(profile, tr, pol, SimConfig(**sim_cfg, seed=rep))
                    sim.write_json(out / f"simulated-{pname}-{lname}-{rep}.json")
                    results.append({"policy": pname, "load": lname, "rate_rps": rate, "repeat": rep,
                                    "measured": {m: meas.summary[m] for m in METRICS},
                                    "simulated": {m: sim.summary[m] for m in METRICS},
                                    "failed": meas.summary["failed"],
                                    "load_average": [round(load_before, 2), round(load_after, 2)],
                                    "cpu_steal": round(steal, 4),
                                    "prompt_matches": sim.summary.get("acceptance_prompt_matches"),
                                    "acceptance": {"measured": meas.summary.get("acceptance_rate"),
                                                   "simulated": sim.summary.get("acceptance_rate")}})
                    print(json.dumps(results[-1]), flush=True)
        finally:
            server.stop()
        # written after every policy, so an interrupted study keeps what it measured
        (out / "results.json").write_text(json.dumps({"capacity_rps": cap, "loads": loads, "runs": results,
                                                      "args": vars(args)}, indent=1) + "\n")
        write_table(results, out / "table.md")
        plot(results, out / "fidelity.png")
    return 0


def cells(results: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["policy"], r["load"]), []).append(r)
    return groups


def write_table(results: list[dict[str, Any]], path: Path) -> None:
    """Markdown: measured median [min, max] (spread), simulated median, error vs measured median, in range."""
    lines = ["| policy | load | metric | measured median [min, max] (spread) | simulated | error | in range | target "
             "| load avg | CPU steal |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (pol, load), runs in cells(results).items():
        avgs = [x for r in runs for x in r.get("load_average", [])]
        la = f"{min(avgs):.1f}-{max(avgs):.1f}" if avgs else "n/a"
        steals = [r["cpu_steal"] for r in runs if "cpu_steal" in r]
        st = f"{max(steals):.1%}" if steals else "n/a"
        for m in METRICS:
            meas = summarise_runs([r["measured"][m] for r in runs])
            sim = float(np.median([r["simulated"][m] for r in runs]))
            err = (sim - meas["median"]) / meas["median"] if meas["median"] else float("nan")
            inside = meas["min"] <= sim <= meas["max"]
            ok = abs(err) <= TARGET[m]
            scale, unit = (1.0, "tok/s") if m.startswith("output") else (1000.0, "ms")
            lines.append(
                f"| {pol} | {load} | {m} ({unit}) | {meas['median'] * scale:.1f} [{meas['min'] * scale:.1f}, "
                f"{meas['max'] * scale:.1f}] ({meas['spread']:.0%}) | {sim * scale:.1f} | {err:+.0%} | "
                f"{'yes' if inside else 'no'} | {'met' if ok else 'MISSED'} ({TARGET[m]:.0%}) | {la} | {st} |")
    lines += ["", "Acceptance rate (accepted / proposed draft tokens): measured from vLLM's /metrics, simulated "
              "from the replayed traces; median over repeats.", "",
              "| policy | load | measured | simulated |", "| --- | --- | --- | --- |"]
    for (pol, load), runs in cells(results).items():
        acc = [r["acceptance"] for r in runs if r.get("acceptance", {}).get("measured") is not None]
        if acc:
            meas_acc = float(np.median([a["measured"] for a in acc]))
            sim_acc = float(np.median([a["simulated"] for a in acc if a["simulated"] is not None] or [np.nan]))
            lines.append(f"| {pol} | {load} | {meas_acc:.1%} | {sim_acc:.1%} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.5))
    groups = cells(results)
    policies = sorted({p for p, _ in groups})
    for ax, m in zip(axes, METRICS, strict=True):
        for j, pol in enumerate(policies):
            runs = [r for r in results if r["policy"] == pol]
            rates = sorted({r["rate_rps"] for r in runs})
            for r in runs:
                ax.plot(r["rate_rps"], r["measured"][m], "o", color=f"C{j}", alpha=0.5)
            sim = [np.median([r["simulated"][m] for r in runs if r["rate_rps"] == x]) for x in rates]
            ax.plot(rates, sim, "-", color=f"C{j}", label=f"{pol} (line: simulated)")
        ax.set_title(m)
        ax.set_xlabel("offered load (req/s)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
