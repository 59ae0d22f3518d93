"""Runs inside Vidur's own venv (PyPI vidur==0.0.26), driven by benchmarks/vs_vidur.py.

Not part of specsim and it imports nothing from it: vs_vidur.py writes the trace and Vidur's
prediction tables, then starts this script with Vidur's interpreter.

    python vidur_runner.py patch-restart       # fix Request.restart in the installed file (idempotent)
    python vidur_runner.py run SPEC.json       # one simulation; prints 'VIDUR_RESULT {json}' last

With "record_batches" in the spec, every batch's composition (decode rows and their KV
tokens, prefill rows and tokens) and Vidur's predicted time are returned too, so the caller can
compare them with specsim's step time for the same composition.

`run` times Vidur's event loop (`Simulator.run` without its output writing) with wall and CPU
clocks, separately from start-up (config, trace and table loading), and reports per-request
latencies read from Vidur's own Request objects (metric collection off, so it does not cost Vidur time).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tables come from the local cache, never the hub
os.environ.setdefault("WANDB_MODE", "disabled")

RESTART_OLD = "        self._is_prefill_complete = False{nl}{nl}        self._num_restarts += 1"
RESTART_NEW = ("        self._is_prefill_complete = False{nl}"
               "        self._num_stage_processed_tokens = 0{nl}"
               "        self._is_prefill_stage_complete = False{nl}{nl}"
               "        self._num_restarts += 1")


def _restart_is_buggy() -> bool:
    from vidur.entities import Request
    return "_num_stage_processed_tokens" not in inspect.getsource(Request.restart)


def patch_restart() -> dict[str, Any]:
    """Vidur 0.0.26's Request.restart (recompute after a preemption) leaves the stage counters
    as they were, so the first preemption ends in `assert self._num_stage_processed_tokens <=
    self.total_tokens`. Add the two missing resets to the installed file (it has CRLF endings)."""
    import vidur.entities.request as mod
    path = str(mod.__file__)
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read()
    nl = "\r\n" if "\r\n" in text else "\n"
    old, new = RESTART_OLD.format(nl=nl), RESTART_NEW.format(nl=nl)
    if new in text:
        return {"status": "already patched", "file": path}
    if not _restart_is_buggy():
        return {"status": "not needed", "file": path}
    if text.count(old) != 1:
        return {"status": "layout not recognised, not patched", "file": path}
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(text.replace(old, new))
    return {"status": "patched", "file": path}


def _monkeypatch_restart() -> None:
    """The same fix in memory, for an interpreter whose files this benchmark does not own."""
    from vidur.entities import Request
    original = Request.restart

    def restart(self: Any) -> None:
        original(self)
        self._num_stage_processed_tokens = 0
        self._is_prefill_stage_complete = False

    Request.restart = restart


def _install_tables(spec: dict[str, Any], predictor_cls: Any, pred_cfg: Any, replica_cfg: Any, cache_cfg: Any) -> None:
    """Lay the prediction tables out as the offline Hugging Face cache Vidur reads first.

    Vidur looks for `{org}/predictions-{collection}-{dataset}-{hash}` with a hash of its own
    predictor settings; the repo ids are computed here with Vidur's own methods, on an object
    that carries only the fields those methods read."""
    probe = predictor_cls.__new__(predictor_cls)
    probe._config = pred_cfg
    probe._replica_config = replica_cfg
    probe._block_size = cache_cfg.block_size
    probe._max_tokens = pred_cfg.prediction_max_tokens_per_request
    probe._is_multi_node = False  # one node: tensor parallelism within one H100 DGX, no pipeline
    cache = Path(pred_cfg.cache_dir)
    tables = Path(spec["tables_dir"])
    for kind, repo in (("compute", probe._get_compute_prediction_repo_id()),
                       ("network", probe._get_network_prediction_repo_id())):
        folder = cache / "hf_predictions" / kind / ("datasets--" + repo.replace("/", "--"))
        snap = folder / "snapshots" / ("0" * 40)
        if folder.exists():
            shutil.rmtree(folder)
        snap.mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text("0" * 40)
        for f in (tables / kind).glob("*.csv.xz"):
            shutil.copyfile(f, snap / f.name)


def run(spec_path: str) -> dict[str, Any]:
    spec = json.loads(Path(spec_path).read_text())
    t_start = time.perf_counter()
    from vidur.config import (
        CacheConfig,
        ClusterConfig,
        MetricsConfig,
        RandomForrestExecutionTimePredictorConfig,
        ReplicaConfig,
        RoundRobinGlobalSchedulerConfig,
        SarathiSchedulerConfig,
        SimulationConfig,
        TraceRequestGeneratorConfig,
        VllmSchedulerConfig,
    )
    from vidur.execution_time_predictor.random_forrest_execution_time_predictor import (
        RandomForrestExecutionTimePredictor,
    )
    from vidur.execution_time_predictor.sklearn_execution_time_predictor import SklearnExecutionTimePredictor
    from vidur.simulator import Simulator
    from vidur.utils.random import set_seeds

    restart_fix = "the installed Request.restart resets the stage counters"
    if _restart_is_buggy():
        _monkeypatch_restart()
        restart_fix = "applied in memory (installed file not patched)"

    def no_training(self: Any) -> Any:
        raise RuntimeError("Vidur did not pick up the prediction tables and would train its own models")

    SklearnExecutionTimePredictor._train_models = no_training

    work = Path(spec["work_dir"])
    if spec["scheduler"] == "sarathi":
        sched: Any = SarathiSchedulerConfig(batch_size_cap=spec["max_num_seqs"],
                                            chunk_size=spec["max_num_batched_tokens"])
    else:
        sched = VllmSchedulerConfig(batch_size_cap=spec["max_num_seqs"],
                                    max_tokens_in_batch=spec["max_num_batched_tokens"])
    pred_cfg = RandomForrestExecutionTimePredictorConfig(
        model_profiling_dataset="local/specsim-profile", network_profiling_dataset="local/specsim-network",
        cache_dir=str(work / "vidur_cache"), no_cache=False,
        prediction_max_tokens_per_request=spec["max_tokens"],
        prediction_max_prefill_chunk_size=spec["max_chunk"],
        prediction_max_batch_size=spec["max_num_seqs"],
        kv_cache_prediction_granularity=spec["kv_granularity"],
        attention_decode_batching_overhead_fraction=0.0,  # the tables already hold the whole decode cost
        nccl_cpu_launch_overhead_ms=0.0,  # likewise the all-reduces (their table is 0)
        nccl_cpu_skew_overhead_per_device_ms=0.0,
        k_fold_cv_splits=2)
    replica_cfg = ReplicaConfig(model_name=spec["model_name"], num_pipeline_stages=1,
                                tensor_parallel_size=spec["tensor_parallel"],
                                device="h100", network_device="h100_dgx")
    cache_cfg = CacheConfig(block_size=spec["block_size"], num_blocks=spec["num_blocks"],
                            watermark_blocks_fraction=0.0)
    cfg = SimulationConfig(
        seed=0,
        cluster_config=ClusterConfig(num_replicas=1, replica_config=replica_cfg, cache_config=cache_cfg,
                                     global_scheduler_config=RoundRobinGlobalSchedulerConfig(),
                                     replica_scheduler_config=sched),
        request_generator_config=TraceRequestGeneratorConfig(
            trace_file=spec["trace_csv"], date="2023-08-21", prefill_scale_factor=1.0, decode_scale_factor=1.0,
            time_scale_factor=1.0, max_tokens=spec["max_tokens"]),
        execution_time_predictor_config=pred_cfg,
        metrics_config=MetricsConfig(output_dir=str(work / "vidur_output"), write_metrics=False,
                                     enable_chrome_trace=False, store_plots=False, write_json_trace=False))
    n_layers = replica_cfg.model_config.num_layers
    if n_layers != spec["num_layers"]:
        raise RuntimeError(f"{spec['model_name']} has {n_layers} layers in Vidur, "
                           f"the tables assume {spec['num_layers']}")
    _install_tables(spec, RandomForrestExecutionTimePredictor, pred_cfg, replica_cfg, cache_cfg)
    batches: list[tuple[int, int, int, int, float]] = []
    if spec.get("record_batches"):  # cost check only: it slows the loop, so timed runs leave it off
        original = SklearnExecutionTimePredictor.get_execution_time

        def recorded(self: Any, batch: Any, stage: int) -> Any:
            et = original(self, batch, stage)
            q, kv = batch.num_q_tokens, batch.num_kv_tokens
            dec = [k for n, k in zip(q, kv, strict=True) if n == 1]
            pre = [n for n in q if n != 1]
            # decode rows, their KV tokens, prefill rows, prefill tokens, Vidur's time (s)
            batches.append((len(dec), sum(dec), len(pre), sum(pre), float(et.total_time)))
            return et

        SklearnExecutionTimePredictor.get_execution_time = recorded
    set_seeds(cfg.seed)
    sim = Simulator(cfg)
    reqs = sorted((ev._request for _, ev in sim._event_queue), key=lambda r: r.id)
    decode = [r.num_decode_tokens for r in reqs]
    sim._write_output = lambda: None  # time the event loop only
    init_s = time.perf_counter() - t_start
    w0, c0 = time.perf_counter(), time.process_time()
    sim.run()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0

    arrivals = [r.arrived_at for r in reqs]
    done = [r._completed_at for r in reqs]
    ttft = [r._prefill_completed_at - r.arrived_at for r in reqs]
    e2e = [d - a for d, a in zip(done, arrivals, strict=True)]
    tpot = [(d - r._prefill_completed_at) / (n - 1) for d, r, n in zip(done, reqs, decode, strict=True) if n > 1]
    span = max(done) - min(arrivals)
    return {
        "vidur_version": version("vidur"),
        "python": sys.version.split()[0],
        "restart_fix": restart_fix,
        "requests": len(reqs),
        "init_s": init_s,
        "loop_wall_s": wall,
        "loop_cpu_s": cpu,
        "duration_s": span,
        "requests_per_s": len(reqs) / span,
        "output_tokens_per_s": sum(decode) / span,
        "mean_ttft_s": sum(ttft) / len(ttft),
        "mean_tpot_s": sum(tpot) / len(tpot) if tpot else float("nan"),
        "mean_e2e_s": sum(e2e) / len(e2e),
        "preemptions": int(sum(r.num_restarts for r in reqs)),
        "batches": batches,
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["patch-restart"]:
        print("VIDUR_RESULT " + json.dumps(patch_restart()))
        return 0
    if len(argv) == 2 and argv[0] == "run":
        print("VIDUR_RESULT " + json.dumps(run(argv[1])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
