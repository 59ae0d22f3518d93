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


def engine_limits(profile: Profile) -> dict[str, int]:
    """The simulator's batch limits from the engine settings the profile was measured (and served) with."""
    from specsim.policies.serve import profile_engine_kwargs

    kw = profile_engine_kwargs(profile)
    return {"max_num_seqs": int(kw.get("max_num_seqs", 16)),
            "max_num_batched_tokens": int(kw.get("max_num_batched_tokens", 8192))}


def study_prompts(source: str | None, requests: int) -> list[Any]:
    """The study's prompt set, in the order request i takes prompt i mod its length."""
    from specsim.prompts import load_prompts

    return load_prompts(source, limit=max(requests, 24))


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
    """Short completions before measuring (the first requests after start-up pay one-off costs)."""
    from specsim.policies.server_process import warm_up as server_warm_up

    server_warm_up(url, requests, timeout=120.0)


def cpu_times() -> tuple[float, float]:
    """(total, steal) CPU jiffies from /proc/stat: steal is time the hypervisor gave to others."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return (0.0, 0.0)
    return (sum(fields), fields[7] if len(fields) > 7 else 0.0)


def pin_frontend(server_pid: int) -> str:
    """Keep the server's front end off the model worker's cores.

    vLLM's CPU worker binds its threads to some cores (on this 2-core machine: core 0) and leaves
    the rest for the API server and engine-core processes, but nothing keeps those (or the load
    generator) off the worker's core. This pins every other server process, and this one, to the
    cores the worker does not use, so that placement is the same for every server start (it did not
    remove the server-to-server variation measured here; see README.md). Returns a one-line
    description (or why nothing was pinned).
    """
    from specsim.policies.serve import descendants

    procs = [pid for pid, _ in descendants(server_pid)] + [server_pid]
    comm = {}
    for pid in procs:
        try:
            comm[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            pass
    workers = [pid for pid, c in comm.items() if "Worker" in c]
    if not workers:
        return "not pinned: no VLLM::Worker process found"
    worker_cpus = set().union(*(os.sched_getaffinity(pid) for pid in workers))
    rest = set(os.sched_getaffinity(0)) - worker_cpus
    if not rest:
        return f"not pinned: the worker uses every core ({sorted(worker_cpus)})"
    for pid in comm:
        if pid in workers:
            continue
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                os.sched_setaffinity(int(tid), rest)
            except OSError:
                pass
    os.sched_setaffinity(0, rest)
    return f"worker on cores {sorted(worker_cpus)}; front end and load generator pinned to {sorted(rest)}"


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
    ap.add_argument("--no-pin", action="store_true",
                    help="leave the server's front end and the load generator wherever the OS puts them")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: rebuild table.md and the plots from --out's results.json and run folders")
    ap.add_argument("--server-args", default="",
                    help="extra `vllm serve` arguments as one string, e.g. --server-args=--no-async-scheduling")
    args = ap.parse_args(argv)
    # SIGTERM ends the study through the `finally` blocks, so no server is left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    out = Path(args.out)
    if args.report_only:
        return report(out, load_profile(args.profile))
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
    sim_cfg = engine_limits(profile)
    cap = capacity_rps(profile, sim_cfg, args.input, args.output)
    loads = {name: float(x) * cap for name, x in zip(("light", "crossover", "saturated"), args.loads.split(","),
                                                       strict=True)}
    # Real prompts, stratified over categories, each sent whole in the chat template: the content
    # the profile's acceptance traces were measured on (no repetition or truncation).
    chosen = study_prompts(args.prompts, args.requests)
    prompts = [(p.category, p.prompt_id, p.text) for p in chosen]
    cfg = LoadgenConfig(timeout=args.timeout, prompts=[(p.category, p.text) for p in chosen],
                        prompts_by_id={p.prompt_id: p.text for p in chosen}, chat=True)
    known = {t.prompt_id for t in profile.acceptance}
    missing = [p.prompt_id for p in chosen if p.prompt_id not in known]
    if missing:
        print(f"note: {len(missing)} prompts have no acceptance trace in the profile "
              f"(the simulator draws one of their category): {', '.join(missing[:5])}", flush=True)
    results: list[dict[str, Any]] = []
    all_cpus = os.sched_getaffinity(0)
    for pname, pol in policies.items():
        pol_path = out / f"policy-{pname}.json"
        save_policy(pol, pol_path)
        server = Server(pol_path, args.profile, out / f"server-{pname}.log", args.model, args.server_args.split())
        try:
            server.wait_up()
            pinning = "not pinned (--no-pin)" if args.no_pin else pin_frontend(server.proc.pid)
            print(f"{pname}: {pinning}", flush=True)
            warm_up(server.url)
            in_lens, cats, pids = natural_prompts(server.url, prompts, args.requests)
            for lname, rate in loads.items():
                for rep in range(args.repeats):
                    tr = poisson_trace(rate, args.requests, in_lens, args.output, seed=1000 * rep + 7,
                                       categories=list(cats), prompt_ids=list(pids))
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
                                    "pinning": pinning,
                                    "prompt_matches": sim.summary.get("acceptance_prompt_matches"),
                                    "acceptance": {"measured": meas.summary.get("acceptance_rate"),
                                                   "simulated": sim.summary.get("acceptance_rate")}})
                    print(json.dumps(results[-1]), flush=True)
        finally:
            server.stop()
            os.sched_setaffinity(0, all_cpus)  # the next server must not inherit the pinning
        # written after every policy, so an interrupted study keeps what it measured
        (out / "results.json").write_text(json.dumps({"capacity_rps": cap, "loads": loads, "runs": results,
                                                      "args": vars(args)}, indent=1) + "\n")
        report(out, profile)
    return 0


def report(out: Path, profile: Profile) -> int:
    """table.md, fidelity.png and fidelity-requests.png from results.json and the run folders."""
    doc = json.loads((out / "results.json").read_text())
    results = doc["runs"]
    write_table(results, out / "table.md")
    plot(results, out / "fidelity.png")
    pairs = per_request(out, profile, doc)
    if pairs:
        plot_requests(pairs, out / "fidelity-requests.png")
    return 0


def per_request(out: Path, profile: Profile, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured request next to its simulated twin. Each run's trace is rebuilt from its
    measured requests.csv (arrival, input length, category) and the study's prompt order (request i
    names prompt i mod the prompt count), then simulated again exactly as the study did."""
    import csv

    args = doc["args"]
    chosen = study_prompts(args.get("prompts"), int(args["requests"]))
    cfg = engine_limits(profile)
    pairs: list[dict[str, Any]] = []
    for r in doc["runs"]:
        run_dir = out / f"measured-{r['policy']}-{r['load']}-{r['repeat']}"
        pol_path = out / f"policy-{r['policy']}.json"
        if not (run_dir / "requests.csv").is_file() or not pol_path.is_file():
            continue
        with open(run_dir / "requests.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        pids = [chosen[i % len(chosen)].prompt_id for i in range(len(rows))] if r.get("prompt_matches") else None
        tr = Traffic.from_arrays([float(x["arrival"]) for x in rows], [int(x["input_length"]) for x in rows],
                                 [int(x["output_length"]) for x in rows],
                                 categories=[x["category"] or None for x in rows], prompt_ids=pids)
        sim = simulate(profile, tr, load_policy(pol_path), SimConfig(**cfg, seed=int(r["repeat"])))
        for i, x in enumerate(rows):
            if x["e2e"] in ("", "nan"):
                continue
            pairs.append({"policy": r["policy"], "load": r["load"], "measured_e2e": float(x["e2e"]),
                          "simulated_e2e": float(sim.requests["e2e"][i]), "measured_ttft": float(x["ttft"]),
                          "simulated_ttft": float(sim.requests["ttft"][i])})
    return pairs


def plot_requests(pairs: list[dict[str, Any]], path: Path) -> None:
    """Scatter of simulated against measured end-to-end latency and TTFT, one point per request."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    policies = sorted({p["policy"] for p in pairs})
    for ax, m in zip(axes, ("e2e", "ttft"), strict=True):
        for j, pol in enumerate(policies):
            pts = [p for p in pairs if p["policy"] == pol]
            ax.scatter([p[f"measured_{m}"] for p in pts], [p[f"simulated_{m}"] for p in pts], s=14,
                       color=f"C{j}", alpha=0.6, label=pol)
        hi = max(max(p[f"measured_{m}"], p[f"simulated_{m}"]) for p in pairs) * 1.05
        ax.plot([0, hi], [0, hi], "k-", lw=0.8)
        ax.plot([0, hi], [0, hi * 1.1], "k:", lw=0.6)
        ax.plot([0, hi], [0, hi * 0.9], "k:", lw=0.6)
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel(f"measured {m} (s)")
        ax.set_ylabel(f"simulated {m} (s)")
        errs = np.array([abs(p[f"simulated_{m}"] - p[f"measured_{m}"]) / p[f"measured_{m}"] for p in pairs])
        ax.set_title(f"per request {m}: median |error| {np.median(errs):.0%} (dotted: ±10%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


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
        if acc and any(a["measured"] or a["simulated"] for a in acc):
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
