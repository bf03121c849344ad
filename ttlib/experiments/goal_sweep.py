"""Four-rooms success against planning horizon and training tokens (issue #25).

Does the goal-conditioned planner reach more goals with a longer plan, or with more training?
:func:`success_sweep` plans the page's start/goal pairs with models trained for fewer tokens
(each a full run of its own length, not a snapshot half-way through a longer one) at the
preset's horizon, and with the longest-trained model at longer horizons; every sweep point's
episodes are cached, so a rerun of the page loads them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ttlib.evaluate import mean_se
from ttlib.experiments.cache import cached, planner_identity
from ttlib.experiments.goals import GOAL_DIMS, run_from_cells
from ttlib.experiments.paper import paired_difference
from ttlib.io import save_json
from ttlib.search import PlannerConfig, TTPlanner


def cached_success(
    planner: TTPlanner, model_name: str, env_name: str, pairs, max_steps: int, seed: int
) -> np.ndarray:
    """Success (0/1) per (start, goal) pair of a goal planner, cached by the model, the search
    and the tasks: a rerun of the page loads it."""
    identity = {
        "model": model_name,
        "planner": planner_identity(planner.config),
        "env": env_name,
        "pairs": [[list(map(int, s)), list(map(int, g))] for s, g in pairs],
        "max_steps": int(max_steps),
        "seed": int(seed),
    }

    def fit(path):
        runs = run_from_cells(planner, env_name, pairs, max_steps=max_steps, seed=seed)
        save_json({"success": runs.success.astype(int).tolist()}, path)
        return runs.success

    def load(path):
        return np.asarray(json.loads(path.read_text())["success"], dtype=bool)

    return cached(
        "goal_reaching/episodes", identity, fit, load, suffix=".json", episodes=len(pairs)
    )


def success_sweep(models: dict, horizons: Sequence[int], params: dict, pairs, known=None):
    """Success rate ± s.e. of the goal planner for each trained model (``models``: training
    tokens -> TrainedTT) at the preset's horizon, and of the longest-trained one at every
    ``horizons``. ``known``: {(tokens, horizon): success} already measured on the page."""
    most = max(models)
    wanted = [(t, params["horizon"]) for t in sorted(models)]
    wanted += [(most, h) for h in horizons if (most, h) not in wanted]
    rows, outcomes = [], {}
    for tokens, horizon in wanted:
        success = (known or {}).get((tokens, horizon))
        if success is None:
            tt = models[tokens]
            cfg = PlannerConfig(
                mode="goal", horizon=horizon, beam_width=params["beam_width"], seed=params["seed"]
            )
            planner = TTPlanner(tt.model, tt.discretizer, cfg, goal_dims=GOAL_DIMS)
            success = cached_success(
                planner, tt.folder.name, params["env"], pairs, params["max_episode_steps"],
                params["seed"],
            )  # fmt: skip
        outcomes[tokens, horizon] = np.asarray(success, dtype=float)
        m, se = mean_se(outcomes[tokens, horizon])
        rows.append({"tokens": tokens, "horizon": horizon, "success": m, "se": se})
        rows[-1]["episodes"] = len(success)
    # each point against the page's model (most tokens, the preset's horizon), paired over
    # the same start/goal pairs
    reference = outcomes[most, params["horizon"]]
    for row in rows:
        diff = paired_difference(outcomes[row["tokens"], row["horizon"]], reference)
        row.update(diff_vs_page=diff.mean, diff_se=diff.se, diff_clear=diff.clear)
    return pd.DataFrame(rows)


def plot_sweep(sweep: pd.DataFrame, horizon: int):
    """Success ± s.e. against training tokens (at ``horizon``) and against the planning
    horizon (longest-trained model), side by side."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.8), sharey=True)
    by_tokens = sweep[sweep["horizon"] == horizon].sort_values("tokens")
    by_horizon = sweep[sweep["tokens"] == sweep["tokens"].max()].sort_values("horizon")
    for ax, part, x, label in (
        (axes[0], by_tokens, "tokens", f"training tokens (horizon {horizon})"),
        (axes[1], by_horizon, "horizon", "planning horizon (longest-trained model)"),
    ):
        ax.errorbar(part[x], 100 * part["success"], yerr=100 * part["se"], marker="o", capsize=3)
        ax.set(xscale="log", xlabel=label, ylim=(0, 100))
        ax.set_xticks(
            part[x].to_list(), [f"{v / 1e6:.3g}M" if v >= 1e6 else f"{v:,}" for v in part[x]]
        )
        ax.minorticks_off()
    axes[0].set_ylabel("success (%)")
    fig.tight_layout()
    return fig
