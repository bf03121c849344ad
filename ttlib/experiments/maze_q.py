"""TT(+Q): beam search guided by an IQL Q-function on sparse-reward mazes (issue 12).

With a sparse reward (1 only at the goal) the planner's reward sum is zero almost everywhere,
so the plan is ranked by the model's own value token, which must then carry the whole
long-horizon credit assignment. The paper replaces that value by the Q-function of an
implicit Q-learning critic trained on the same data (TT(+Q)), and on AntMaze this lifted TT
above IQL itself. This module holds the method: the data and models of each maze
(cached), the evaluation tasks shared by all four methods (TT, TT(+Q), IQL, BC) and their
cached evaluation; :mod:`ttlib.experiments.maze_q_report` turns those into tables and figures.

Observations are ``[position, the rest of the robot's state, goal]``: the goal is part of
the state, so every method is goal-conditioned the same way and the sparse reward is a
function of the state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from ttlib.baselines import BCConfig, BehaviourCloning, train_bc
from ttlib.data import DataConfig, Episode, data_fingerprint, load_minari
from ttlib.datagen.maze_controller import bfs_distances
from ttlib.envs import ANTMAZE_KINDS, make_env, maze_map
from ttlib.evaluate import evaluate
from ttlib.experiments import maze_q_antmaze as ant
from ttlib.experiments.cache import (
    TrainedTT,
    cached,
    cached_model,
    planner_identity,
    train_config,
    train_tt,
)
from ttlib.experiments.mazes import PathRecorder
from ttlib.experiments.presets import model_kwargs
from ttlib.io import save_json
from ttlib.iql import IQL, IQLConfig, train_iql
from ttlib.search import PlannerConfig, TTPlanner

POINTMAZES = ("pointmaze-medium", "pointmaze-large")
# The D4RL AntMaze datasets: Minari's remote D4RL/antmaze/<name>-v1 (they download on first
# use) or, with antmaze_namespace: ttlib, the local ttlib/antmaze/<name>-v0 of `ttlib make-data
# --env antmaze` (:mod:`ttlib.experiments.maze_q_antmaze`).
ANTMAZE_DATASETS = ANTMAZE_KINDS
ANTMAZE_VERSION = "v1"
METHODS = ("TT", "TT(+Q)", "IQL", "BC")
# Evaluation start and goal cells are at least this fraction of the maze's longest shortest
# path apart (in cells), so every task needs a long walk, as AntMaze's fixed far goal does.
MIN_GOAL_DISTANCE_FRACTION = 0.5


# ------------------------------------------------------------------ which mazes
def antmaze_dataset_id(name: str) -> str:
    """The Minari id of a D4RL AntMaze dataset: ``medium-play`` → ``D4RL/antmaze/medium-play-v1``.

    ``antmaze-medium-play`` (the D4RL env name) is accepted as well.
    """
    return f"D4RL/antmaze/{antmaze_kind(name)}-{ANTMAZE_VERSION}"


def antmaze_kind(name: str) -> str:
    """The dataset kind of a D4RL AntMaze name: ``antmaze-medium-play-v1`` → ``medium-play``."""
    short = name.removeprefix("antmaze-").removesuffix(f"-{ANTMAZE_VERSION}")
    if short not in ANTMAZE_DATASETS:
        raise ValueError(
            f"unknown AntMaze dataset {name!r}; choose from {', '.join(ANTMAZE_DATASETS)}"
        )
    return short


@dataclass
class Maze:
    """One maze of the experiment: its name, dataset and how states are laid out."""

    name: str  # pointmaze-medium / antmaze-large-diverse
    family: str  # pointmaze | antmaze
    dataset_id: str

    @property
    def obs_keys(self) -> list[str]:
        """Position first (dims 0-1), goal last (two dims): the same layout for both robots.

        AntMaze's ``observation`` leaves the torso position out (it is ``achieved_goal``);
        PointMaze's starts with it.
        """
        if self.family == "antmaze":
            return ["achieved_goal", "observation", "desired_goal"]
        return ["observation", "desired_goal"]


def mazes_for(params: dict) -> list[Maze]:
    """The mazes a notebook run covers: the maze_q block's ``mazes`` (PointMaze) or the
    antmaze block's ``antmaze_datasets`` (``antmaze_namespace`` picks local or remote data)."""
    if "antmaze_datasets" in params:
        local = ant.namespace_of(params) == "ttlib"
        make_id = (lambda n: ant.local_id(antmaze_kind(n))) if local else antmaze_dataset_id
        return [Maze(f"antmaze-{n}", "antmaze", make_id(n)) for n in params["antmaze_datasets"]]
    bad = [m for m in params["mazes"] if m not in POINTMAZES]
    if bad:
        raise ValueError(f"mazes {bad} are not PointMazes; choose from {list(POINTMAZES)}")
    return [Maze(m, "pointmaze", f"ttlib/{m}/diverse-v0") for m in params["mazes"]]


def ensure_maze_data(maze: Maze, params: dict) -> str:
    """Generate the local PointMaze or AntMaze dataset, or download D4RL's AntMaze one (needs
    network)."""
    if maze.family == "pointmaze":
        from ttlib.experiments.runs import ensure_dataset

        return ensure_dataset(maze.name, "diverse", params["dataset_transitions"], params["seed"])
    if ant.is_local(maze.dataset_id):
        return ant.ensure_local(maze.dataset_id, params)
    load_minari(maze.dataset_id, download=True)
    return maze.dataset_id


# ------------------------------------------------------------------ configs
def data_config(maze: Maze, params: dict) -> DataConfig:
    """Transitions for TT: no termination penalty, because here an episode ends *at the goal*
    (a success), not by falling over."""
    return DataConfig(
        dataset_id=maze.dataset_id,
        discretizer=params["discretizer"],
        termination_penalty=None,
        obs_keys=maze.obs_keys,
        max_transitions=params["dataset_transitions"] if maze.family == "antmaze" else None,
    )


def iql_config(params: dict) -> IQLConfig:
    """IQL's AntMaze settings: τ = 0.9, β = 10, rewards shifted to r - 1 (0 at the goal, -1
    elsewhere)."""
    return IQLConfig(
        expectile=0.9,
        beta=10.0,
        reward_bias=-1.0,
        steps=params["iql_steps"],
        seed=params["seed"],
        log_every=max(1, params["iql_steps"] // 20),
    )


def planner_config(params: dict, mode: str) -> PlannerConfig:
    return PlannerConfig(
        mode=mode, horizon=params["horizon"], beam_width=params["beam_width"], seed=params["seed"]
    )


# ------------------------------------------------------------------ cached baselines
def iql_cached(data_cfg: DataConfig, cfg: IQLConfig, episodes: list[Episode]) -> IQL:
    """Train the IQL critic (and its policy) once per (data, IQL) config; later calls load it."""
    identity = {"data": data_cfg.to_dict(), "fingerprint": data_fingerprint(episodes)}
    identity["iql"] = cfg.to_dict()

    def fit(path):
        model, log = train_iql(episodes, cfg, progress=False)
        save_json(log, path.with_suffix(".log.json"))
        model.save(path)
        return model

    name = data_cfg.dataset_id.replace("/", "_")
    return cached("iql", identity, fit, IQL.load, name=name, suffix=".pt", steps=cfg.steps)


def bc_cached(data_cfg: DataConfig, cfg: BCConfig, episodes: list[Episode]) -> BehaviourCloning:
    identity = {"data": data_cfg.to_dict(), "fingerprint": data_fingerprint(episodes)}
    identity["bc"] = {**cfg.__dict__}

    train = partial(train_bc, episodes, cfg, progress=False)
    return cached_model("bc", data_cfg, identity, train, BehaviourCloning.load, cfg.steps)


def q_heuristic(iql: IQL, discount: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """IQL's Q on the planner's reward scale.

    The critic learns from r - 1; with a reward of 1 at the goal and 0 elsewhere (what TT
    predicts) the same returns are Q_r = 1 + (1 - γ)·Q_{r-1}. The map is increasing, so it
    ranks plans alike, and it keeps the planner's score Σ γ^i r_i + γ^t Q in one unit.
    """
    scale = 1.0 - discount
    shift = -iql.config.reward_bias * 1.0  # 1 for r - 1

    def q(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return shift + scale * iql.q_value(s, a)

    return q


def evaluation_tasks(
    layout: Sequence[Sequence[int]],
    n: int,
    seed: int = 0,
    min_fraction: float = MIN_GOAL_DISTANCE_FRACTION,
) -> list[dict]:
    """``n`` (start cell, goal cell) pairs as PointMaze reset options, the same for every method.

    Pairs are drawn uniformly among those whose shortest path is at least ``min_fraction`` of
    the maze's longest one (without repeats while there are enough).
    """
    cells = [tuple(int(v) for v in c) for c in np.argwhere(np.asarray(layout) == 0)]
    pairs, lengths = [], []
    for a in cells:
        dist = bfs_distances(layout, a)
        for b in cells:
            if b != a and dist[b] > 0:
                pairs.append((a, b))
                lengths.append(int(dist[b]))
    if not pairs:
        raise ValueError("the maze has fewer than two connected free cells")
    lengths = np.array(lengths)
    eligible = np.flatnonzero(lengths >= np.ceil(min_fraction * lengths.max()))
    rng = np.random.default_rng(seed)
    pick = rng.choice(eligible, size=n, replace=len(eligible) < n)
    return [{"reset_cell": np.array(pairs[k][0]), "goal_cell": np.array(pairs[k][1])} for k in pick]


# ------------------------------------------------------------------ evaluation
def make_maze_env(maze: Maze, max_steps: int) -> Callable:
    """A factory for :func:`ttlib.evaluate.evaluate`: PointMaze from ttlib; AntMaze D4RL's task
    (its fixed start and goal), built by ttlib for local data, else the remote Minari
    dataset's evaluation env."""
    if maze.family == "pointmaze":
        return lambda **kw: make_env(maze.name, max_episode_steps=max_steps, **kw)
    if ant.is_local(maze.dataset_id):
        return ant.eval_factory(maze.dataset_id, max_steps)
    dataset = load_minari(maze.dataset_id, download=True)
    return lambda **kw: dataset.recover_environment(eval_env=True, **kw)


def maze_layout(maze: Maze) -> tuple[list[list[int]], float]:
    """(layout with 1 = wall, cell size in world units) of a maze."""
    if maze.family == "pointmaze":
        return maze_map(maze.name), 1.0
    if ant.is_local(maze.dataset_id):
        return ant.layout(maze.dataset_id)
    env = make_maze_env(maze, 1)()
    m = env.unwrapped.maze
    layout = [[1 if c == 1 else 0 for c in row] for row in m.maze_map]
    return layout, float(m.maze_size_scaling)


def evaluate_cached(
    maze: Maze,
    method: str,
    agent_fn: Callable[[], object],
    params: dict,
    key: dict,
) -> dict:
    """Success and path of every evaluation episode of one (maze, method), cached on disk.

    ``key`` holds what produced the agent (its models' configs and data, its planner), so a
    changed knob or regenerated data evaluates anew while a resumed run reuses finished ones.
    """
    n, max_steps, seed = params["episodes"], params["max_episode_steps"], params["seed"]
    identity = {"maze": maze.dataset_id, "method": method, "episodes": n}
    identity |= {"max_steps": max_steps, "seed": seed, **key}
    if maze.family == "antmaze" and ant.is_local(maze.dataset_id):  # a key of its own
        identity |= ant.eval_identity(maze.dataset_id, max_steps)

    def fit(path):
        options = None
        if maze.family == "pointmaze":
            options = evaluation_tasks(maze_map(maze.name), n, seed)
        factory, recorders = PathRecorder.around(make_maze_env(maze, max_steps))
        result = evaluate(
            agent_fn(),
            factory,
            n_episodes=n,
            max_steps=max_steps,
            seed=seed,
            obs_keys=maze.obs_keys,
            reset_options=options,
            progress=False,
        )
        success = result.success if result.success is not None else np.zeros(n, dtype=bool)
        out = {
            "maze": maze.name,
            "method": method,
            "success": [bool(s) for s in success],
            "lengths": [int(v) for v in result.lengths],
            # the x, y the agent acted from at every step (the last position is not acted on)
            "paths": [
                [[round(float(x), 4), round(float(y), 4)] for x, y in r.positions[:-1]]
                for r in recorders
            ],
            "goals": np.round(np.stack([r.goal for r in recorders])[:, :2], 4).tolist(),
            "tasks": None
            if options is None
            else [{k: [int(x) for x in v] for k, v in o.items()} for o in options],
        }
        save_json(out, path)
        return out

    def read(path):
        return json.loads(path.read_text())

    name = f"eval-{maze.name}-{method}"
    # episodes=n: the commit, start and seconds of the code that computed them are kept beside
    # the entry and listed in run.json (the entry's name and key are unchanged)
    return cached("maze_q", identity, fit, read, name=name, suffix=".json", episodes=n)


@dataclass
class MazeModels:
    """Everything trained on one maze's data."""

    maze: Maze
    data_cfg: DataConfig
    tt: TrainedTT
    iql: IQL
    bc: BehaviourCloning

    @property
    def episodes(self) -> list[Episode]:
        return self.tt.dataset.episodes


def train_maze(maze: Maze, params: dict) -> MazeModels:
    """TT, the IQL critic/policy and BC on one maze's data (each cached, so reruns load)."""
    ensure_maze_data(maze, params)
    data_cfg = data_config(maze, params)
    tt = train_tt(data_cfg, train_config(params, 500), model_kwargs(params))
    episodes = tt.dataset.episodes
    iql = iql_cached(data_cfg, iql_config(params), episodes)
    bc_cfg = BCConfig(steps=params["bc_steps"], seed=params["seed"])
    bc = bc_cached(data_cfg, bc_cfg, episodes)
    return MazeModels(maze, data_cfg, tt, iql, bc)


def agents(models: MazeModels, params: dict) -> dict[str, tuple[Callable[[], object], dict]]:
    """Per method, (a maker of its agent, what made it: the cache key of its episodes)."""
    m = models
    data = {"data": m.data_cfg.to_dict(), "fingerprint": data_fingerprint(m.episodes)}
    train = train_config(params, 500).to_dict()
    tt = {**data, "model": m.tt.model.config.to_dict(), "train": train}
    critic = {"iql": iql_config(params).to_dict()}
    reward, q = planner_config(params, "reward"), planner_config(params, "q")
    q_function = q_heuristic(m.iql, m.data_cfg.discount)
    return {
        "TT": (
            lambda: TTPlanner(m.tt.model, m.tt.discretizer, reward),
            {**tt, "planner": planner_identity(reward)},
        ),
        "TT(+Q)": (
            lambda: TTPlanner(m.tt.model, m.tt.discretizer, q, q_function=q_function),
            {**tt, **critic, "planner": planner_identity(q)},
        ),
        "IQL": (lambda: m.iql, {**data, **critic}),
        "BC": (lambda: m.bc, {**data, "bc": m.bc.config.__dict__}),
    }


def evaluate_maze(models: MazeModels, params: dict, methods: Sequence[str] = METHODS) -> list:
    """Evaluate ``methods`` on the maze's evaluation tasks; one dict per method."""
    made = agents(models, params)
    unknown = [x for x in methods if x not in made]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    with torch.inference_mode():
        return [evaluate_cached(models.maze, x, made[x][0], params, made[x][1]) for x in methods]
