"""Evaluation throughput: CPU cost per evaluated episode when E episodes are planned together.

The real evaluation path: :func:`ttlib.evaluate.evaluate` steps E HalfCheetah-v5 envs
(``ttlib.envs.make_env``, no early termination) and a :class:`ttlib.search.TTPlanner` plans
for all of them in one batch every env step (E × beam_width × n_expand rows). The planner
settings are the cpu preset's ``d4rl`` block, read from ``_config.yml`` and turned into a
search by ``ttlib.experiments.d4rl_table.planner_config`` exactly as the D4RL table does:

* ``hopper/medium-replay``: no per-dataset override, so the preset's own search
  (horizon / beam_width of the block, n_expand, cdf_act, context as ``PlannerConfig``);
* ``halfcheetah/medium-replay``: the paper's cheaper HalfCheetah search, scaled to the preset.

Both run with HalfCheetah's dimensions (17 observation, 6 action tokens) and env, so the two
rows differ only in the search. The model has the block's size (n_layer × n_embd) and random
weights: the cost of a plan does not depend on what the weights are (the plans, and so the
returns, are meaningless). The discretizer is uniform over synthetic ranges (actions in
[-1, 1]).

Timing: process CPU seconds (``time.process_time``), one torch thread; wall seconds alongside.
Episodes are truncated to ``--steps`` env steps. The first ``max_context_transitions`` steps,
while the planner's context is still filling, are left out: the cost per env step is the
steady state of the remaining steps (one step of the loop = one plan for all E episodes, the
E env steps, and storing the transitions), divided by E. A 1000-step episode costs 1000 ×
that. The planning memory estimate (``ttlib.memory``) is reported for every E.

    nice -n 10 env OMP_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/bench_eval.py

Writes ``results/benchmarks/eval_throughput.json`` and ``eval_throughput.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ttlib.discretize import UniformDiscretizer
from ttlib.evaluate import evaluate
from ttlib.experiments.d4rl_table import EVAL_SEED, planner_config
from ttlib.experiments.presets import model_kwargs, preset_params
from ttlib.experiments.runs import hardware
from ttlib.memory import estimate_planning_memory
from ttlib.model import GPTConfig, TrajectoryGPT
from ttlib.search import PlannerConfig, TTPlanner

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "benchmarks"
ENV = "halfcheetah"
OBS_DIM, ACT_DIM = 17, 6  # HalfCheetah-v5
# (env, kind) whose search the D4RL table would use (the two datasets of issue #19's study),
# and the env steps per episode: more for the cheap search, so that its runs last long enough.
SEARCHES = ((("hopper", "medium-replay"), 30), (("halfcheetah", "medium-replay"), 60))
EPISODES = (1, 2, 5, 10, 20)
STUDY_EPISODES, EPISODE_STEPS = 10, 1000  # the cost the study needs per evaluated point
NEAR_BEST = 0.10  # costs this close count as equal (a repeated run drifts about as much)


def machine_info() -> dict:
    cpu = hardware()["cpu"] or "unknown"  # the model name, as the run records give it
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        sha, dirty = "", ""
    return {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "git_sha": sha,
        "git_dirty": bool(dirty),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": loadavg(),
        "timing": "process CPU seconds (time.process_time); wall seconds alongside",
        "command": shlex.join(["python", *sys.argv]),
    }


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return ""


class TimedAgent:
    """Passes every call to a planner and records process and wall time at its edges.

    ``evaluate`` calls ``act`` then ``observe`` once per step of its loop, so the time from
    the end of one ``observe`` to the end of the next is one whole step (plan, env steps,
    bookkeeping) and the ``act`` part of it is the plan.
    """

    def __init__(self, agent: TTPlanner):
        self.agent = agent
        self.model, self.config, self.device = agent.model, agent.config, agent.device
        self.rows_per_step: list[int] = []
        self.act_start: list[tuple[float, float]] = []
        self.act_cpu: list[float] = []
        self.step_end: list[tuple[float, float]] = []  # (cpu, wall) after observe

    @property
    def memory_limit(self):  # evaluate() checks the planner's memory through this
        return self.agent.memory_limit

    def reset(self, n_episodes, goals=None):
        self.agent.reset(n_episodes, goals)

    def act(self, observations, index):
        c0 = time.process_time()
        self.act_start.append((c0, time.perf_counter()))
        self.rows_per_step.append(len(index))
        out = self.agent.act(observations, index)
        self.act_cpu.append(time.process_time() - c0)
        return out

    def observe(self, rewards, index):
        self.agent.observe(rewards, index)
        self.step_end.append((time.process_time(), time.perf_counter()))


def bench_model(params: dict, seed: int = 0) -> tuple[TrajectoryGPT, UniformDiscretizer]:
    """Random-weight model of the block's size with HalfCheetah's dims, and a discretizer."""
    torch.manual_seed(seed)
    kw = {"dropout": 0.0, **model_kwargs(params)}
    model = TrajectoryGPT(GPTConfig(observation_dim=OBS_DIM, action_dim=ACT_DIM, **kw)).eval()
    rng = np.random.default_rng(seed)
    n, td = 4 * model.config.n_bins, model.config.transition_dim
    data = rng.normal(size=(n, td)) * 3.0
    data[:, OBS_DIM : OBS_DIM + ACT_DIM] = rng.uniform(-1, 1, size=(n, ACT_DIM))
    data[:, -1] *= 100.0  # values: discounted sums of rewards
    return model, UniformDiscretizer(model.config.n_bins).fit(data)


def measure(
    model: TrajectoryGPT,
    discretizer,
    planner: PlannerConfig,
    n_episodes: int,
    steps: int,
    warm: int,
) -> dict:
    """One ``evaluate`` of ``n_episodes`` envs for ``steps`` steps; steady-state cost after
    the first ``warm`` steps."""
    agent = TimedAgent(TTPlanner(model, discretizer, planner))
    load0 = loadavg()
    c0, w0 = time.process_time(), time.perf_counter()
    res = evaluate(agent, ENV, n_episodes, max_steps=steps, seed=EVAL_SEED, progress=False)
    total_cpu, total_wall = time.process_time() - c0, time.perf_counter() - w0
    n_loop = len(agent.step_end)
    if n_loop != steps or sum(agent.rows_per_step) != int(res.lengths.sum()):
        raise RuntimeError(
            f"expected {steps} loop steps of {n_episodes} episodes, got {n_loop} steps and "
            f"{sum(agent.rows_per_step)} episode-steps (did an episode end early?)"
        )
    warm = min(warm, steps - 1)
    before = agent.step_end[warm - 1] if warm > 0 else agent.act_start[0]
    end = agent.step_end[-1]
    measured = steps - warm
    env_steps = sum(agent.rows_per_step[warm:])
    cpu, wall = end[0] - before[0], end[1] - before[1]
    plan_cpu = sum(agent.act_cpu[warm:])
    per_step = cpu / env_steps
    rows = n_episodes * planner.beam_width * planner.n_expand
    mem = estimate_planning_memory(model.config, planner, n_episodes)
    return {
        "episodes": n_episodes,
        "episodes_evaluated": int(len(res.lengths)),
        "env_steps_total": int(res.lengths.sum()),
        "steps_per_episode": steps,
        "warmup_steps": warm,
        "measured_loop_steps": measured,
        "measured_env_steps": int(env_steps),
        "rows": rows,
        "cpu_s_measured": cpu,
        "wall_s_measured": wall,
        "cpu_s_per_env_step": per_step,
        "wall_s_per_env_step": wall / env_steps,
        "cpu_s_per_loop_step": cpu / measured,
        "cpu_s_per_row_per_loop_step": cpu / measured / rows,
        "plan_share_of_cpu": plan_cpu / cpu if cpu > 0 else float("nan"),
        "cpu_min_per_1000_step_episode": per_step * EPISODE_STEPS / 60,
        "core_hours_10_episodes_1000_steps": per_step * EPISODE_STEPS * STUDY_EPISODES / 3600,
        "memory_estimate_bytes": mem.total,
        "memory_estimate_mib": mem.total / 2**20,
        "cpu_s_total": total_cpu,
        "wall_s_total": total_wall,
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
    }


def recommend(runs: list[dict], wanted: int = STUDY_EPISODES) -> dict:
    """How many episodes to plan together.

    ``saturates_at``: the fewest episodes whose cost per env step is within NEAR_BEST of the
    lowest measured (more gain nothing). Recommended: the ``wanted`` episodes of one study
    point in one batch if that costs within NEAR_BEST of the lowest, else the cheapest count.
    """
    best = min(r["cpu_s_per_env_step"] for r in runs)
    near = [r for r in runs if r["cpu_s_per_env_step"] <= (1 + NEAR_BEST) * best]
    saturates = min(near, key=lambda r: r["episodes"])
    pick = next((r for r in near if r["episodes"] == wanted), None)
    if pick is None:
        pick = min(runs, key=lambda r: r["cpu_s_per_env_step"])
    one = next((r for r in runs if r["episodes"] == 1), None)
    return {
        "episodes_together": pick["episodes"],
        "saturates_at": saturates["episodes"],
        "rule": (
            f"the study's {wanted} episodes in one batch if within {NEAR_BEST:.0%} of the "
            "lowest CPU s per env step, else the cheapest; saturates_at: the fewest episodes "
            f"within {NEAR_BEST:.0%} of the lowest"
        ),
        "speedup_vs_1": one["cpu_s_per_env_step"] / pick["cpu_s_per_env_step"] if one else None,
        "batches_for_10_episodes": math.ceil(wanted / pick["episodes"]),
        "core_hours_10_episodes_1000_steps": pick["core_hours_10_episodes_1000_steps"],
        "core_hours_10_episodes_1000_steps_one_at_a_time": (
            one["core_hours_10_episodes_1000_steps"] if one else None
        ),
    }


def cost_model(runs: list[dict]) -> dict:
    """Least-squares fit CPU s per loop step = fixed + per_row × rows (rows = E·W·X).

    ``fixed`` is what one plan costs whatever its batch (per-pass dispatch, env steps of
    one episode); batching E episodes divides only that part by E.
    """
    rows = np.array([r["rows"] for r in runs], dtype=float)
    cost = np.array([r["cpu_s_per_loop_step"] for r in runs])
    if len(runs) < 2:
        return {}
    per_row, fixed = np.polyfit(rows, cost, 1)
    one = next((r for r in runs if r["episodes"] == 1), None)
    return {
        "fixed_cpu_s_per_plan": float(fixed),
        "cpu_s_per_row_per_plan": float(per_row),
        "fixed_share_at_1_episode": float(fixed / one["cpu_s_per_loop_step"]) if one else None,
        "largest_speedup_it_allows": float(1 + fixed / (per_row * one["rows"])) if one else None,
    }


def run_benchmark(
    preset: str = "cpu",
    searches=SEARCHES,
    episodes=EPISODES,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Measure every search × episode count; returns the JSON-ready result.

    ``searches``: ((env, kind), env steps per episode) pairs; ``steps`` overrides the latter.
    """
    torch.set_num_threads(1)
    params = preset_params("d4rl", preset)
    model, discretizer = bench_model(params, seed)
    out = {
        "machine": machine_info(),
        "preset": preset,
        "env": ENV,
        "model": {**vars(model.config), "weights": "random (cost does not depend on them)"},
        "settings": [],
    }
    for (env, kind), n_steps in searches:
        n_steps = steps or n_steps
        planner = planner_config(env, kind, params, seed=seed)
        warm = planner.max_context_transitions
        runs = []
        for E in episodes:
            r = measure(model, discretizer, planner, E, n_steps, warm)
            runs.append(r)
            if progress:
                print(
                    f"{env}/{kind} H{planner.horizon} B{planner.beam_width} E={E}: "
                    f"{r['cpu_s_per_env_step']:.3f} CPU s/env-step "
                    f"({r['cpu_s_total']:.0f} CPU s, {r['wall_s_total']:.0f} wall s, "
                    f"load {r['loadavg_after'].split()[0]})",
                    flush=True,
                )
        one = next((r for r in runs if r["episodes"] == 1), None)
        # E = 1 again after the sweep: how much the load drifted while it ran
        repeat = measure(model, discretizer, planner, 1, n_steps, warm)
        for r in runs:
            r["speedup_vs_1"] = (
                one["cpu_s_per_env_step"] / r["cpu_s_per_env_step"] if one else float("nan")
            )
        out["settings"].append(
            {
                "search_of": f"{env}/{kind}",
                "label": f"H{planner.horizon} B{planner.beam_width}",
                "planner": {k: v for k, v in vars(planner).items() if k != "seed"},
                "steps_per_episode": n_steps,
                "cost_model": cost_model(runs),
                "runs": runs,
                "repeat_1_episode_after_sweep": repeat,
                "drift_1_episode": repeat["cpu_s_per_env_step"] / one["cpu_s_per_env_step"]
                if one
                else None,
                "recommendation": recommend(runs),
            }
        )
    out["machine"]["loadavg_end"] = loadavg()
    out["cpu_s_all_runs"] = sum(r["cpu_s_total"] for s in out["settings"] for r in s["runs"])
    return out


CSV_HEADER = (
    "search (datasets)",
    "episodes planned together",
    "CPU s per env step",
    "speed-up vs 1 episode",
    f"core-hours for {STUDY_EPISODES} episodes × {EPISODE_STEPS} steps",
    "planning memory estimate (MiB)",
)


def csv_rows(result: dict) -> list[list[str]]:
    rows = []
    for s in result["settings"]:
        best = s["recommendation"]["episodes_together"]
        for r in s["runs"]:
            mark = " (recommended)" if r["episodes"] == best else ""
            rows.append(
                [
                    f"{s['label']} ({s['search_of']})",
                    f"{r['episodes']}{mark}",
                    f"{r['cpu_s_per_env_step']:.4f}",
                    f"{r['speedup_vs_1']:.2f}",
                    f"{r['core_hours_10_episodes_1000_steps']:.2f}",
                    f"{r['memory_estimate_mib']:.0f}",
                ]
            )
    return rows


def write_outputs(result: dict, out_dir: Path = OUT, stem: str = "eval_throughput") -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "csv": out_dir / f"{stem}.csv"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        w.writerows(csv_rows(result))
    return paths


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="env steps per episode (all searches)")
    ap.add_argument("--episodes", type=int, nargs="+", default=list(EPISODES))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    result = run_benchmark(args.preset, SEARCHES, tuple(args.episodes), args.steps)
    paths = write_outputs(result, args.out)
    for s in result["settings"]:
        print(s["label"], s["search_of"], json.dumps(s["recommendation"]))
    print(f"{result['cpu_s_all_runs']:.0f} CPU s in all; wrote {paths['json']}, {paths['csv']}")


if __name__ == "__main__":
    main()
