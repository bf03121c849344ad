"""Planning speed: ttlib's cached beam search vs a faithful copy of the original planner.

One env step = one full plan (the paper replans every step), so env-steps/s = plans per second.
Both planners run on the same weights in the same process. Times are **CPU seconds of a
single-threaded process** by default: on a shared machine wall time mostly measures the other
jobs, while the CPU time of one thread is what an idle core would take (wall time is recorded
too). Writes ``results/benchmarks/planning.json``.

    nice python benchmarks/bench_planning.py            # about 10 minutes on one core
    nice python benchmarks/bench_planning.py --quick    # smaller, for a smoke check

With ``--checkpoint PATH`` (a trained ttlib checkpoint) the ``agreement`` section compares the
two planners on real contexts of the checkpoint's dataset (key ``agreement_trained``) and the
``window_effect`` section runs closed-loop HalfCheetah episodes with both (see README.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ttlib.interop.checkpoint import OriginalQuantileDiscretizer
from ttlib.interop.original import original_from_ttlib
from ttlib.interop.original_planner import original_beam_plan, original_value_fn
from ttlib.kvcache import KVCache
from ttlib.model import GPTConfig, TrajectoryGPT
from ttlib.search import PlannerConfig, beam_search

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("speed", "episodes", "agreement", "window_effect", "roofline")
# Sections stored in planning.json; ``roofline`` writes its own file (--roofline-out).
PLANNING_SECTIONS = SECTIONS[:-1]
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
        "command": shlex.join(["python", *sys.argv]),  # how this file was produced
    }


def cpu_seconds(fn, reps: int) -> float:
    """Best of ``reps`` process-CPU timings of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        c = time.process_time()
        fn()
        times.append(time.process_time() - c)
    return min(times)


def matmul_peak_flops(n: int = 4096, reps: int = 3, dtype=torch.float32) -> float:
    """FLOP/s of a large torch.matmul in ``dtype`` (best of ``reps``): the practical peak."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / cpu_seconds(lambda: a @ b, reps)


def memory_bandwidth(sizes_mib=(1, 16, 64, 1024), reps: int = 5) -> dict:
    """Best-of-``reps`` GB/s of two torch kernels over fp32 arrays of each size (MiB).

    ``read``: ``a.sum()``, counted as the array's bytes once (read only). ``copy``:
    ``b.copy_(a)``, counted as read + write (twice the array's bytes; a write-allocate read of
    ``b``, if the CPU does one, is not counted, so this may understate the traffic). Small
    arrays are repeated until one timing covers >= 256 MiB, so the clock's resolution does not
    matter. Only arrays far larger than the last-level cache measure main memory.
    """
    out = {}
    for mib in sizes_mib:
        n = mib * 2**20 // 4
        a, b = torch.ones(n), torch.zeros(n)  # written once, so every page is mapped
        inner = max(1, 256 // mib)
        best = {"read": float("inf"), "copy": float("inf")}
        for _ in range(reps + 1):  # the first round warms up
            for name, op in (("read", a.sum), ("copy", partial(b.copy_, a))):
                c = time.process_time()
                for _ in range(inner):
                    op()
                best[name] = min(best[name], (time.process_time() - c) / inner)
        out[str(mib)] = {
            "array_mib": mib,
            "read_gb_s": n * 4 / best["read"] / 1e9,
            "copy_gb_s": 2 * n * 4 / best["copy"] / 1e9,
        }
    return out


# -------------------------------------------------------------- flop counting
def pass_flops(B: int, T: int, S: int, L: int, E: int, n_out: int) -> int:
    """Matmul FLOPs of one forward pass: B rows, T new tokens, S keys (see FlopCounter)."""
    return L * (24 * B * T * E * E + 4 * B * T * S * E) + 2 * B * T * n_out * E


def pass_bytes(
    B: int,
    T: int,
    cached: int,
    shared: int,
    groups: int,
    L: int,
    E: int,
    n_out: int,
    transition_dim: int,
    dtype_bytes: int = 4,
    parents: int = 0,
    parent_len: int = 0,
) -> dict[str, int]:
    """Estimated bytes one forward pass must move between the core and memory.

    B rows decode T new tokens after ``cached`` keys already in the KV cache (0 without a
    cache), of which the first ``shared`` are stored once per group of rows (``groups``
    groups: ``KVCache.share_prefix``), the next ``parent_len`` once per parent (``parents``
    of them, after ``KVCache.expand``) and the rest once per row. Counted once per pass:

    * ``weights``: every layer's parameters (qkv, proj, MLP, layer norms: 12·E² + 13·E per
      layer), the final layer norm, and the output heads used: one head (n_out·E) for a
      single token, all ``transition_dim`` heads for a window;
    * ``kv_read``: per layer the keys and values attended to (2·E numbers per key): the
      shared prefix once per group, the parents' past once per parent, every other key once
      per row (the new tokens' own included);
    * ``kv_write``: per layer the new tokens' keys and values (2·E per row and token);
    * ``io``: the pass's input (token and position embedding rows) and output (logits).

    Not counted (``activations`` is returned separately, as an upper estimate): the
    intermediate activations of each layer (normalised input, q/k/v, the 4·E MLP hidden
    layer, residual sums), taken here as each op's inputs and outputs once, unfused:
    36·E numbers per row, token and layer. For a single-token pass over a few hundred rows
    they are at most a few hundred KiB per op and stay in the core's L2 cache; for window
    passes (T > 1) they are large and really travel, so the total understates those passes'
    traffic. The attention scores (B·H·T·S; materialised by the original, not by
    ``scaled_dot_product_attention``) are not counted either, nor any re-reading of data
    a kernel makes because it does not fit in cache. This is an estimate from shapes.
    """
    S = cached + T
    head = n_out * E * (1 if T == 1 else transition_dim)
    weights = L * (12 * E * E + 13 * E) + 2 * E + head
    own = S - shared - parent_len
    kv_read = L * 2 * E * (groups * shared + parents * parent_len + B * own)
    kv_write = L * 2 * E * B * T
    io = B * T * (2 * E + n_out)
    activations = L * 36 * B * T * E
    return {
        "weights": weights * dtype_bytes,
        "kv_read": kv_read * dtype_bytes,
        "kv_write": kv_write * dtype_bytes,
        "io": io * dtype_bytes,
        "activations_not_counted": activations * dtype_bytes,
    }


BYTE_PARTS = ("weights", "kv_read", "kv_write", "io")


class FlopCounter:
    """Counts the matmul FLOPs and estimated memory bytes of every model forward pass (hooks).

    FLOPs per pass with B rows, T new tokens and S keys: per layer 24·B·T·E² (qkv, proj, 4x
    MLP) + 4·B·T·S·E (scores and weighted values), plus the output layer 2·B·T·(K+1)·E once per
    token (only the head of the token's own dimension is useful work). Bytes: ``pass_bytes``.

    The totals are also kept per kind of pass (``kinds``): ``single_token`` (T = 1, decoding
    with the cache) and ``multi_token`` (encoding a context or window, and every pass of the
    original planner), each with the CPU seconds spent inside the passes (``time.process_time``
    around the model's forward: the clock costs about a microsecond per pass).
    """

    def __init__(
        self, model: torch.nn.Module, n_layer: int, n_embd: int, n_out: int, transition_dim=25
    ):
        self.L, self.E, self.K1, self.td = n_layer, n_embd, n_out, transition_dim
        self.reset()
        self.handles = [
            model.register_forward_pre_hook(self._hook, with_kwargs=True),
            model.register_forward_hook(self._done),
        ]
        self._started = None

    def reset(self):
        self.flops = self.passes = self.bytes = 0
        self.kinds: dict[str, dict] = {}

    def _hook(self, module, args, kwargs):
        idx = args[0] if args else kwargs["idx"]
        B, T = idx.shape
        cache = kwargs.get("cache")
        cached = getattr(cache, "length", 0)  # any version's KVCache
        shared = getattr(cache, "shared", 0)
        groups = cache.n_groups if shared else B
        parent_len = getattr(cache, "parent_len", 0)  # versions before KVCache.expand: 0
        parents = B // cache.copies if parent_len else 0
        L, E = self.L, self.E
        flops = pass_flops(B, T, cached + T, L, E, self.K1)
        parts = pass_bytes(
            B,
            T,
            cached,
            shared,
            groups,
            L,
            E,
            self.K1,
            self.td,
            parents=parents,
            parent_len=parent_len,
        )
        nbytes = sum(parts[k] for k in BYTE_PARTS)
        self.flops += flops
        self.bytes += nbytes
        self.passes += 1
        kind = self.kinds.setdefault(
            "single_token" if T == 1 else "multi_token",
            {"passes": 0, "flops": 0, "bytes": 0, "cpu_s": 0.0, **dict.fromkeys(parts, 0)},
        )
        kind["passes"] += 1
        kind["flops"] += flops
        kind["bytes"] += nbytes
        for k, v in parts.items():
            kind[k] += v
        self._started = (kind, time.process_time())

    def _done(self, module, args, output):
        if self._started is not None:
            kind, start = self._started
            kind["cpu_s"] += time.process_time() - start
            self._started = None

    def close(self):
        for h in self.handles:
            h.remove()


class ReorderCounter:
    """Counts the bytes and CPU time of ``KVCache.select`` (beam reorders) while active.

    Each call copies the keys and values of the positions the rows generated (not the shared
    prefix) for every layer: read once and written once, 2 · 2 · L · rows · used · E numbers
    (after ``KVCache.expand`` the same count, gathered from the parents' past and the children's
    own positions; expansions themselves copy nothing and are not select calls). Wraps the
    class method for the duration of a ``with`` block; ttlib is not changed.
    """

    def __init__(self):
        self.bytes = self.calls = 0
        self.cpu_s = 0.0

    def reset(self):
        self.bytes = self.calls = 0
        self.cpu_s = 0.0

    def __enter__(self):
        original = self._original = KVCache.select
        counter = self

        def select(cache, index):
            L, _, H, _, hd = cache.k.shape
            used = cache.length - cache.shared
            counter.bytes += 2 * 2 * L * index.shape[0] * H * used * hd * cache.k.element_size()
            counter.calls += 1
            c = time.process_time()
            try:
                return original(cache, index)
            finally:
                counter.cpu_s += time.process_time() - c

        KVCache.select = select
        return self

    def __exit__(self, *exc):
        KVCache.select = self._original
        return False


def roofline(flops: float, nbytes: float, cpu_s: float, peak: float, bandwidth: float) -> dict:
    """Arithmetic intensity, achieved rates and the roofline bound min(peak, I·bandwidth)."""
    intensity = flops / nbytes if nbytes else float("inf")
    bound = min(peak, intensity * bandwidth)
    achieved = flops / cpu_s if cpu_s else 0.0
    gb_s = nbytes / cpu_s / 1e9 if cpu_s else 0.0
    return {
        "cpu_s": cpu_s,
        "gflop": flops / 1e9,
        "gb": nbytes / 1e9,
        "flop_per_byte": intensity,
        "achieved_gflop_s": achieved / 1e9,
        "achieved_gb_s": gb_s,
        "fraction_of_bandwidth": gb_s * 1e9 / bandwidth,
        "fraction_of_matmul_peak": achieved / peak,
        "roofline_bound_gflop_s": bound / 1e9,
        "bound_by": "memory" if intensity * bandwidth < peak else "compute",
        "fraction_of_roofline_bound": achieved / bound,
    }


# ------------------------------------------------------------------- timing
@dataclass
class Timing:
    cpu_s: list[float]
    wall_s: list[float]
    flops: int
    passes: int
    nbytes: int = 0
    # per call: FlopCounter.kinds (and the reorders, when counted) of that call
    breakdown: list[dict] = field(default_factory=list)

    @property
    def cpu_per_call(self) -> float:
        return statistics.median(self.cpu_s)

    @property
    def median_call(self) -> int:
        """Index of the call whose CPU time is the median (the lower one for an even count)."""
        order = sorted(range(len(self.cpu_s)), key=self.cpu_s.__getitem__)
        return order[(len(order) - 1) // 2]

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


def time_calls(fn, n_calls: int, counter: FlopCounter, reorders=None) -> Timing:
    cpu, wall, breakdown = [], [], []
    flops = passes = nbytes = 0
    for i in range(n_calls):
        counter.reset()
        if reorders is not None:
            reorders.reset()
        c, w = time.process_time(), time.perf_counter()
        fn(i)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
        flops, passes, nbytes = counter.flops, counter.passes, counter.bytes
        parts = {k: dict(v) for k, v in counter.kinds.items()}
        if reorders is not None:
            parts["reorders"] = {
                "calls": reorders.calls,
                "bytes": reorders.bytes,
                "cpu_s": reorders.cpu_s,
            }
        breakdown.append(parts)
    return Timing(cpu, wall, flops, passes, nbytes, breakdown)


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
        for name in ("kvcache", "model", "search"):
            show = subprocess.run(
                ["git", "show", f"{rev}:ttlib/{name}.py"], cwd=ROOT, capture_output=True, text=True
            )
            if show.returncode and name == "kvcache":
                continue  # before ttlib/kvcache.py the cache lived in model.py
            show.check_returncode()
            # The model imports the cache of the same commit, not today's.
            code = show.stdout.replace("from ttlib.kvcache import", "from baseline_kvcache import")
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


def plan_original(ref, value_fn, ctx, config: GPTConfig, planner: PlannerConfig, generator=None):
    """The original algorithm's plan for ``ctx`` with ttlib's planner settings."""
    return original_beam_plan(
        ref,
        value_fn,
        ctx,
        observation_dim=config.observation_dim,
        action_dim=config.action_dim,
        generator=generator,
        **plan_kwargs(planner),
    )


def time_original(ref, value_fn, ctx, config: GPTConfig, planner, generator, calls) -> Timing:
    """``calls`` plans of the original, with the FLOPs, bytes and time of its passes."""
    c = config
    counter = FlopCounter(ref, c.n_layer, c.n_embd, c.n_bins + 1, c.transition_dim)
    t = time_calls(
        lambda i: plan_original(ref, value_fn, ctx, c, planner, generator), calls, counter
    )
    counter.close()
    return t


def speed(
    model, ref, disc, planner: PlannerConfig, ttlib_calls, original_calls, peak, seed, baseline
):
    c = model.config
    ctx = random_contexts(c, 1, planner.max_context_transitions, seed)
    value_fn = original_value_fn(disc)
    gen = torch.Generator().manual_seed(seed)
    warm = PlannerConfig(**{**vars(planner), "horizon": 1})
    beam_search(model, disc, ctx, warm, generator=gen)

    counter = FlopCounter(model, c.n_layer, c.n_embd, c.n_bins + 1, c.transition_dim)
    ours = time_calls(
        lambda i: beam_search(model, disc, ctx, planner, generator=gen), ttlib_calls, counter
    )
    counter.close()
    out = {"ttlib": ours.summary(peak)}
    if baseline is not None:
        old = baseline.model(model)
        baseline.plan(old, disc, ctx, warm, gen)
        counter = FlopCounter(old, c.n_layer, c.n_embd, c.n_bins + 1, c.transition_dim)
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
        theirs = time_original(ref, value_fn, ctx, c, planner, gen, original_calls)
        out["original"] = theirs.summary(peak)
        out["speedup_ttlib_over_original"] = theirs.cpu_per_call / ours.cpu_per_call
        if baseline is not None:
            out["speedup_before_over_original"] = theirs.cpu_per_call / before.cpu_per_call
    return out


def kind_roofline(kind: dict, plan_cpu_s: float, peak: float, bandwidth: float) -> dict:
    """The roofline of one kind of pass (a FlopCounter.kinds entry) and its share of a plan."""
    out = {"passes": kind["passes"]}
    out.update(roofline(kind["flops"], kind["bytes"], kind["cpu_s"], peak, bandwidth))
    out["share_of_plan_cpu"] = kind["cpu_s"] / plan_cpu_s
    out["gb_by_part"] = {k: kind[k] / 1e9 for k in (*BYTE_PARTS, "activations_not_counted")}
    return out


def roofline_summary(t: Timing, peak: float, bandwidth: float) -> dict:
    """Whole plan and each kind of pass of the median call, against the measured roofline.

    ``plan``: the forward passes' FLOPs and the bytes of the passes and of the beam reorders,
    over the plan's whole CPU time (sampling and bookkeeping included).
    """
    i = t.median_call
    per_call = t.cpu_s[i]
    parts = t.breakdown[i]
    reorders = parts.get("reorders", {"calls": 0, "bytes": 0, "cpu_s": 0.0})
    out = {
        "calls": len(t.cpu_s),
        "cpu_s_all": [round(x, 3) for x in t.cpu_s],
        "wall_s_all": [round(x, 3) for x in t.wall_s],
        "env_steps_per_s": 1 / per_call,
        "forward_passes_per_call": t.passes,
        "plan": roofline(t.flops, t.nbytes + reorders["bytes"], per_call, peak, bandwidth),
    }
    inside = 0.0
    for name in ("single_token", "multi_token"):
        if name in parts:
            out[f"{name}_passes"] = kind_roofline(parts[name], per_call, peak, bandwidth)
            inside += parts[name]["cpu_s"]
    if reorders["calls"]:
        gb_s = reorders["bytes"] / reorders["cpu_s"] / 1e9 if reorders["cpu_s"] else 0.0
        out["reorders"] = {
            "calls": reorders["calls"],
            "cpu_s": reorders["cpu_s"],
            "gb": reorders["bytes"] / 1e9,
            "achieved_gb_s": gb_s,
            "fraction_of_bandwidth": gb_s * 1e9 / bandwidth,
            "share_of_plan_cpu": reorders["cpu_s"] / per_call,
        }
        inside += reorders["cpu_s"]
    out["rest_cpu_s"] = per_call - inside
    out["rest_share_of_plan_cpu"] = (per_call - inside) / per_call
    return out


def roofline_setting(
    model, ref, disc, planner: PlannerConfig, calls, original_calls, peak, bandwidth, seed
) -> dict:
    """ttlib's planner (and optionally the original's) with every pass's FLOPs, bytes and time."""
    c = model.config
    ctx = random_contexts(c, 1, planner.max_context_transitions, seed)
    gen = torch.Generator().manual_seed(seed)
    warm = PlannerConfig(**{**vars(planner), "horizon": 1})
    beam_search(model, disc, ctx, warm, generator=gen)
    counter = FlopCounter(model, c.n_layer, c.n_embd, c.n_bins + 1, c.transition_dim)
    with ReorderCounter() as reorders:
        t = time_calls(
            lambda i: beam_search(model, disc, ctx, planner, generator=gen),
            calls,
            counter,
            reorders,
        )
    counter.close()
    out = {"ttlib": roofline_summary(t, peak, bandwidth)}
    if original_calls > 0:
        value_fn = original_value_fn(disc)
        t = time_original(ref, value_fn, ctx, c, planner, gen, original_calls)
        out["original"] = roofline_summary(t, peak, bandwidth)
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
        counter = FlopCounter(model, c.n_layer, c.n_embd, c.n_bins + 1, c.transition_dim)
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
        theirs = plan_original(ref, value_fn, ctx, c, planner)
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


# ------------------------------------------------- trained model: window effect
def load_trained(path: Path):
    """(model, discretizer, info) from a ttlib checkpoint, read only."""
    from ttlib.train import load_checkpoint

    model, disc, ckpt = load_checkpoint(path, device="cpu")
    info = {
        "checkpoint": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        "step": int(ckpt["step"]),
        "max_steps": ckpt["train_config"].get("max_steps"),
        "dataset_id": ckpt["data_config"]["dataset_id"],
        "discretizer": ckpt["data_config"]["discretizer"],
        **{k: ckpt["gpt_config"][k] for k in ("n_layer", "n_head", "n_embd")},
    }
    return model, disc, ckpt, info


def real_contexts(disc, data_config: dict, lengths, per_length: int, seed: int):
    """Planning prefixes from the dataset: n real transitions [s, a, r, V placeholder] as bins
    (the placeholder is the top bin, as ``TTPlanner.observe`` stores it) and the next state.

    Returns a list of (n, (1, n·td + N) token tensor); the start steps are drawn at random.
    """
    from ttlib.data import DataConfig, load_episodes

    episodes = load_episodes(DataConfig(**data_config))
    rng = np.random.default_rng(seed)
    N = episodes[0].observations.shape[1]
    out = []
    for n in lengths:
        for _ in range(per_length):
            ep = episodes[rng.integers(len(episodes))]
            t = int(rng.integers(n, len(ep)))  # the current step; n transitions before it
            rows = np.concatenate(
                [
                    ep.observations[t - n : t],
                    ep.actions[t - n : t],
                    ep.rewards[t - n : t, None],
                    np.zeros((n, 1)),
                ],
                axis=1,
            )
            tokens = disc.encode(rows) if n else np.zeros((0, disc.dim), dtype=np.int64)
            tokens[:, -1] = disc.n_bins - 1
            obs = disc.encode(ep.observations[t][None], dims=slice(0, N))[0]
            ctx = np.concatenate([tokens.reshape(-1), obs])
            out.append((n, torch.as_tensor(ctx, dtype=torch.long)[None]))
    return out


def _first_action(disc, tokens: torch.Tensor, N: int, M: int) -> np.ndarray:
    """Decoded first action of a plan given as bins (H, td)."""
    return disc.decode(tokens.cpu().numpy()[None])[0, 0, N : N + M]


def trained_agreement(model, disc, contexts, planner: PlannerConfig, seed: int) -> dict:
    """ttlib's planner vs the original algorithm on the same trained weights and real contexts.

    Deterministic (rank rule): first action / plan identical, |Δ first action|, score gap.
    Sampling (the planners' default): both sampled with the same seed, which is *not* the same
    random stream (the two order their rows differently), so ttlib is also run with a second
    seed: the ttlib-vs-ttlib gap is the sampling noise to compare the cross-planner gap with.
    Results are grouped by context length (transitions before the current observation).
    """
    ref = original_from_ttlib(model)
    value_fn = original_value_fn(disc)
    c = model.config
    N, M = c.observation_dim, c.action_dim
    a = slice(N, N + M)
    per: dict[int, dict[str, list]] = {}
    cpu = {"ttlib": 0.0, "original": 0.0}
    for i, (n, ctx) in enumerate(contexts):
        rec = per.setdefault(n, {})

        def add(key, value, rec=rec):
            rec.setdefault(key, []).append(value)

        def run_ours(s, ctx=ctx):
            t0 = time.process_time()
            g = None if s is None else torch.Generator().manual_seed(s)
            out = beam_search(model, disc, ctx, planner, generator=g)
            cpu["ttlib"] += time.process_time() - t0
            return out

        def run_theirs(s, ctx=ctx):
            t0 = time.process_time()
            g = None if s is None else torch.Generator().manual_seed(s)
            out = plan_original(ref, value_fn, ctx, c, planner, g)
            cpu["original"] += time.process_time() - t0
            return out

        if planner.deterministic:
            ours, theirs = run_ours(None), run_theirs(None)
            add("same_action", bool(torch.equal(ours.tokens[0, 0, a], theirs.tokens[0, a])))
            add("same_plan", bool(torch.equal(ours.tokens[0], theirs.tokens)))
            d = _first_action(disc, ours.tokens[0], N, M) - _first_action(disc, theirs.tokens, N, M)
            add("action_abs_diff", float(np.abs(d).mean()))
            add("score_diff", float(ours.score[0]) - theirs.score)
        else:
            s = seed + i
            ours, ours2, theirs = run_ours(s), run_ours(s + 10_000), run_theirs(s)
            fa = [_first_action(disc, p.tokens[0], N, M) for p in (ours, ours2)]
            fo = _first_action(disc, theirs.tokens, N, M)
            add("same_action", bool(np.array_equal(fa[0], fo)))
            add("action_abs_diff", float(np.abs(fa[0] - fo).mean()))
            add("same_action_ttlib_2_seeds", bool(np.array_equal(fa[0], fa[1])))
            add("action_abs_diff_ttlib_2_seeds", float(np.abs(fa[0] - fa[1]).mean()))
            add("score_diff", float(ours.score[0]) - theirs.score)
        print(f"  ctx {n} #{i}: { ({k: v[-1] for k, v in rec.items()}) }", flush=True)

    def summarise(recs: list[dict]) -> dict:
        keys = recs[0].keys()
        m = {k: [v for r in recs for v in r[k]] for k in keys}
        out = {"contexts": len(m["same_action"])}
        for k, v in m.items():
            if k.startswith("same"):
                out["identical_" + k[5:].replace("action", "first_action")] = float(np.mean(v))
            elif k == "score_diff":
                out["score_diff_mean"] = float(np.mean(v))
                out["score_abs_diff_mean"] = float(np.mean(np.abs(v)))
            else:
                out[k + "_mean"] = float(np.mean(v))
        return out

    result = {
        "horizon": planner.horizon,
        "beam_width": planner.beam_width,
        "n_expand": planner.n_expand,
        "mode": "deterministic (rank rule)" if planner.deterministic else "sampling",
        "by_context_transitions": {str(n): summarise([per[n]]) for n in sorted(per)},
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
    }
    slid = [
        per[n]
        for n in sorted(per)
        if not _fits_original_window(c, n, planner.horizon, planner.max_context_transitions)
    ]
    if slid:
        result["where_windows_differ"] = summarise(slid)
    return result


def _fits_original_window(config: GPTConfig, n_context: int, horizon: int, keep: int) -> bool:
    """True when the original never crops: the longest input, (n + H)·td − 1 tokens, fits in
    its ``keep·td − 1`` window (then ttlib, whose window is longer, is the same algorithm)."""
    td = config.transition_dim
    return (n_context + horizon) * td - 1 <= min(keep * td - 1, config.block_size)


class OriginalAgent:
    """The original planner as a ``ttlib.evaluate`` agent: TTPlanner's context bookkeeping
    (the same prefixes, the same stored transitions), one ``original_beam_plan`` per episode."""

    def __init__(self, model, disc, planner: PlannerConfig):
        from ttlib.search import TTPlanner

        self.inner = TTPlanner(model, disc, planner)
        self.ref = original_from_ttlib(model)
        self.value_fn = original_value_fn(disc)
        self.planner = planner

    def reset(self, n_episodes, goals=None):
        self.inner.reset(n_episodes, goals)

    def observe(self, rewards, index=None):
        self.inner.observe(rewards, index)

    def act(self, observations, index=None):
        inner, c = self.inner, self.inner.model.config
        N, M = c.observation_dim, c.action_dim
        observations = np.asarray(observations, dtype=np.float64).reshape(-1, N)
        index = inner._index(index, len(observations))
        obs_tokens = inner.discretizer.encode(observations, dims=slice(0, N))
        actions = np.zeros((len(index), M), dtype=np.float32)
        for r, i in enumerate(index):
            prefix = np.concatenate([*inner.context[i], obs_tokens[r]])
            ctx = torch.as_tensor(prefix)[None]
            plan = plan_original(self.ref, self.value_fn, ctx, c, self.planner, inner.generator)
            actions[r] = _first_action(inner.discretizer, plan.tokens, N, M)
            inner._pending[int(i)] = plan.tokens[0].cpu().numpy().copy()
        return actions


def window_episodes(model, disc, planner: PlannerConfig, n_episodes, max_steps, seed) -> dict:
    """Closed-loop HalfCheetah-v5 episodes with ttlib's planner and with the original's, same
    weights, env seeds and planner seed; returns and CPU seconds of both."""
    from ttlib.evaluate import evaluate
    from ttlib.search import TTPlanner

    out = {"episodes": n_episodes, "max_steps": max_steps, "env_seed": seed}
    for name, agent in (
        ("ttlib", TTPlanner(model, disc, planner)),
        ("original", OriginalAgent(model, disc, planner)),
    ):
        c0 = time.process_time()
        res = evaluate(
            agent,
            "halfcheetah",
            n_episodes=n_episodes,
            max_steps=max_steps,
            seed=seed,
            progress=False,
        )
        cpu_s = time.process_time() - c0
        out[name] = {
            "returns": [round(float(x), 2) for x in res.returns],
            "return_mean": float(np.mean(res.returns)),
            "steps": [int(x) for x in res.lengths],
            "cpu_s": round(cpu_s, 1),
            "cpu_s_per_step": cpu_s / max(int(res.lengths.sum()), 1),
        }
        if res.scores is not None:  # D4RL-normalised (1000-step references: low for short runs)
            out[name]["normalised_scores"] = [round(float(x), 2) for x in res.scores]
        print(
            f"window_effect {name}: returns {out[name]['returns']} ({cpu_s:.0f} CPU s)", flush=True
        )
    out["return_diff_ttlib_minus_original"] = (
        out["ttlib"]["return_mean"] - out["original"]["return_mean"]
    )
    return out


def pool_window_runs(runs: dict) -> dict:
    """Returns of all window_effect runs together (runs with the same planner and length)."""
    runs = [v for k, v in sorted(runs.items()) if k.startswith("env_seed_")]
    out = {"runs": len(runs)}
    for name in ("ttlib", "original"):
        rets = [x for r in runs for x in r[name]["returns"]]
        out[name] = {
            "returns": rets,
            "return_mean": float(np.mean(rets)),
            "return_se": float(np.std(rets, ddof=1) / np.sqrt(len(rets)))
            if len(rets) > 1
            else None,
            "steps": [x for r in runs for x in r[name]["steps"]],
            "cpu_s": round(sum(r[name]["cpu_s"] for r in runs), 1),
        }
    diffs = [
        a - b for a, b in zip(out["ttlib"]["returns"], out["original"]["returns"], strict=True)
    ]
    out["paired_return_diff_ttlib_minus_original"] = diffs
    out["paired_return_diff_mean"] = float(np.mean(diffs))
    return out


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
        "--checkpoint",
        type=Path,
        default=None,
        help="a trained ttlib checkpoint: the agreement section then plans from real contexts "
        "of its dataset with its weights (key agreement_trained; the random-weight study is "
        "kept), and window_effect runs episodes with it (window_effect needs it)",
    )
    p.add_argument("--trained-lengths", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--trained-per-length", type=int, default=6, help="contexts per length, H5")
    p.add_argument(
        "--trained-sampling-per-length", type=int, default=3, help="same, sampling mode (H5)"
    )
    p.add_argument("--trained-h15-contexts", type=int, default=3, help="context 5, H15, B32")
    p.add_argument("--window-episodes", type=int, default=2)
    p.add_argument("--window-steps", type=int, default=60)
    p.add_argument("--window-seed", type=int, default=0, help="env seed of the first episode")
    p.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="run only these; the others are kept from an existing output file",
    )
    p.add_argument(
        "--roofline-original",
        choices=("none", "cpu", "all"),
        default="cpu",
        help="roofline section: also run the original planner (1 call) at the cpu settings, "
        "at every setting (the paper setting costs minutes), or not at all",
    )
    p.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    p.add_argument("--out", type=Path, default=None, help="default results/benchmarks/")
    p.add_argument(
        "--roofline-out", type=Path, default=None, help="default results/benchmarks/roofline.json"
    )
    args = p.parse_args(argv)
    folder = ROOT / ("build" if args.quick else "results") / "benchmarks"
    if args.out is None:  # quick runs never overwrite the published numbers
        args.out = folder / ("planning-quick.json" if args.quick else "planning.json")
    if args.roofline_out is None:
        args.roofline_out = folder / ("roofline-quick.json" if args.quick else "roofline.json")
    torch.set_num_threads(args.threads)

    if "roofline" in args.sections:
        run_roofline(args)
        args.sections = [s for s in args.sections if s != "roofline"]
        if not args.sections:
            return

    result = {}
    if set(args.sections) != set(PLANNING_SECTIONS) and args.out.exists():
        result = json.loads(args.out.read_text())
    result["machine"] = machine_info(args.threads)
    result.setdefault("sections_run", {})
    run_names = []  # the sections_run entries this run writes
    for section in args.sections:  # which run (code version, load) produced each section
        if section == "agreement" and args.checkpoint is not None:
            section = "agreement_trained"
        run_names.append(section)
        result["sections_run"][section] = {
            k: result["machine"][k] for k in ("date", "git_sha", "load_average_start", "command")
        }
    peak = None
    if {"speed", "episodes"} & set(args.sections):
        peak = matmul_peak_flops(1024 if args.quick else 4096)
        result["matmul_peak_gflop_s"] = peak / 1e9
        print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s on {args.threads} thread(s)")
        bw = memory_bandwidth((16, 64) if args.quick else (1, 16, 64, 1024))
        result["memory_bandwidth_gb_s"] = bw

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
    trained = None
    if args.checkpoint is not None and {"agreement", "window_effect"} & set(args.sections):
        trained = load_trained(args.checkpoint)
    elif "window_effect" in args.sections:
        p.error("the window_effect section needs --checkpoint")
    new_keys = []
    if "agreement" in args.sections and trained is None:
        result["agreement"] = run_agreement(args)
        result["agreement_model"] = "random weights ~ N(0, 0.1^2) (confident, untrained)"
        new_keys += ["agreement", "agreement_model"]
    elif "agreement" in args.sections:
        result["agreement_trained"] = run_trained_agreement(args, *trained)
        new_keys.append("agreement_trained")
    if "window_effect" in args.sections:
        model, disc, _, info = trained
        planner = PlannerConfig(horizon=5, beam_width=32, seed=args.window_seed)
        if args.quick:
            planner = PlannerConfig(horizon=2, beam_width=4, seed=args.window_seed)
            args.window_episodes, args.window_steps = 1, 2
        r = window_episodes(
            model, disc, planner, args.window_episodes, args.window_steps, args.window_seed
        )
        r["model"] = info
        r["planner"] = {k: v for k, v in vars(planner).items()}
        # One entry per (first env seed): runs with other seeds, e.g. in parallel, add theirs.
        result["window_effect"] = {f"env_seed_{args.window_seed}": r}
        new_keys.append("window_effect")
    result["machine"]["load_average_end"] = list(os.getloadavg())

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if set(args.sections) != set(PLANNING_SECTIONS) and args.out.exists():
        # Re-read just before writing: another run (other sections) may have finished meanwhile.
        latest = json.loads(args.out.read_text())
        runs = {
            **latest.get("sections_run", {}),
            **{k: result["sections_run"][k] for k in run_names},
        }
        keep = {
            "machine",
            "matmul_peak_gflop_s",
            "memory_bandwidth_gb_s",
            "model",
            "configs",
            "episodes_together",
        }
        ours = {
            k: v
            for k, v in result.items()
            if k in new_keys or (k in keep and ({"speed", "episodes"} & set(args.sections)))
        }
        if "window_effect" in ours and isinstance(latest.get("window_effect"), dict):
            runs_we = {
                k: v for k, v in latest["window_effect"].items() if k.startswith("env_seed_")
            }
            ours["window_effect"] = {**runs_we, **ours["window_effect"]}
        result = {**latest, **ours, "sections_run": runs}
    if isinstance(result.get("window_effect"), dict):
        result["window_effect"]["all_seeds"] = pool_window_runs(result["window_effect"])
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


def run_roofline(args) -> None:
    """The roofline section: measured peak and bandwidth, then ttlib's planner (and the
    original's, see --roofline-original) at the three speed settings with FLOPs, estimated
    bytes and CPU time of every kind of pass. Writes ``args.roofline_out`` (whole file)."""
    result = {"machine": machine_info(args.threads)}
    peak = matmul_peak_flops(1024 if args.quick else 4096)
    sizes = (16, 64) if args.quick else (1, 16, 64, 1024)
    bw = memory_bandwidth(sizes)
    largest = bw[str(max(sizes))]
    bandwidth = max(largest["read_gb_s"], largest["copy_gb_s"]) * 1e9
    result["matmul_peak_gflop_s"] = peak / 1e9
    result["memory_bandwidth_gb_s"] = bw
    result["bandwidth_for_roofline_gb_s"] = bandwidth / 1e9
    result["bandwidth_note"] = (
        f"the higher of read (sum) and copy (read + write) GB/s over {max(sizes)} MiB fp32 "
        "arrays, best of 5, one thread; the last-level cache is smaller than that"
    )
    result["bytes_note"] = (
        "estimated from shapes (bench_planning.pass_bytes): weights once per pass, keys and "
        "values read (shared prefix once per episode, a parent's past once per parent after "
        "KVCache.expand, the rest per row) and written, pass "
        "input and output; per-layer activations not counted (activations_not_counted); "
        "reorders: KVCache.select copies (read + write)"
    )
    print(
        f"matmul peak {peak / 1e9:.1f} GFLOP/s; bandwidth "
        + ", ".join(
            f"{k} MiB: read {v['read_gb_s']:.1f} copy {v['copy_gb_s']:.1f}" for k, v in bw.items()
        )
        + " GB/s",
        flush=True,
    )
    model = paper_model(args.seed)
    small = paper_model(args.seed, n_embd=64)
    disc = synthetic_discretizer(model.config)
    paper = PlannerConfig(horizon=15, beam_width=128, n_expand=2)
    cpu = PlannerConfig(horizon=5, beam_width=32, n_expand=2)
    calls = args.ttlib_calls
    if args.quick:
        paper = PlannerConfig(horizon=2, beam_width=8, n_expand=2)
        cpu = PlannerConfig(horizon=2, beam_width=4, n_expand=2)
        calls = 1
    result["configs"] = {}
    for name, m, planner in (
        ("cpu_preset_4x64_H5_B32", small, cpu),
        ("cpu_H5_B32", model, cpu),
        ("paper_H15_B128", model, paper),
    ):
        orig = {"none": 0, "cpu": 0 if name.startswith("paper") else 1, "all": 1}
        n_orig = orig[args.roofline_original]
        ref = original_from_ttlib(m) if n_orig else None
        r = roofline_setting(m, ref, disc, planner, calls, n_orig, peak, bandwidth, args.seed)
        r["model"] = {k: m.config.to_dict()[k] for k in ("n_layer", "n_head", "n_embd")}
        r["planner"] = {k: v for k, v in vars(planner).items() if k != "seed"}
        result["configs"][name] = r
        for impl in ("ttlib", "original"):
            if impl not in r:
                continue
            x = r[impl]
            line = (
                f"{name} {impl}: plan {x['plan']['cpu_s']:.3f} CPU s, {x['plan']['gb']:.2f} GB, "
                f"{x['plan']['flop_per_byte']:.1f} FLOP/B, {x['plan']['achieved_gb_s']:.1f} GB/s"
            )
            if "single_token_passes" in x:
                d = x["single_token_passes"]
                line += (
                    f"; single-token passes {d['share_of_plan_cpu']:.0%} of CPU, {d['gb']:.2f} "
                    f"GB at {d['achieved_gb_s']:.1f} GB/s = {d['fraction_of_bandwidth']:.0%} "
                    f"of bandwidth, {d['fraction_of_roofline_bound']:.0%} of roofline"
                )
            print(line, flush=True)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    args.roofline_out.parent.mkdir(parents=True, exist_ok=True)
    args.roofline_out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.roofline_out}")


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


def run_trained_agreement(args, model, disc, ckpt, info) -> dict:
    """The agreement study on a trained checkpoint and real contexts of its dataset."""
    out = {"model": info}
    per, per_s, n15 = (
        args.trained_per_length,
        args.trained_sampling_per_length,
        args.trained_h15_contexts,
    )
    lengths = args.trained_lengths
    if args.quick:
        per, per_s, n15, lengths = 1, 1, 1, [0, 1]
    cases = [
        (
            "deterministic_H5_B32",
            PlannerConfig(horizon=5, beam_width=32, deterministic=True),
            lengths,
            per,
        ),
        ("sampling_H5_B32", PlannerConfig(horizon=5, beam_width=32), lengths, per_s),
        (
            "deterministic_H15_B32_ctx5",
            PlannerConfig(horizon=15, beam_width=32, deterministic=True),
            [5],
            n15,
        ),
    ]
    if args.quick:
        for _, planner, _, _ in cases:
            planner.horizon, planner.beam_width = 2, 4
    for name, planner, lens, n in cases:
        if n <= 0:
            continue
        contexts = real_contexts(disc, ckpt["data_config"], lens, n, args.seed)
        print(f"agreement_trained {name}: {len(contexts)} contexts", flush=True)
        r = trained_agreement(model, disc, contexts, planner, args.seed)
        out[name] = r
        print(f"agreement_trained {name}: {json.dumps(r.get('where_windows_differ'))}", flush=True)
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
