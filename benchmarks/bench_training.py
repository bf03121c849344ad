"""Training speed: tokens/s and share of the matmul peak, ttlib vs its earlier self and the
original GPT, same weights and data, in one process.

A step is forward + weighted cross-entropy + backward + gradient clipping + AdamW, on full
windows of 10 HalfCheetah transitions (249 input tokens). Tokens/s counts input positions.
Times are process CPU seconds of a single-threaded run by default (wall time alongside); the
variants of a setting are timed in turns (round-robin), so load changes hit all of them.

FLOPs per token, the model's useful work (``train_flops_per_token``):
6 x (12·L·E² + (K+1)·E) for the linear layers and the one output head a position uses
(forward 2x, backward 4x the multiply-adds), plus 6·L·E·(T+1) for attention scores and
weighted values over the causal triangle (a query at position i reads i + 1 keys). The kernels
compute more (SDPA on the CPU scores every query against every key); that is not counted.

    OMP_NUM_THREADS=1 nice python benchmarks/bench_training.py
Writes ``results/benchmarks/training.json``; ``benchmarks/plot.py`` turns it into
``training.csv``. ``--bound`` only times attention and the GEMMs of a step, the share of the
peak a step could reach if nothing else cost anything (``training_bound.json``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_planning import ROOT, cpu_seconds, machine_info, matmul_peak_flops

from ttlib.data import DataConfig, Episode, SequenceDataset
from ttlib.experiments.compute_fit import train_flops_per_token  # the compute study's too
from ttlib.interop.original import original_from_ttlib
from ttlib.model import GPTConfig, TrajectoryGPT, causal_attention_in_halves
from ttlib.train import TrainConfig, autocast, gpt_config_for, train

# name: (n_embd, batch, dropout). cpu = the cpu preset's d4rl model; paper = the paper's.
SETTINGS = {
    "cpu_4x64_b32": (64, 32, 0.0),
    "paper_4x128_b256": (128, 256, 0.1),
    "paper_4x128_b256_dropout0": (128, 256, 0.0),
}


def model_at(rev: str):
    """ttlib/model.py as of ``rev``, imported from ``git show`` (the "before" variant)."""
    code = subprocess.run(
        ["git", "show", f"{rev}:ttlib/model.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="bench_before_")) / "model_before.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("model_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def step_fn(model, batch_size: int, seed: int, precision: str = "fp32"):
    """One optimisation step on a fixed random batch, like ttlib.train does."""
    T = model.config.block_size
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 101, (batch_size, T), generator=g)
    y = torch.randint(0, 101, (batch_size, T), generator=g)
    mask = torch.ones(batch_size, T)
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step():
        with autocast(torch.device("cpu"), precision):
            _, loss = model(x, y, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def speed(setting: str, before, steps: int, peaks: dict) -> dict:
    E, bs, dropout = SETTINGS[setting]
    torch.manual_seed(0)
    cfg = GPTConfig(observation_dim=17, action_dim=6, n_embd=E, dropout=dropout)
    ours = TrajectoryGPT(cfg).train()
    variants = {
        "ttlib": (ours, "fp32"),
        "ttlib_bf16_autocast": (ours, "bf16"),
        "original": (original_from_ttlib(ours).train(), "fp32"),
    }
    if before is not None:
        old = before.TrajectoryGPT(before.GPTConfig(**vars(cfg)))
        old.load_state_dict(ours.state_dict())
        variants["ttlib_before"] = (old.train(), "fp32")
    # Each variant its own copy of the weights (the steps change them).
    steps_of = {}
    for name, (m, precision) in variants.items():
        if name == "ttlib_bf16_autocast":
            m = TrajectoryGPT(cfg).train()
            m.load_state_dict(ours.state_dict())
        steps_of[name] = step_fn(m, bs, seed=bs, precision=precision)
    cpu = {n: [] for n in variants}
    wall = {n: [] for n in variants}
    for f in steps_of.values():
        f()  # warm-up: allocations, first-call dispatch
    for _ in range(steps):
        for name, f in steps_of.items():
            c, w = time.process_time(), time.perf_counter()
            f()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    tokens = bs * cfg.block_size
    flops = train_flops_per_token(cfg) * tokens
    out = {"n_embd": E, "n_layer": cfg.n_layer, "batch": bs, "dropout": dropout}
    out["params"] = ours.n_params
    out["flop_per_token"] = train_flops_per_token(cfg)
    for name in variants:
        per_step = statistics.median(cpu[name])
        achieved = flops / per_step
        row = {
            "tokens_per_step": tokens,
            "cpu_s_per_step": per_step,
            "cpu_s_all": [round(x, 3) for x in cpu[name]],
            "wall_s_all": [round(x, 3) for x in wall[name]],
            "tokens_per_s": tokens / per_step,
            "achieved_gflop_s": achieved / 1e9,
            "share_of_fp32_peak": achieved / peaks["fp32"],
        }
        if name.endswith("bf16_autocast"):
            row["share_of_bf16_peak"] = achieved / peaks["bf16"]
        if torch.get_num_threads() > 1:  # several cores: per wall second, against one core's peak
            row["wall_s_per_step"] = statistics.median(wall[name])
            row["share_of_one_core_fp32_peak_wall"] = flops / row["wall_s_per_step"] / peaks["fp32"]
        out[name] = row
        print(
            f"{setting} {name}: {row['tokens_per_s']:.0f} tokens/s, {achieved / 1e9:.1f} GFLOP/s "
            f"= {row['share_of_fp32_peak']:.0%} of fp32 peak"
            + (f"; per wall second {row['share_of_one_core_fp32_peak_wall']:.0%} of one core's"
               if "wall_s_per_step" in row else ""),
            flush=True,
        )  # fmt: skip
    return out


def step_bound(setting: str, peaks: dict, reps: int = 5) -> dict:
    """How much of the fp32 peak a step could reach if everything but its attention and its
    linear layers' GEMMs (forward and both backward products, heads included) were free:
    model FLOPs over (attention fwd + bwd as the model calls it) + (those GEMMs at the rates
    they reach alone). If this is below a target, no saving outside those two reaches it."""
    E, bs, dropout = SETTINGS[setting]
    cfg = GPTConfig(observation_dim=17, action_dim=6, n_embd=E, dropout=dropout)
    T, L, D = cfg.block_size, cfg.n_layer, E // cfg.n_head
    allowed = TrajectoryGPT(cfg).attention_mask(0, T)
    q, k, v = (torch.randn(bs, cfg.n_head, T, D, requires_grad=True) for _ in range(3))
    attention = L * cpu_seconds(  # the path a whole-window pass takes (T >= 64)
        lambda: causal_attention_in_halves(q, k, v, allowed, dropout).sum().backward(), reps
    )
    M, V = bs * T, cfg.n_bins + 1
    shapes = [(M, E, n) for n in (3 * E, E, 4 * E)] + [(M, 4 * E, E)]  # qkv, proj, fc1, fc2
    gemm, gemm_flops = 0.0, 0
    for m, k_, n in shapes + [(M, E, V)]:  # the heads as one GEMM: each position uses one
        times = L if n != V else 1
        for a, b in (((m, k_), (k_, n)), ((m, n), (n, k_)), ((k_, m), (m, n))):  # y, dX, dW
            x, w = torch.randn(*a), torch.randn(*b)
            gemm += times * cpu_seconds(lambda x=x, w=w: x @ w, reps)
            gemm_flops += times * 2 * m * k_ * n
    flops = train_flops_per_token(cfg) * bs * T
    out = {"attention_cpu_s": attention, "gemm_cpu_s": gemm, "step_gflop": flops / 1e9}
    out["gemm_share_of_peak"] = gemm_flops / gemm / peaks["fp32"]
    out["bound_share_of_fp32_peak"] = flops / (attention + gemm) / peaks["fp32"]
    print(
        f"{setting} bound: attention {attention:.3f} s + GEMMs {gemm:.3f} s "
        f"({out['gemm_share_of_peak']:.0%} of peak) per step -> at most "
        f"{out['bound_share_of_fp32_peak']:.0%} of fp32 peak",
        flush=True,
    )
    return out


def synthetic_dataset(n_transitions: int = 10, seed: int = 0) -> SequenceDataset:
    """Episodes of stable random linear dynamics with HalfCheetah's dimensions (17, 6)."""
    rng = np.random.default_rng(seed)
    A = 0.9 * np.linalg.qr(rng.normal(size=(17, 17)))[0]
    B = 0.3 * rng.normal(size=(17, 6))
    eps = []
    for _ in range(60):
        s, obs, act, rew = rng.uniform(-1, 1, 17), [], [], []
        for _ in range(100):
            a = np.tanh(rng.normal(size=6))
            obs.append(s), act.append(a), rew.append(-float(s @ s))
            s = A @ s + B @ a
        eps.append(
            Episode(np.array(obs, np.float32), np.array(act, np.float32), np.array(rew), False)
        )
    return SequenceDataset(eps, DataConfig("synthetic", n_transitions=n_transitions))


def loss_curve(steps: int) -> dict:
    """fp32 vs bf16 autocast: ttlib.train, same seed, data and steps; the cpu preset's model."""
    ds = synthetic_dataset()
    mcfg = gpt_config_for(ds, n_layer=4, n_head=4, n_embd=64, dropout=0.0)
    out = {"steps": steps, "batch": 32, "data": "synthetic linear dynamics, 17 + 6 dims"}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(
            max_steps=steps, batch_size=32, schedule="run_length", log_every=10, seed=0,
            precision=precision,
        )  # fmt: skip
        c = time.process_time()
        r = train(ds, mcfg, cfg, progress=False)
        out[precision] = {
            "cpu_s": time.process_time() - c,
            "loss": [h["loss"] for h in r.history],
            "step": [h["step"] for h in r.history],
        }
    a, b = np.array(out["fp32"]["loss"]), np.array(out["bf16"]["loss"])
    out["max_abs_loss_difference"] = float(np.abs(a - b).max())
    out["final_loss_difference_bf16_minus_fp32"] = float(b[-1] - a[-1])
    print(f"loss curve: fp32 {a[-1]:.4f}, bf16 {b[-1]:.4f}, max |diff| {np.abs(a - b).max():.4f}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    p.add_argument("--baseline-rev", default="44e46f0", help="ttlib_before; 'none' to skip")
    p.add_argument("--loss-steps", type=int, default=150, help="0 skips the loss curves")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "training.json")
    p.add_argument(
        "--bound", action="store_true", help="only the attention + GEMM bound: training_bound.json"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the peak is one core's, whatever --threads the steps use
    peaks = {
        k: matmul_peak_flops(dtype=d)
        for k, d in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    torch.set_num_threads(args.threads)
    if args.bound:
        result = {"machine": machine_info(args.threads), "matmul_peak_gflop_s": peaks["fp32"] / 1e9}
        result["settings"] = {s: step_bound(s, peaks) for s in args.settings}
        result["machine"]["load_average_end"] = list(os.getloadavg())
        out = args.out.with_name("training_bound.json")
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
        return
    result = {"machine": machine_info(args.threads)}
    result["flop_formula"] = "6*(12*L*E^2 + (K+1)*E) + 6*L*E*(T+1) per token (causal attention)"
    result["matmul_peak_gflop_s"] = {k: v / 1e9 for k, v in peaks.items()}
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.1f}, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s")
    before = None if args.baseline_rev == "none" else model_at(args.baseline_rev)
    result["baseline_rev"] = args.baseline_rev
    result["settings"] = {s: speed(s, before, args.steps, peaks) for s in args.settings}
    if args.loss_steps:
        result["bf16_loss_curve"] = loss_curve(args.loss_steps)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}; `python benchmarks/plot.py` makes training.csv from it")


if __name__ == "__main__":
    main()
