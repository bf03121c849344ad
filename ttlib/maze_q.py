"""TT(+Q): beam search guided by an IQL Q-function on sparse-reward mazes (issue 12).

With a sparse reward (1 only at the goal) the planner's reward sum is zero almost everywhere,
so the plan is ranked by the model's own value token, which must then carry the whole
long-horizon credit assignment. The paper replaces that value by the Q-function of an
implicit Q-learning critic trained on the same data (TT(+Q)), and on AntMaze this lifted TT
above IQL itself. This module holds what the ``maze_q`` notebook needs: the data and models
of each maze (cached), the evaluation tasks shared by all four methods (TT, TT(+Q), IQL, BC),
their success rates, the critic's value map, the paths the planners took, and the paper's
AntMaze table.

Observations are ``[position, the rest of the robot's state, goal]``: the goal is part of
the state, so every method is goal-conditioned the same way and the sparse reward is a
function of the state.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ttlib.baselines import BCConfig, BehaviourCloning, train_bc
from ttlib.config import cache_dir, config_key, model_kwargs, train_kwargs
from ttlib.data import DataConfig, Episode, load_minari
from ttlib.envs import make_env, maze_map
from ttlib.evaluate import evaluate, mean_se
from ttlib.io import save_json
from ttlib.iql import IQL, IQLConfig, train_iql
from ttlib.search import PlannerConfig, TTPlanner
from ttlib.train import TrainConfig

with contextlib.redirect_stderr(io.StringIO()):
    # gymnasium-robotics prints a notice about its Adroit envs (not used here) on import;
    # importing it once, quietly, keeps that line out of the notebook's outputs.
    import gymnasium_robotics  # noqa: F401

FAMILIES = ("pointmaze", "antmaze")
POINTMAZES = ("pointmaze-medium", "pointmaze-large")
# The D4RL AntMaze datasets as Minari publishes them (remote: they download on first use).
ANTMAZE_DATASETS = (
    "umaze",
    "umaze-diverse",
    "medium-play",
    "medium-diverse",
    "large-play",
    "large-diverse",
)
ANTMAZE_VERSION = "v1"
METHODS = ("TT", "TT(+Q)", "IQL", "BC")
# Evaluation start and goal cells are at least this fraction of the maze's longest shortest
# path apart (in cells), so every task needs a long walk, as AntMaze's fixed far goal does.
MIN_GOAL_DISTANCE_FRACTION = 0.5

PAPER_SOURCE = "paper Table (AntMaze v0), via a secondary source; baselines from the IQL paper"


# ------------------------------------------------------------------ which mazes
def antmaze_dataset_id(name: str) -> str:
    """The Minari id of a D4RL AntMaze dataset: ``medium-play`` → ``D4RL/antmaze/medium-play-v1``.

    ``antmaze-medium-play`` (the D4RL env name) is accepted as well.
    """
    short = name.removeprefix("antmaze-").removesuffix(f"-{ANTMAZE_VERSION}")
    if short not in ANTMAZE_DATASETS:
        raise ValueError(
            f"unknown AntMaze dataset {name!r}; choose from {', '.join(ANTMAZE_DATASETS)}"
        )
    return f"D4RL/antmaze/{short}-{ANTMAZE_VERSION}"


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
    """The mazes a notebook run covers: ``mazes`` for PointMaze, ``antmaze_datasets`` for
    AntMaze (selected by ``env_family``)."""
    family = params["env_family"]
    if family == "pointmaze":
        bad = [m for m in params["mazes"] if m not in POINTMAZES]
        if bad:
            raise ValueError(f"mazes {bad} are not PointMazes; choose from {list(POINTMAZES)}")
        return [Maze(m, family, f"ttlib/{m}/diverse-v0") for m in params["mazes"]]
    if family == "antmaze":
        return [
            Maze(f"antmaze-{n}", family, antmaze_dataset_id(n)) for n in params["antmaze_datasets"]
        ]
    raise ValueError(f"unknown env_family {family!r}; choose one of {FAMILIES}")


def ensure_maze_data(maze: Maze, params: dict) -> str:
    """Generate the local PointMaze dataset, or download the AntMaze one (needs network)."""
    if maze.family == "pointmaze":
        from ttlib.experiment import ensure_dataset

        return ensure_dataset(maze.name, "diverse", params["dataset_transitions"], params["seed"])
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


def train_config(params: dict) -> TrainConfig:
    steps = params["train_steps"]
    return TrainConfig(
        max_steps=steps,
        batch_size=params["batch_size"],
        seed=params["seed"],
        checkpoint_every=max(1, min(500, steps)),
        log_every=max(1, min(50, steps // 4)),
        **train_kwargs(params),
    )


def model_overrides(params: dict) -> dict:
    return model_kwargs(params)


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
    key = config_key({"data": data_cfg.to_dict(), "iql": cfg.to_dict()})
    path = cache_dir("iql") / f"{data_cfg.dataset_id.replace('/', '_')}-{key}.pt"
    if path.exists():
        return IQL.load(path)
    model, log = train_iql(episodes, cfg, progress=False)
    save_json(log, path.with_suffix(".log.json"))
    model.save(path)
    return model


def bc_cached(data_cfg: DataConfig, cfg: BCConfig, episodes: list[Episode]) -> BehaviourCloning:
    key = config_key({"data": data_cfg.to_dict(), "bc": {**cfg.__dict__}})
    path = cache_dir("bc") / f"{data_cfg.dataset_id.replace('/', '_')}-{key}.pt"
    if path.exists():
        return BehaviourCloning.load(path)
    model = train_bc(episodes, cfg, progress=False)
    model.save(path)
    return model


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


# ------------------------------------------------------------------ maze geometry
def free_cells(layout: Sequence[Sequence[int]]) -> np.ndarray:
    """(n, 2) row/column of every free cell (0 in the layout)."""
    return np.argwhere(np.asarray(layout) == 0)


def bfs_distances(layout: Sequence[Sequence[int]], start: tuple[int, int]) -> np.ndarray:
    """Shortest-path length in cells from ``start`` to every cell (-1: wall or unreachable)."""
    free = np.asarray(layout) == 0
    dist = np.full(free.shape, -1, dtype=np.int64)
    dist[start] = 0
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            inside = 0 <= nr < free.shape[0] and 0 <= nc < free.shape[1]
            if inside and free[nr, nc] and dist[nr, nc] < 0:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist


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
    cells = [tuple(int(v) for v in c) for c in free_cells(layout)]
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


def maze_extent(layout: Sequence[Sequence[int]], scaling: float = 1.0) -> tuple:
    """(left, right, bottom, top) of the maze in world units, as gymnasium-robotics centres it."""
    rows, cols = np.shape(layout)
    return (-cols * scaling / 2, cols * scaling / 2, -rows * scaling / 2, rows * scaling / 2)


def cell_centre(layout: Sequence[Sequence[int]], cell, scaling: float = 1.0) -> np.ndarray:
    """World (x, y) of a cell's centre (row 0 is the top of the maze)."""
    left, _, _, top = maze_extent(layout, scaling)
    r, c = cell
    return np.array([left + (c + 0.5) * scaling, top - (r + 0.5) * scaling])


# ------------------------------------------------------------------ value map
@dataclass
class ValueMap:
    values: np.ndarray  # (rows·k, cols·k) V at sub-cell points; NaN inside walls
    extent: tuple  # (left, right, bottom, top) for imshow(origin="upper")
    goal: np.ndarray  # (2,) the goal the values are for


def value_map(
    iql: IQL,
    layout: Sequence[Sequence[int]],
    goal_xy: np.ndarray,
    template: np.ndarray,
    per_cell: int = 4,
    scaling: float = 1.0,
) -> ValueMap:
    """V(x, y, goal) on a grid of ``per_cell``² points in every free cell.

    ``template`` is a full state ([x, y, rest, goal]); the map varies its position and writes
    ``goal_xy`` into its last two dims (PointMaze: zero velocity; AntMaze: a typical pose).
    """
    grid = np.asarray(layout)
    rows, cols = grid.shape
    left, _, _, top = maze_extent(layout, scaling)
    offsets = (np.arange(per_cell) + 0.5) / per_cell
    ys = top - (np.arange(rows)[:, None] + offsets[None, :]).ravel() * scaling
    xs = left + (np.arange(cols)[:, None] + offsets[None, :]).ravel() * scaling
    free = np.kron(grid == 0, np.ones((per_cell, per_cell), dtype=bool))
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    states = np.repeat(np.asarray(template, dtype=np.float32)[None], free.sum(), axis=0)
    states[:, 0], states[:, 1] = xx[free], yy[free]
    states[:, -2:] = np.asarray(goal_xy, dtype=np.float32)
    values = np.full(free.shape, np.nan)
    values[free] = iql.value(torch.from_numpy(states)).numpy()
    return ValueMap(values, maze_extent(layout, scaling), np.asarray(goal_xy, dtype=np.float64))


def value_by_distance(vm: ValueMap, layout, scaling: float = 1.0) -> pd.DataFrame:
    """Mean V over the cells that are d steps (shortest path, in cells) from the goal's cell.

    A heuristic that can guide a search from far away keeps rising all the way to the goal;
    a critic whose goal signal has not propagated is flat beyond a few cells.
    """
    grid = np.asarray(layout)
    rows, cols = grid.shape
    k = vm.values.shape[0] // rows
    left, _, _, top = maze_extent(layout, scaling)
    goal_cell = (int((top - vm.goal[1]) // scaling), int((vm.goal[0] - left) // scaling))
    dist = bfs_distances(layout, goal_cell)
    blocks = vm.values.reshape(rows, k, cols, k).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    free = dist >= 0
    df = pd.DataFrame({"cells to goal": dist[free], "V": blocks[free].mean(-1)})
    return df.groupby("cells to goal", as_index=False)["V"].mean()


def describe_values(by_distance: pd.DataFrame, near: int = 5) -> str:
    """One sentence per maze on how far the critic's goal signal reaches.

    Compares the mean rise of V per cell over the ``near`` cells next to the goal with the
    rise per cell further out, and counts the steps outwards where V goes *up* (a heuristic
    that would pull the search away from the goal).
    """
    lines = []
    for maze, g in by_distance.groupby("maze", sort=False):
        v = g.sort_values("cells to goal")["V"].to_numpy()
        drops = -np.diff(v)  # fall of V per cell moving away from the goal
        inner, outer = drops[:near], drops[near:]
        text = (
            f"{maze}: V spans {v.min():.1f} to {v.max():.1f} over {len(v) - 1} cells; it falls "
            f"{inner.mean():.2f} per cell over the {len(inner)} cells next to the goal"
        )
        if len(outer):
            wrong = int((outer < 0).sum())
            text += (
                f" and {outer.mean():.2f} per cell beyond them, where {wrong} of {len(outer)}"
                " steps away from the goal *raise* V."
            )
        else:
            text += "."
        lines.append(text)
    return "\n".join(lines)


def describe_paths(runs: dict[str, dict], n_paths: int) -> str:
    """How many of the first ``n_paths`` tasks each planner solved (the ones drawn)."""
    parts = [
        f"{method}: {int(np.sum(ev['success'][:n_paths]))} of {min(n_paths, len(ev['success']))}"
        for method, ev in runs.items()
    ]
    return "Goals reached on the tasks drawn: " + "; ".join(parts) + "."


# ------------------------------------------------------------------ evaluation
class PathRecorder:
    """Wraps an evaluation agent and keeps every episode's (x, y) before each action."""

    def __init__(self, agent):
        from ttlib.evaluate import as_agent

        self.agent = as_agent(agent)
        self.paths: list[list[list[float]]] = []
        self.goals: list[list[float]] | None = None

    def reset(self, n_episodes: int, goals: np.ndarray | None = None) -> None:
        self.paths = [[] for _ in range(n_episodes)]
        if goals is not None:
            self.goals = np.round(np.asarray(goals, dtype=float)[:, :2], 4).tolist()
        self.agent.reset(n_episodes, goals=goals)

    def act(self, observations: np.ndarray, index: np.ndarray) -> np.ndarray:
        for row, i in zip(observations, index, strict=True):
            self.paths[int(i)].append([round(float(row[0]), 4), round(float(row[1]), 4)])
        return self.agent.act(observations, index)

    def observe(self, rewards: np.ndarray, index: np.ndarray) -> None:
        self.agent.observe(rewards, index)


def make_maze_env(maze: Maze, max_steps: int) -> Callable:
    """A factory for :func:`ttlib.evaluate.evaluate`: PointMaze from ttlib, AntMaze as the
    Minari dataset's evaluation env (its fixed D4RL goal)."""
    if maze.family == "pointmaze":
        return lambda **kw: make_env(maze.name, max_episode_steps=max_steps, **kw)
    dataset = load_minari(maze.dataset_id, download=True)
    return lambda **kw: dataset.recover_environment(eval_env=True, **kw)


def maze_layout(maze: Maze) -> tuple[list[list[int]], float]:
    """(layout with 1 = wall, cell size in world units) of a maze."""
    if maze.family == "pointmaze":
        return maze_map(maze.name), 1.0
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

    ``key`` holds what produced the agent (configs of its models and planner), so a changed
    knob evaluates anew while a resumed run reuses finished evaluations.
    """
    n, max_steps, seed = params["episodes"], params["max_episode_steps"], params["seed"]
    full_key = {
        "maze": maze.dataset_id,
        "method": method,
        "episodes": n,
        "max_steps": max_steps,
        "seed": seed,
        **key,
    }
    path = cache_dir("maze_q") / f"eval-{maze.name}-{method}-{config_key(full_key)}.json"
    if path.exists():
        return json.loads(path.read_text())
    options = None
    if maze.family == "pointmaze":
        options = evaluation_tasks(maze_map(maze.name), n, seed)
    recorder = PathRecorder(agent_fn())
    result = evaluate(
        recorder,
        make_maze_env(maze, max_steps),
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
        "paths": recorder.paths,
        "goals": recorder.goals,
        "tasks": None
        if options is None
        else [{k: [int(x) for x in v] for k, v in o.items()} for o in options],
    }
    save_json(out, path)
    return out


@dataclass
class MazeModels:
    """Everything trained on one maze's data."""

    maze: Maze
    data_cfg: DataConfig
    tt: object  # TrajectoryGPT
    discretizer: object
    iql: IQL
    bc: BehaviourCloning
    episodes: list[Episode]
    tt_history: list[dict]


def train_maze(maze: Maze, params: dict) -> MazeModels:
    """TT, the IQL critic/policy and BC on one maze's data (each cached, so reruns load)."""
    from ttlib.experiment import train_cached

    ensure_maze_data(maze, params)
    data_cfg = data_config(maze, params)
    tt, dataset, history = train_cached(
        data_cfg, train_config(params), progress=False, **model_overrides(params)
    )
    episodes = dataset.episodes
    iql = iql_cached(data_cfg, iql_config(params), episodes)
    bc_cfg = BCConfig(steps=params["bc_steps"], seed=params["seed"])
    bc = bc_cached(data_cfg, bc_cfg, episodes)
    return MazeModels(maze, data_cfg, tt, dataset.discretizer, iql, bc, episodes, history)


def evaluate_maze(models: MazeModels, params: dict, methods: Sequence[str] = METHODS) -> list:
    """Evaluate ``methods`` on the maze's evaluation tasks; one dict per method."""
    m = models
    discount = m.data_cfg.discount
    base = {
        "data": m.data_cfg.to_dict(),
        "model": m.tt.config.to_dict(),
        "train": train_config(params).to_dict(),
    }
    critic = {"iql": iql_config(params).to_dict()}
    agents = {
        "TT": (
            lambda: TTPlanner(m.tt, m.discretizer, planner_config(params, "reward")),
            {**base, "planner": planner_config(params, "reward").__dict__},
        ),
        "TT(+Q)": (
            lambda: TTPlanner(
                m.tt,
                m.discretizer,
                planner_config(params, "q"),
                q_function=q_heuristic(m.iql, discount),
            ),
            {**base, **critic, "planner": planner_config(params, "q").__dict__},
        ),
        "IQL": (lambda: m.iql, {"data": m.data_cfg.to_dict(), **critic}),
        "BC": (lambda: m.bc, {"data": m.data_cfg.to_dict(), "bc": m.bc.config.__dict__}),
    }
    unknown = [x for x in methods if x not in agents]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    with torch.inference_mode():
        return [evaluate_cached(m.maze, x, agents[x][0], params, agents[x][1]) for x in methods]


def episode_table(evaluations: list[dict]) -> pd.DataFrame:
    """One row per evaluation episode: maze, method, episode, success (0/1), steps."""
    rows = [
        {"maze": ev["maze"], "method": ev["method"], "episode": i, "success": int(s), "steps": n}
        for ev in evaluations
        for i, (s, n) in enumerate(zip(ev["success"], ev["lengths"], strict=True))
    ]
    return pd.DataFrame(rows, columns=["maze", "method", "episode", "success", "steps"])


def success_table(episodes: pd.DataFrame) -> pd.DataFrame:
    """Success rate ×100, mean ± standard error over episodes, per maze and method."""
    rows = []
    for (maze, method), g in episodes.groupby(["maze", "method"], sort=False):
        mean, se = mean_se(g["success"].to_numpy(dtype=float))
        rows.append(
            {
                "maze": maze,
                "method": method,
                "success": 100 * mean,
                "se": 100 * se,
                "episodes": len(g),
            }
        )
    return pd.DataFrame(rows, columns=["maze", "method", "success", "se", "episodes"])


def wide_table(successes: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """Mazes as rows, methods as columns, cells "mean ± s.e." (the paper's layout)."""
    cells = successes.assign(
        cell=[
            f"{m:.{digits}f} ± {s:.{digits}f}"
            for m, s in zip(successes["success"], successes["se"], strict=True)
        ]
    )
    table = cells.pivot(index="maze", columns="method", values="cell")
    order = [m for m in METHODS if m in table.columns]
    return table[order].reindex(list(dict.fromkeys(successes["maze"])))


# ------------------------------------------------------------------ the paper's numbers
def paper_antmaze_table() -> pd.DataFrame:
    """Success rates (×100) on D4RL AntMaze v0 as the paper reports them.

    Taken from a secondary source (a study note of the paper), not checked against the PDF;
    BC, CQL, IQL and DT are the IQL paper's numbers. ``TT(+Q) se`` is the paper's standard
    error. The paper's printed CQL average is 44.9, while its five rows average 43.9.
    """
    rows = [
        ("umaze", 54.6, 74.0, 87.5, 59.2, 100.0, 0.0),
        ("medium-play", 0.0, 61.2, 71.2, 0.0, 93.3, 6.4),
        ("medium-diverse", 0.0, 53.7, 70.0, 0.0, 100.0, 0.0),
        ("large-play", 0.0, 15.8, 39.6, 0.0, 66.7, 12.2),
        ("large-diverse", 0.0, 14.9, 47.5, 0.0, 60.0, 12.7),
    ]
    df = pd.DataFrame(rows, columns=["dataset", "BC", "CQL", "IQL", "DT", "TT(+Q)", "TT(+Q) se"])
    df["source"] = PAPER_SOURCE
    return df


PAPER_PRINTED_AVERAGES = {"BC": 10.9, "CQL": 44.9, "IQL": 63.2, "DT": 11.8, "TT(+Q)": 84.0}


# ------------------------------------------------------------------ figures
def _draw_walls(ax, layout, scaling: float = 1.0) -> None:
    walls = np.where(np.asarray(layout) == 1, 1.0, np.nan)
    ax.imshow(
        walls,
        extent=maze_extent(layout, scaling),
        origin="upper",
        cmap="Greys",
        vmin=0,
        vmax=1.3,
        interpolation="nearest",
    )
    ax.set(xticks=[], yticks=[], aspect="equal")
    ax.grid(False)


def plot_paths(
    layout, runs: dict[str, dict], n_paths: int = 6, scaling: float = 1.0, title: str = ""
):
    """One panel per method: the first ``n_paths`` evaluation paths over the maze's walls,
    start (circle) and goal (star) of each; solid = reached the goal, dashed = did not."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 4.0), squeeze=False)
    colours = sns.color_palette("deep", n_paths)
    for ax, (method, ev) in zip(axes[0], runs.items(), strict=True):
        _draw_walls(ax, layout, scaling)
        for k in range(min(n_paths, len(ev["paths"]))):
            xy = np.asarray(ev["paths"][k])
            ls = "-" if ev["success"][k] else "--"
            ax.plot(xy[:, 0], xy[:, 1], ls=ls, lw=1.6, color=colours[k])
            ax.plot(*xy[0], "o", color=colours[k], ms=6)
            if ev.get("goals"):
                ax.plot(*ev["goals"][k], "*", color=colours[k], ms=14, mec="black", mew=0.6)
        rate = 100 * np.mean(ev["success"][:n_paths])
        ax.set_title(f"{method} ({rate:.0f}% of these reach the goal)", fontsize="medium")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_value_maps(maps: dict[str, tuple[list, ValueMap]], scaling: float = 1.0):
    """IQL's V(x, y, goal) as a heat map per maze (walls grey, goal a star)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(4.8 * len(maps), 4.0), squeeze=False)
    for ax, (name, (layout, vm)) in zip(axes[0], maps.items(), strict=True):
        im = ax.imshow(
            vm.values, extent=vm.extent, origin="upper", cmap="viridis", interpolation="nearest"
        )
        _draw_walls(ax, layout, scaling)
        ax.plot(*vm.goal, "*", color="red", ms=16, mec="white", mew=0.8)
        ax.set_title(name, fontsize="medium")
        fig.colorbar(im, ax=ax, shrink=0.8, label="V(x, y, goal)")
    fig.tight_layout()
    return fig


def plot_success(successes: pd.DataFrame):
    """Success rate ×100 with ± s.e. bars, one group per maze."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    mazes = list(dict.fromkeys(successes["maze"]))
    methods = [m for m in METHODS if m in set(successes["method"])]
    fig, ax = plt.subplots(figsize=(1.8 + 2.2 * len(mazes), 3.4))
    width = 0.8 / len(methods)
    colours = sns.color_palette("deep", len(methods))
    for j, method in enumerate(methods):
        part = successes[successes["method"] == method].set_index("maze").reindex(mazes)
        x = np.arange(len(mazes)) + (j - (len(methods) - 1) / 2) * width
        ax.bar(
            x, part["success"], width, yerr=part["se"], color=colours[j], label=method, capsize=3
        )
    ax.set(
        xticks=np.arange(len(mazes)), xticklabels=mazes, ylabel="success rate (×100)", ylim=(0, 105)
    )
    ax.legend(frameon=False, ncol=len(methods), loc="upper center", bbox_to_anchor=(0.5, 1.15))
    fig.tight_layout()
    return fig


def template_state(episodes: list[Episode], family: str) -> np.ndarray:
    """A state for the value map: PointMaze at rest; AntMaze in the data's mean pose."""
    mean = np.concatenate([ep.observations for ep in episodes]).mean(0)
    if family == "pointmaze":
        mean[2:4] = 0.0
    return mean


def glue_name(maze: str, method: str) -> str:
    """``pointmaze-large``, ``TT(+Q)`` → ``pointmaze_large_tt_q`` (names for myst_nb.glue)."""
    text = f"{maze}_{method}".lower().replace("(+q)", "_q")
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_")


def q_gain(successes: pd.DataFrame) -> pd.DataFrame:
    """Per maze: TT(+Q) minus TT success (×100), its standard error (the two s.e. combined
    as independent), and the difference in units of that error."""
    rows = []
    for maze, g in successes.groupby("maze", sort=False):
        by = g.set_index("method")
        if not {"TT", "TT(+Q)"} <= set(by.index):
            continue
        diff = by.loc["TT(+Q)", "success"] - by.loc["TT", "success"]
        se = float(np.hypot(by.loc["TT(+Q)", "se"], by.loc["TT", "se"]))
        rows.append({"maze": maze, "gain": diff, "se": se, "z": diff / se if se > 0 else np.nan})
    return pd.DataFrame(rows, columns=["maze", "gain", "se", "z"])


def describe_gain(gains: pd.DataFrame) -> str:
    """One sentence per maze on whether the Q heuristic helped (|z| >= 2 counts as clear)."""
    lines = []
    for r in gains.itertuples():
        if np.isnan(r.z) or abs(r.z) < 2:
            verdict = "no clear difference"
        else:
            verdict = "TT(+Q) is better" if r.gain > 0 else "TT(+Q) is worse"
        lines.append(
            f"{r.maze}: TT(+Q) - TT = {r.gain:+.1f} ± {r.se:.1f} success points ({verdict})."
        )
    return "\n".join(lines)
