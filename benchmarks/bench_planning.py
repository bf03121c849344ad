"""Planning speed: ttlib's cached beam search vs a faithful copy of the original planner.

One env step = one full plan (the paper replans every step), so env-steps/s = plans per second.
Both planners run on the same weights in the same process. Times are **CPU seconds of a
single-threaded process** by default: on a shared machine wall time mostly measures the other
jobs, while the CPU time of one thread is what an idle core would take (wall time is recorded
too). Writes ``results/benchmarks/planning.json``.

    nice python benchmarks/bench_planning.py            # about 10 minutes on one core
    nice python benchmarks/bench_planning.py --quick    # smaller, for a smoke check
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ttlib.model import GPTConfig, KVCache, TrajectoryGPT
from ttlib.original import (
    OriginalQuantileDiscretizer,
    original_beam_plan,
    original_from_ttlib,
    original_value_fn,
)
from ttlib.search import PlannerConfig, beam_search

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("speed", "episodes", "agreement")
# The last commit before the shared-prefix cache: its model and planner are timed alongside.
BASELINE_REV = "bf87429"


# ------------------------------------------------------------------ machine
def machine_info(threads: int) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next(
            (ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")),
            "",
        ).split()
    except OSError:
        flags = []
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        sha = ""
    return {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "simd": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": threads,
        "load_average_start": list(os.getloadavg()),
        "git_sha": sha,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "timing": "process CPU seconds (time.process_time); wall seconds alongside",
    }


def matmul_peak_flops(n: int = 4096, reps: int = 3) -> float:
    """FLOP/s of a large fp32 torch.matmul (best of ``reps``): this machine's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        c = time.process_time()
        a @ b
        best = min(best, time.process_time() - c)
    return 2 * n**3 / best


# -------------------------------------------------------------- flop counting
class FlopCounter:
    """Counts the matmul FLOPs of every model forward pass (hooks, no timing overhead).

    Per pass with B rows, T new tokens and S keys: per layer 24·B·T·E² (qkv, proj, 4x MLP)
    + 4·B·T·S·E (scores and weighted values), plus the output layer 2·B·T·(K+1)·E once per
    token (only the head of the token's own dimension is useful work).
    """

    def __init__(self, model: torch.nn.Module, n_layer: int, n_embd: int, n_out: int):
        self.flops = 0
        self.passes = 0
        self.L, self.E, self.K1 = n_layer, n_embd, n_out
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        idx = args[0] if args else kwargs["idx"]
        B, T = idx.shape
        cache = kwargs.get("cache")
        S = T + getattr(cache, "length", 0)  # any version's KVCache
        L, E = self.L, self.E
        self.flops += L * (24 * B * T * E * E + 4 * B * T * S * E) + 2 * B * T * self.K1 * E
        self.passes += 1

    def close(self):
        self.handle.remove()


# ------------------------------------------------------------------- timing
@dataclass
class Timing:
    cpu_s: list[float]
    wall_s: list[float]
    flops: int
    passes: int

    @property
    def cpu_per_call(self) -> float:
        return statistics.median(self.cpu_s)

    def summary(self, peak: float, episodes: int = 1) -> dict:
        per_call = self.cpu_per_call
        return {
            "calls": len(self.cpu_s),
            "cpu_s_per_call": per_call,
            "cpu_s_all": [round(x, 3) for x in self.cpu_s],
            "wall_s_all": [round(x, 3) for x in self.wall_s],
            "env_steps_per_s": episodes / per_call,
            "forward_passes_per_call": self.passes,
            "gflop_per_call": self.flops / 1e9,
            "achieved_gflop_s": self.flops / per_call / 1e9,
            "fraction_of_matmul_peak": self.flops / per_call / peak,
        }


def time_calls(fn, n_calls: int, counter: FlopCounter) -> Timing:
    cpu, wall = [], []
    flops = passes = 0
    for i in range(n_calls):
        counter.flops = counter.passes = 0
        c, w = time.process_time(), time.perf_counter()
        fn(i)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
        flops, passes = counter.flops, counter.passes
    return Timing(cpu, wall, flops, passes)


# ------------------------------------------------------------------- setup
def paper_model(seed: int, sharpen: float | None = None, n_embd: int = 128) -> TrajectoryGPT:
    """HalfCheetah-sized paper model (obs 17, act 6, 4 layers, 128 emb, 100 bins).

    ``n_embd=64`` is the size of the cpu preset's models (4 layers, 4 heads, 64 emb).
    """
    torch.manual_seed(seed)
    model = TrajectoryGPT(GPTConfig(observation_dim=17, action_dim=6, n_embd=n_embd)).eval()
    if sharpen is not None:  # random but confident predictions, for the agreement study
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "ln" not in name:
                    p.copy_(torch.randn(p.shape, generator=g) * sharpen)
    return model


def synthetic_discretizer(config: GPTConfig, seed: int = 0) -> OriginalQuantileDiscretizer:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(config.n_bins * config.n_bins, config.transition_dim))
    return OriginalQuantileDiscretizer(config.n_bins).fit(data)


def random_contexts(config: GPTConfig, n: int, n_context: int, seed: int) -> torch.Tensor:
    """(n, n_context·td + obs) random bins, with the value placeholder where the original has it."""
    g = torch.Generator().manual_seed(seed)
    td, K = config.transition_dim, config.n_bins
    ctx = torch.randint(0, K, (n, n_context * td + config.observation_dim), generator=g)
    ctx[:, td - 1 : n_context * td : td] = K - 1
    return ctx


def plan_kwargs(cfg: PlannerConfig) -> dict:
    return {
        "horizon": cfg.horizon,
        "beam_width": cfg.beam_width,
        "n_expand": cfg.n_expand,
        "discount": cfg.discount,
        "max_context_transitions": cfg.max_context_transitions,
        "k_act": cfg.k_act,
        "cdf_act": cfg.cdf_act,
        "deterministic": cfg.deterministic,
    }


class Baseline:
    """ttlib's model and planner as of an earlier commit, imported from ``git show``."""

    def __init__(self, rev: str):
        self.rev = rev
        folder = Path(tempfile.mkdtemp(prefix="bench_baseline_"))
        mods = {}
        for name in ("model", "search"):
            code = subprocess.run(
                ["git", "show", f"{rev}:ttlib/{name}.py"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            path = folder / f"baseline_{name}.py"
            path.write_text(code)
            spec = importlib.util.spec_from_file_location(f"baseline_{name}", path)
            mods[name] = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mods[name]
            spec.loader.exec_module(mods[name])
        self.model_module, self.search = mods["model"], mods["search"]

    def model(self, model: TrajectoryGPT):
        old = self.model_module.TrajectoryGPT(self.model_module.GPTConfig(**vars(model.config)))
        old.load_state_dict(model.state_dict())
        return old.eval()

    def plan(self, model, disc, ctx, planner: PlannerConfig, generator):
        cfg = self.search.PlannerConfig(**vars(planner))
        return self.search.beam_search(model, disc, ctx, cfg, generator=generator)


# ------------------------------------------------------------------ studies
def speed(
    model, ref, disc, planner: PlannerConfig, ttlib_calls, original_calls, peak, seed, baseline
):
    c = model.config
    ctx = random_contexts(c, 1, planner.max_context_transitions, seed)
    value_fn = original_value_fn(disc)
    gen = torch.Generator().manual_seed(seed)
    warm = PlannerConfig(**{**vars(planner), "horizon": 1})
    beam_search(model, disc, ctx, warm, generator=gen)

    counter = FlopCounter(model, c.n_layer, c.n_embd, c.n_bins + 1)
    ours = time_calls(
        lambda i: beam_search(model, disc, ctx, planner, generator=gen), ttlib_calls, counter
    )
    counter.close()
    out = {"ttlib": ours.summary(peak)}
    if baseline is not None:
        old = baseline.model(model)
        baseline.plan(old, disc, ctx, warm, gen)
        counter = FlopCounter(old, c.n_layer, c.n_embd, c.n_bins + 1)
        before = time_calls(
            lambda i: baseline.plan(old, disc, ctx, planner, gen), ttlib_calls, counter
        )
        counter.close()
        out["ttlib_before"] = {"git_rev": baseline.rev, **before.summary(peak)}
        out["speedup_ttlib_over_before"] = before.cpu_per_call / ours.cpu_per_call
        # Same weights, same sampling: the two versions must choose the same plan.
        a = beam_search(model, disc, ctx, planner, generator=torch.Generator().manual_seed(1))
        b = baseline.plan(old, disc, ctx, planner, torch.Generator().manual_seed(1))
        out["same_plan_as_before"] = bool(torch.equal(a.tokens, b.tokens))
    if original_calls > 0:
        counter = FlopCounter(ref, c.n_layer, c.n_embd, c.n_bins + 1)
        theirs = time_calls(
            lambda i: original_beam_plan(
                ref,
                value_fn,
                ctx,
                observation_dim=c.observation_dim,
                action_dim=c.action_dim,
                generator=gen,
                **plan_kwargs(planner),
            ),
            original_calls,
            counter,
        )
        counter.close()
        out["original"] = theirs.summary(peak)
        out["speedup_ttlib_over_original"] = theirs.cpu_per_call / ours.cpu_per_call
        if baseline is not None:
            out["speedup_before_over_original"] = theirs.cpu_per_call / before.cpu_per_call
    return out


def episodes_scaling(model, disc, planner, episodes, calls, peak, max_gb, seed):
    c = model.config
    out = {}
    gen = torch.Generator().manual_seed(seed)
    for E in episodes:
        rows = E * planner.beam_width * planner.n_expand
        need = 2.5 * KVCache.bytes_needed(c, rows) / 2**30  # cache + a reordered copy + slack
        if need > max_gb:
            out[str(E)] = {"skipped": f"needs ~{need:.1f} GiB (> --max-gb {max_gb})"}
            continue
        ctx = random_contexts(c, E, planner.max_context_transitions, seed)
        counter = FlopCounter(model, c.n_layer, c.n_embd, c.n_bins + 1)
        t = time_calls(
            lambda i, ctx=ctx: beam_search(model, disc, ctx, planner, generator=gen),
            calls,
            counter,
        )
        counter.close()
        out[str(E)] = t.summary(peak, episodes=E)
    return out


def agreement(
    model, disc, planner: PlannerConfig, n_context: int, n_contexts: int, seed: int
) -> dict:
    """Deterministic plans of ttlib and the original on the same contexts: how often they agree.

    With context + horizon inside the original's window they must agree exactly; beyond it the
    original slides a 5-transition window token by token, while ttlib keeps a longer cached
    window that jumps, so the model conditions on different histories.
    """
    ref = original_from_ttlib(model)
    value_fn = original_value_fn(disc)
    c = model.config
    ctxs = random_contexts(c, n_contexts, n_context, seed)
    same_action, same_plan, d_score, rel = 0, 0, [], []
    for i in range(n_contexts):
        ctx = ctxs[i : i + 1]
        ours = beam_search(model, disc, ctx, planner)
        theirs = original_beam_plan(
            ref,
            value_fn,
            ctx,
            observation_dim=c.observation_dim,
            action_dim=c.action_dim,
            **plan_kwargs(planner),
        )
        a = slice(c.observation_dim, c.observation_dim + c.action_dim)
        same_action += bool(torch.equal(ours.tokens[0, 0, a], theirs.tokens[0, a]))
        same_plan += bool(torch.equal(ours.tokens[0], theirs.tokens))
        s = float(ours.score[0])
        d_score.append(s - theirs.score)
        rel.append(abs(s - theirs.score) / max(abs(theirs.score), 1e-9))
    return {
        "contexts": n_contexts,
        "context_transitions": n_context,
        "max_context_transitions": planner.max_context_transitions,
        "horizon": planner.horizon,
        "beam_width": planner.beam_width,
        "n_expand": planner.n_expand,
        "identical_first_action": same_action / n_contexts,
        "identical_plan": same_plan / n_contexts,
        "score_diff_mean": float(np.mean(d_score)),
        "score_abs_diff_mean": float(np.mean(np.abs(d_score))),
        "score_rel_diff_mean": float(np.mean(rel)),
    }


# --------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ttlib-calls", type=int, default=3)
    p.add_argument("--original-calls-paper", type=int, default=1)
    p.add_argument("--original-calls-cpu", type=int, default=2)
    p.add_argument(
        "--baseline-rev",
        default=BASELINE_REV,
        help="also time ttlib's planner at this commit (same weights); 'none' to skip",
    )
    p.add_argument("--episodes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--max-gb", type=float, default=6.0, help="skip episode counts above this")
    p.add_argument("--agreement-contexts", type=int, default=8)
    p.add_argument("--agreement-beam", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="run only these; the others are kept from an existing output file",
    )
    p.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    p.add_argument("--out", type=Path, default=None, help="default results/benchmarks/")
    args = p.parse_args(argv)
    if args.out is None:  # quick runs never overwrite the published numbers
        folder = ROOT / ("build" if args.quick else "results") / "benchmarks"
        args.out = folder / ("planning-quick.json" if args.quick else "planning.json")
    torch.set_num_threads(args.threads)

    result = {}
    if set(args.sections) != set(SECTIONS) and args.out.exists():
        result = json.loads(args.out.read_text())
    result["machine"] = machine_info(args.threads)
    result.setdefault("sections_run", {})
    for section in args.sections:  # which run (code version, load) produced each section
        result["sections_run"][section] = {
            k: result["machine"][k] for k in ("date", "git_sha", "load_average_start")
        }
    peak = None
    if {"speed", "episodes"} & set(args.sections):
        peak = matmul_peak_flops(1024 if args.quick else 4096)
        result["matmul_peak_gflop_s"] = peak / 1e9
        print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s on {args.threads} thread(s)")

    model = paper_model(args.seed)
    ref = original_from_ttlib(model)
    disc = synthetic_discretizer(model.config)
    paper = PlannerConfig(horizon=15, beam_width=128, n_expand=2)
    cpu = PlannerConfig(horizon=5, beam_width=32, n_expand=2)
    if args.quick:
        paper = PlannerConfig(horizon=2, beam_width=8, n_expand=2)
        cpu = PlannerConfig(horizon=2, beam_width=4, n_expand=2)
        args.episodes, args.ttlib_calls = [1, 2], 1
        args.agreement_contexts, args.agreement_beam = 1, 2
    result["model"] = {**model.config.to_dict(), "weights": "random init (seed)"}

    if "speed" in args.sections:
        result["configs"] = run_speed(args, model, ref, disc, paper, cpu, peak)
    if "episodes" in args.sections:
        result["episodes_together"] = run_episodes(args, model, disc, paper, cpu, peak)
    if "agreement" in args.sections:
        result["agreement"] = run_agreement(args)
        result["agreement_model"] = "random weights ~ N(0, 0.1^2) (confident, untrained)"
    result["machine"]["load_average_end"] = list(os.getloadavg())

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def run_speed(args, model, ref, disc, paper, cpu, peak) -> dict:
    baseline = None if args.baseline_rev == "none" else Baseline(args.baseline_rev)
    small = paper_model(args.seed, n_embd=64)  # the cpu preset's model size
    out = {}
    for name, m, r_m, planner, n_orig in (
        ("cpu_preset_4x64_H5_B32", small, original_from_ttlib(small), cpu, args.original_calls_cpu),
        ("cpu_H5_B32", model, ref, cpu, args.original_calls_cpu),
        ("paper_H15_B128", model, ref, paper, args.original_calls_paper),
    ):
        r = speed(m, r_m, disc, planner, args.ttlib_calls, n_orig, peak, args.seed, baseline)
        r["model"] = {k: m.config.to_dict()[k] for k in ("n_layer", "n_head", "n_embd")}
        r["planner"] = {k: v for k, v in vars(planner).items() if k != "seed"}
        out[name] = r
        line = f"{name}: ttlib {r['ttlib']['env_steps_per_s']:.3f} env-steps/s"
        if "ttlib_before" in r:
            line += (
                f" (before {r['ttlib_before']['env_steps_per_s']:.3f}, "
                f"{r['speedup_ttlib_over_before']:.2f}x, same plan {r['same_plan_as_before']})"
            )
        if "original" in r:
            line += (
                f", original {r['original']['env_steps_per_s']:.4f} env-steps/s, "
                f"ratio {r['speedup_ttlib_over_original']:.1f}x"
            )
        print(line, flush=True)
    return out


def run_episodes(args, model, disc, paper, cpu, peak) -> dict:
    out = {}
    for name, planner in (("cpu_H5_B32", cpu), ("paper_H15_B128", paper)):
        eps = args.episodes if name.startswith("cpu") else [e for e in args.episodes if e <= 16]
        r = episodes_scaling(model, disc, planner, eps, 1, peak, args.max_gb, args.seed)
        out[name] = r
        for E, v in r.items():
            msg = v.get("skipped") or f"{v['env_steps_per_s']:.3f} env-steps/s"
            print(f"{name} episodes={E}: {msg}", flush=True)
    return out


def run_agreement(args) -> dict:
    out = {}
    sharp = paper_model(args.seed, sharpen=0.1)
    sdisc = synthetic_discretizer(sharp.config)
    for name, n_context, planner in (
        ("fits_window_ctx2_H3", 2, PlannerConfig(horizon=3)),
        ("ctx4_H15", 4, PlannerConfig(horizon=2 if args.quick else 15)),
        ("paper_ctx5_H15", 5, PlannerConfig(horizon=2 if args.quick else 15)),
    ):
        planner.beam_width, planner.deterministic = args.agreement_beam, True
        r = agreement(sharp, sdisc, planner, n_context, args.agreement_contexts, args.seed)
        out[name] = r
        print(
            f"agreement {name}: first action {r['identical_first_action']:.2f}, "
            f"plan {r['identical_plan']:.2f}, |score diff| {r['score_abs_diff_mean']:.4f}",
            flush=True,
        )
    return out


if __name__ == "__main__":
    main()
