"""The learning-rate schedule at the cpu D4RL budget: the original's against ``run_length``.

The original warms up over one epoch of tokens and decays over 20; at the cpu budget a model
sees a small fraction of an epoch, so that schedule never leaves its warm-up. This trains the
cpu D4RL table's TT model (its preset block: size, batch, steps, seed) on the first 90 % of
the episodes of Hopper medium, once with each schedule and everything else equal, and scores
the cross-entropy per token kind on the other 10 % (fixed windows, the same for both).

    env OMP_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/schedule.py   # ~20 min per schedule

Training resumes from ``cache/benchmarks/schedule-*`` if interrupted; ``--only SCHEDULE``
trains one of the two runs (one process per core), and a last call without it writes the
table: ``results/benchmarks/schedule.csv`` (the one ``book/differences.md`` shows) and
``.json`` (command, commit, hardware, training time of each run).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ttlib.data import SequenceDataset, load_episodes
from ttlib.experiments.cache import code_version, train_config
from ttlib.experiments.d4rl_data import dataset_config
from ttlib.experiments.presets import model_kwargs
from ttlib.experiments.runs import hardware, start
from ttlib.train import gpt_config_for, held_out_loss, load_checkpoint, train

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "benchmarks"
KINDS = ("state", "action", "reward", "value")
SCHEDULES = ("original", "run_length")
HELD_OUT_WINDOWS = 2048  # scored at the end: 8x the windows logged during training


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="hopper")
    ap.add_argument("--kind", default="medium")
    ap.add_argument("--steps", type=int, default=None, help="default: the cpu preset's")
    ap.add_argument(
        "--only",
        choices=SCHEDULES,
        default=None,
        help="train this schedule's run only (two processes side by side); a last call "
        "without --only loads both finished runs and writes the table",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    params = start("d4rl", {"preset": "cpu"}).params
    if args.steps:
        params["train_steps"] = args.steps
    data_cfg = dataset_config(args.env, args.kind, params)
    episodes = load_episodes(data_cfg)
    cut = int(0.9 * len(episodes))
    train_set = SequenceDataset(episodes[:cut], data_cfg)
    held_out = SequenceDataset(episodes[cut:], data_cfg, discretizer=train_set.discretizer)
    model_cfg = gpt_config_for(train_set, **model_kwargs(params))
    base = train_config(params, 250)
    epoch_tokens = len(train_set) * model_cfg.block_size  # the original's warm-up: windows x block

    rows, runs = [], []
    for schedule in [args.only] if args.only else SCHEDULES:
        cfg = replace(base, schedule=schedule)
        name = f"schedule-{args.env}-{args.kind}-{base.max_steps}-{schedule}"
        folder = ROOT / "cache" / "benchmarks" / name
        t0 = time.time()
        train(train_set, model_cfg, cfg, folder, progress=True, eval_dataset=held_out)
        model, _, ckpt = load_checkpoint(folder / "checkpoint.pt", device="cpu")
        val = held_out_loss(model, held_out, HELD_OUT_WINDOWS, cfg, "cpu")
        last = ckpt["history"][-1]
        counts = np.array([model_cfg.observation_dim, model_cfg.action_dim, 1, 1], dtype=float)
        per_kind = np.array([val[f"val_loss_{k}"] for k in KINDS])  # in KINDS' order
        mean = float((per_kind * counts).sum() / counts.sum())  # per token, as a transition has
        rows.append(
            {
                "schedule": schedule,
                "rate_at_last_step": round(last["lr"] / cfg.lr, 3),
                "held_out_nats_per_token": round(mean, 3),
                **{
                    f"held_out_{k}": round(float(v), 3)
                    for k, v in zip(KINDS, per_kind, strict=True)
                },
                "training_loss_last_step": round(float(last["loss"]), 3),
            }
        )
        runs.append(
            {
                "schedule": schedule,
                "train_seconds": ckpt.get("train_seconds"),
                "this_call_s": round(time.time() - t0, 1),
            }
        )
        print(rows[-1], flush=True)
    if args.only:
        return

    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "schedule.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    record = {
        "what": "held-out cross-entropy of the cpu D4RL model, original vs run_length schedule",
        "dataset": data_cfg.dataset_id,
        "train_episodes": cut,
        "held_out_episodes": len(episodes) - cut,
        "held_out_windows": HELD_OUT_WINDOWS,
        "epoch_tokens": int(epoch_tokens),
        "train_steps": base.max_steps,
        "batch_size": base.batch_size,
        "tokens_seen": int(base.max_steps * base.batch_size * model_cfg.block_size),
        "model": model_kwargs(params),
        "runs": runs,
        **code_version(),  # git_sha and ttlib_modified, as every run.json records them
        "hardware": hardware(),
        "command": "python benchmarks/schedule.py " + " ".join(sys.argv[1:]),
    }
    (OUT / "schedule.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
