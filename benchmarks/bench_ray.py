"""The smoke D4RL table, serial against ``--ray local`` on 2 cores: wall time and equal numbers.

The serial run is what ``run_table`` does in one process with one torch thread (the notebook
and the old hand-split workers); the Ray run submits the same work as tasks of 1 CPU each
(:mod:`ttlib.experiments.ray_tasks`) to a local Ray of ``--cores`` CPUs and then renders from
the caches. Each run starts from an empty cache of its own, with the smoke dataset made
beforehand (not timed). Ray's own start (``ray.init``) is timed apart from the table. The two
runs must give the same episodes (return, length, score) and the same training losses; the
benchmark fails otherwise.

    env OMP_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/bench_ray.py   # on 2 idle cores

``--quick`` shrinks the table to a few steps, to check the script (not for publication).
Writes ``results/benchmarks/ray_local.json`` and ``ray_local.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from ttlib.experiments import d4rl_table as dt
from ttlib.experiments.d4rl_data import dataset_config
from ttlib.experiments.runs import hardware, start

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "benchmarks"
QUICK = {"train_steps": 8, "baseline_steps": 10, "episodes": 2, "max_episode_steps": 3}


def timed_table(params: dict, cache: Path) -> tuple[float, dt.TableRun]:
    os.environ["TTLIB_CACHE"] = str(cache)
    t0 = time.perf_counter()
    run = dt.run_table(params)
    return time.perf_counter() - t0, run


def same_numbers(a: dt.TableRun, b: dt.TableRun) -> bool:
    cols = ["env", "kind", "method", "train_seed", "episode", "seed", "return", "length", "score"]
    try:
        pd.testing.assert_frame_equal(a.episodes[cols], b.episodes[cols])
        pd.testing.assert_frame_equal(a.histories, b.histories)
    except AssertionError as err:
        print(f"the runs differ: {err}", file=sys.stderr)
        return False
    return True


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--quick", action="store_true", help="a few steps only: checks the script")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import ray

    torch.set_num_threads(1)
    params = start("d4rl", {"preset": "smoke"}).params  # the smoke data dir, as the notebook
    params |= QUICK if args.quick else {}
    for env in params["envs"]:
        for kind in params["kinds"]:
            dataset_config(env, kind, params)  # made once, not timed
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        serial_s, serial = timed_table(params, Path(tmp) / "serial")
        t0 = time.perf_counter()
        ray.init(num_cpus=args.cores, object_store_memory=200 * 2**20, include_dashboard=False)
        init_s = time.perf_counter() - t0
        try:
            ray_s, on_ray = timed_table({**params, "ray": "local"}, Path(tmp) / "ray")
        finally:
            ray.shutdown()
    identical = same_numbers(serial, on_ray)
    tasks = len(dt.METHODS) * len(params["envs"]) * len(params["kinds"]) * int(params["seeds"])
    result = {
        "what": "smoke D4RL table (train + evaluate every method), serial vs Ray tasks",
        "quick": args.quick,
        "params": {k: v for k, v in params.items() if k != "ray"},
        "ray_version": ray.__version__,
        "ray_cpus": args.cores,
        "models": tasks,
        "episodes": len(serial.episodes),
        "serial_s": round(serial_s, 2),
        "ray_init_s": round(init_s, 2),
        "ray_s": round(ray_s, 2),
        "speedup": round(serial_s / ray_s, 2),
        "speedup_with_init": round(serial_s / (ray_s + init_s), 2),
        "identical": identical,
        "hardware": hardware(),
        "command": " ".join(["python", "benchmarks/bench_ray.py", *(argv or sys.argv[1:])]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ray_local.json").write_text(json.dumps(result, indent=1) + "\n")
    with open(args.out / "ray_local.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mode", "cpus", "wall_s", "start_s", "models", "episodes", "identical"])
        w.writerow(["serial", 1, result["serial_s"], 0, tasks, result["episodes"], identical])
        w.writerow(["ray local", args.cores, result["ray_s"], result["ray_init_s"], tasks,
                    result["episodes"], identical])  # fmt: skip
    print(json.dumps({k: result[k] for k in ("serial_s", "ray_init_s", "ray_s", "identical")}))
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
