"""Training speed: tokens/s of ttlib's TrajectoryGPT vs the original GPT, same size and data.

A step is forward + weighted cross-entropy + backward + gradient clipping + AdamW, on full
windows of 10 HalfCheetah transitions (249 input tokens). Tokens/s counts input positions.
As in ``bench_planning.py``, times are process CPU seconds of a single-threaded run by default
(wall time alongside). Writes ``results/benchmarks/training.json``.

    nice python benchmarks/bench_training.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from bench_planning import ROOT, machine_info

from ttlib.interop.original import original_from_ttlib
from ttlib.model import GPTConfig, TrajectoryGPT


def step_fn(model, batch_size: int, seed: int, autocast: bool = False):
    """One optimisation step on a fixed random batch, like ttlib.train does."""
    c = model.config
    T = c.block_size
    vocab = c.n_bins if hasattr(c, "n_bins") else c.vocab_size
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab + 1, (batch_size, T), generator=g)
    y = torch.randint(0, vocab + 1, (batch_size, T), generator=g)
    mask = torch.ones(batch_size, T)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            _, loss = model(x, y, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step, batch_size * T


def measure(step, tokens: int, steps: int) -> dict:
    step()  # warm-up (allocations, first-call dispatch)
    cpu, wall = [], []
    for _ in range(steps):
        c, w = time.process_time(), time.perf_counter()
        step()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    per_step = statistics.median(cpu)
    return {
        "steps": steps,
        "tokens_per_step": tokens,
        "cpu_s_per_step": per_step,
        "cpu_s_all": [round(x, 3) for x in cpu],
        "wall_s_all": [round(x, 3) for x in wall],
        "tokens_per_s": tokens / per_step,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="also time ttlib under bf16 autocast")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "training.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    result = {"machine": machine_info(args.threads)}
    # The paper's dropout (0.1) first; then without dropout, as the cpu presets train. With
    # attention dropout, SDPA on the CPU runs its math path; without, its fused flash kernel.
    for dropout, section in ((0.1, "batches"), (0.0, "batches_dropout_0")):
        torch.manual_seed(0)
        cfg = GPTConfig(observation_dim=17, action_dim=6, dropout=dropout)
        ours = TrajectoryGPT(cfg).train()
        ref = original_from_ttlib(ours).train()
        result.setdefault("model", {**ours.config.to_dict(), "params": ours.n_params})
        result[section] = {}
        for bs in args.batch_sizes:
            row = {"dropout": dropout}
            variants = [("ttlib", ours, False), ("original", ref, False)]
            if args.bf16 and dropout > 0:
                variants.append(("ttlib_bf16_autocast", ours, True))
            for name, model, autocast in variants:
                step, tokens = step_fn(model, bs, seed=bs, autocast=autocast)
                row[name] = measure(step, tokens, args.steps)
                rate = row[name]["tokens_per_s"]
                print(f"dropout {dropout} batch {bs} {name}: {rate:.0f} tokens/s", flush=True)
            row["speedup_ttlib_over_original"] = (
                row["ttlib"]["tokens_per_s"] / row["original"]["tokens_per_s"]
            )
            result[section][str(bs)] = row
    result["machine"]["load_average_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
