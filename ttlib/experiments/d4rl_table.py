"""The D4RL locomotion table (the paper's Table 1): TT with both discretizers, BC and IQL.

For every (env, dataset) cell the Trajectory Transformer is trained twice (uniform and quantile
bins) and the two baselines once, all on the same episodes, and every agent is rolled out in
the simulator; scores are D4RL-normalised ×100, reported as mean ± standard error over all
episodes (pooled over training seeds, as the original pools 5 models × 3 rollouts).

Everything expensive goes through :func:`ttlib.experiments.cache.cached`: trained models
(``cache/models``, shared with the other notebooks), baselines (``cache/d4rl/baselines``) and
*single evaluation episodes* (``cache/d4rl/episodes``). A killed run therefore loses at most
one episode, and the table can be filled over several sessions without the notebook
(:mod:`ttlib.experiments.d4rl_fill`), and on all cores or a cluster with Ray
(``params["ray"]``: :mod:`ttlib.experiments.ray_tasks`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from ttlib.baselines import BCConfig, BehaviourCloning, train_bc
from ttlib.data import DataConfig, Episode, data_fingerprint, load_episodes
from ttlib.evaluate import mean_se
from ttlib.experiments.cache import (
    TrainedTT,
    cached,
    planner_identity,
    train_config,
    train_tt,
)
from ttlib.experiments.d4rl_data import DatasetUnavailable, dataset_config
from ttlib.experiments.episodes import episode_scores, tt_agent
from ttlib.experiments.presets import model_kwargs
from ttlib.iql import IQL, IQLConfig, train_iql
from ttlib.search import PlannerConfig

log = logging.getLogger("ttlib.d4rl")

KINDS = ("medium-expert", "medium", "medium-replay")
DISCRETIZERS = ("uniform", "quantile")
BASELINES = ("BC", "IQL")
METHODS = ("TT (uniform)", "TT (quantile)", *BASELINES)
ENV_LABELS = {"halfcheetah": "HalfCheetah", "hopper": "Hopper", "walker2d": "Walker2d"}
KIND_LABELS = {
    "medium-expert": "Medium-Expert",
    "medium": "Medium",
    "medium-replay": "Medium-Replay",
}
EVAL_SEED = 10_000_000  # evaluation reset seeds start here, far from the data-collection seeds


def tt_method(discretizer: str) -> str:
    return f"TT ({discretizer})"


def tt_discretizer(method: str) -> str:
    """The discretizer of a TT method: ``"TT (uniform)"`` -> ``"uniform"``."""
    return method[len("TT (") : -1]


# ------------------------------------------------------------------ planning
# The original's offline-RL planner (config/offline.py): defaults and per-dataset overrides.
BASE_PLANNING = {"horizon": 15, "beam_width": 128, "cdf_act": 0.6, "k_act": None}
PLANNING_OVERRIDES: dict[tuple[str, str], dict] = {
    ("halfcheetah", "medium"): {"horizon": 5, "beam_width": 32},
    ("halfcheetah", "medium-replay"): {"horizon": 5, "beam_width": 32},
    ("halfcheetah", "medium-expert"): {"beam_width": 32},
    ("walker2d", "medium-expert"): {"horizon": 5},
    ("walker2d", "medium-replay"): {"horizon": 20, "beam_width": 32, "k_act": 40, "cdf_act": None},
}


def planner_config(env: str, kind: str, params: dict, seed: int = 0) -> PlannerConfig:
    """The paper's planner for this dataset, scaled to the preset.

    The preset's ``horizon`` / ``beam_width`` stand for the paper's defaults (15 / 128); a
    dataset's override is scaled by the same ratio, rounded up (so the paper preset gives the
    original's settings exactly, and e.g. HalfCheetah keeps its cheaper search at CPU scale).
    """
    paper = {**BASE_PLANNING, **PLANNING_OVERRIDES.get((env, kind), {})}

    def scaled(name: str) -> int:
        ratio = params[name] / BASE_PLANNING[name]
        return max(1, math.ceil(paper[name] * ratio - 1e-9))

    return PlannerConfig(
        mode="reward",
        horizon=scaled("horizon"),
        beam_width=scaled("beam_width"),
        cdf_act=paper["cdf_act"],
        k_act=paper["k_act"],
        seed=seed,
    )


# ------------------------------------------------------------------ training (cached)
# ------------------------------------------------------------------ the table
@dataclass
class TableRun:
    episodes: pd.DataFrame  # one row per evaluation episode
    histories: pd.DataFrame  # training losses of every TT model, long format
    skipped: list[str]  # rows the namespace cannot provide, with the reason


def history_frame(history: Sequence[dict], **labels) -> pd.DataFrame:
    """A train history as long rows: tokens, token kind (state/action/reward/value), loss."""
    rows = [
        {**labels, "step": rec["step"], "tokens": rec["tokens"], "token": kind, "loss": float(v)}
        for rec in history
        for kind in ("state", "action", "reward", "value")
        if (v := rec.get(f"loss_{kind}")) is not None and np.isfinite(v)
    ]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ baselines (cached)
@dataclass
class BaselineSpec:
    method: str  # BC | IQL
    steps: int
    seed: int


def iql_reward_scale(episodes: Sequence[Episode]) -> float:
    """IQL's locomotion reward scaling: 1000 / (best - worst episode return) of the data."""
    returns = np.array([float(ep.rewards.sum()) for ep in episodes])
    spread = float(returns.max() - returns.min())
    return 1000.0 / spread if spread > 0 else 1.0


def baseline_cached(
    spec: BaselineSpec, data_cfg: DataConfig, episodes: Sequence[Episode], progress: bool = False
):
    """A BC or IQL policy trained on ``episodes`` once per config and data; later calls load it."""
    if spec.method == "BC":
        cfg, cls = BCConfig(steps=spec.steps, seed=spec.seed), BehaviourCloning
    elif spec.method == "IQL":
        scale = iql_reward_scale(episodes)
        cfg, cls = IQLConfig(steps=spec.steps, seed=spec.seed, reward_scale=scale), IQL
    else:
        raise ValueError(f"unknown baseline {spec.method!r}; choose one of {BASELINES}")
    identity = {
        "dataset_id": data_cfg.dataset_id,
        "max_transitions": data_cfg.max_transitions,
        "data": data_fingerprint(episodes),
        spec.method: asdict(cfg),
    }

    def fit(path):
        log.info("train %s on %s (%d steps)", spec.method, data_cfg.dataset_id, spec.steps)
        if spec.method == "BC":
            model = train_bc(list(episodes), cfg, progress=progress)
        else:
            model, _ = train_iql(list(episodes), cfg, progress=progress)
        model.save(path)
        return model

    name = f"{data_cfg.dataset_id.replace('/', '_')}-{spec.method}"
    return cached(
        "d4rl/baselines", identity, fit, cls.load, name=name, suffix=".pt", steps=spec.steps
    )


# ------------------------------------------------------------------ evaluation (cached)
def evaluate_tt(
    trained: TrainedTT,
    env: str,
    kind: str,
    params: dict,
    first_seed: int,
    n_episodes: int | None = None,
) -> list[dict]:
    """Planner-in-the-loop episodes of a trained model."""
    planner = planner_config(env, kind, params)
    key = {
        "model": trained.folder.name,
        "step": int(params["train_steps"]),
        "planner": planner_identity(replace(planner, seed=0)),
        "env": env,
        "max_steps": int(params["max_episode_steps"]),
    }
    return episode_scores(
        key,
        tt_agent(trained.model, trained.discretizer, planner),
        env,
        int(params["episodes"] if n_episodes is None else n_episodes),
        int(params["max_episode_steps"]),
        first_seed,
    )


def evaluate_policy(
    policy, name: str, env: str, params: dict, first_seed: int, policy_key: dict
) -> list[dict]:
    max_steps = int(params["max_episode_steps"])
    key = {"policy": name, **policy_key, "env": env, "max_steps": max_steps}
    return episode_scores(
        key, lambda seeds: policy, env, int(params["episodes"]), max_steps, first_seed
    )


def evaluate_baseline(
    policy, spec: BaselineSpec, data_cfg: DataConfig, data, env: str, params: dict, first_seed: int
) -> list[dict]:
    """Episodes of a baseline trained on ``data``, keyed by its spec and the data."""
    policy_key = {**asdict(spec), "dataset_id": data_cfg.dataset_id}
    policy_key["data"] = data_fingerprint(data)
    return evaluate_policy(policy, spec.method, env, params, first_seed, policy_key)


def train_table_tt(env: str, kind: str, disc: str, params: dict, seed: int, progress=False):
    """The table's TT model of one dataset and discretizer, loaded on the CPU where planning
    runs."""
    data_cfg = replace(dataset_config(env, kind, params), discretizer=disc)
    cfg = train_config(params, 250, seed)
    return train_tt(data_cfg, cfg, model_kwargs(params), progress=progress, device="cpu")


def run_table(
    params: dict,
    progress: bool = False,
    methods: Sequence[str] | None = None,
    evaluate_agents: bool = True,
) -> TableRun:
    """Train (or load) and evaluate every method on every (env, kind) of ``params``.

    With ``evaluate_agents=False`` only the models are trained (and cached): training does
    not depend on the planner, so it can run ahead of the planning episodes.
    """
    methods = list(methods or [*(tt_method(d) for d in params["discretizers"]), *BASELINES])
    if params.get("ray"):  # every unit of work as a Ray task first: the loop below loads it
        from ttlib.experiments.ray_tasks import fill_table

        fill_table(params, methods, evaluate_agents)
    episodes, histories, skipped = [], [], []
    for s in range(int(params["seeds"])):
        seed = int(params["seed"]) + s
        first_seed = EVAL_SEED + 1000 * s
        for env in params["envs"]:
            for kind in params["kinds"]:
                try:
                    base_cfg = dataset_config(env, kind, params)
                except DatasetUnavailable as err:
                    if s == 0:
                        skipped.append(f"{env} {kind}: {err}")
                    continue
                labels = {"env": env, "kind": kind, "dataset_id": base_cfg.dataset_id}
                labels["train_seed"] = seed
                data = load_episodes(base_cfg)
                for method in methods:
                    if method.startswith("TT"):
                        disc = tt_discretizer(method)
                        trained = train_table_tt(env, kind, disc, params, seed, progress)
                        histories.append(history_frame(trained.history, **labels, method=method))
                        if not evaluate_agents:
                            continue
                        rows = evaluate_tt(trained, env, kind, params, first_seed)
                    else:
                        spec = BaselineSpec(method, int(params["baseline_steps"]), seed)
                        policy = baseline_cached(spec, base_cfg, data, progress)
                        if not evaluate_agents:
                            continue
                        rows = evaluate_baseline(
                            policy, spec, base_cfg, data, env, params, first_seed
                        )
                    episodes += [
                        {**labels, "method": method, "episode": i, **r} for i, r in enumerate(rows)
                    ]
    hist = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return TableRun(pd.DataFrame(episodes), hist, skipped)


def summarise(episodes: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sample standard error (ddof = 1, all episodes of all seeds) per env, kind and
    method."""
    rows = []
    for (env, kind, method), g in episodes.groupby(["env", "kind", "method"], sort=False):
        m, se = mean_se(g["score"].to_numpy())
        rows.append(
            {
                "env": env,
                "kind": kind,
                "method": method,
                "score": m,
                "se": se,
                "episodes": len(g),
                "seeds": g["train_seed"].nunique(),
            }
        )
    return pd.DataFrame(rows)
