"""AntMaze datasets the D4RL way: the ant controller steered through the maze by BFS waypoints.

Facts from D4RL (github.com/Farama-Foundation/D4RL, commit 0ae0c1b) that we follow:

* scripts/generation/generate_ant_maze_datasets.py: 1M samples per dataset; ``--noisy`` adds
  N(0, 0.2^2) noise to the (stochastic) policy's action, then clips to [-1, 1]; episodes are
  cut by a timeout at ``max_episode_steps`` = 1000 (the default, used for every maze) and not
  ended at the goal: the ant stays in the continuing task until the timeout.
* d4rl/locomotion/maze_env.py: the navigator runs BFS over the maze cells from the ant's cell
  to the goal cell and steers the goal-reaching policy to the centre of the next cell (the
  goal itself once in the goal cell). Maps: U_MAZE, BIG_MAZE (medium) and HARDEST_MAZE (large)
  with the reset cell ``r`` at (1, 1); the generation maps mark goal cells ``g`` (BIG_MAZE:
  (2, 6), (5, 1), (6, 5)), and ``goal_sampler`` draws from those when there are any, else from
  every free cell. The evaluation maps (``*_TEST``) have one goal: umaze (3, 1), medium (6, 6),
  large (7, 9).
* d4rl/locomotion/__init__.py: dataset files are named
  ``noisy_multistart_<bool>_multigoal_<bool>``: umaze = neither (start (1, 1), goal (3, 1));
  umaze-diverse and the ``-diverse`` sets = both; the ``-play`` sets = multistart only. The
  eval envs' time limits are 700 (umaze) and 1000 steps.
* d4rl/locomotion/ant.py: sparse reward 1 within 0.5 of the goal (``make_env`` recomputes it;
  gymnasium-robotics uses 0.45).

So here: ``umaze`` drives from (1, 1) to (3, 1); ``*-diverse`` from a random free cell to a
random free cell; ``*-play`` ("hand-picked" starts and goals, D4RL paper) from one of
PLAY_CELLS to another of them, PLAY_CELLS being the generation map's ``r`` and ``g`` cells
(our reading: D4RL's script draws play starts from every free cell). Unlike D4RL we add no
random offset to the waypoints. Observations are the env's dict (``observation``,
``achieved_goal``, ``desired_goal``) like Minari's ``D4RL/antmaze/*-v1``, whose eval env
(with D4RL's fixed start and goal, ``recover_environment(eval_env=True)``) is stored as well.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ttlib.datagen.ant_controller import (
    CONTROLLER_DIR,
    goal_obs,
    load_controller,
    milestone_path,
    read_curve,
)
from ttlib.datagen.maze_controller import bfs_distances, cell_to_xy, xy_to_cell
from ttlib.envs import (
    ANTMAZE_KINDS,
    ANTMAZE_MAX_EPISODE_STEPS,
    antmaze_layout,
    make_antmaze,
)

SCALING = 4.0  # AntMaze's maze_size_scaling: a cell is 4 m wide
START = (1, 1)  # D4RL's reset cell ``r`` in every map
UMAZE_GOAL = (3, 1)
EVAL_GOALS = {"umaze": (3, 1), "medium": (6, 6), "large": (7, 9)}  # the *_TEST maps' ``g``
PLAY_CELLS = {  # r and g cells of D4RL's generation maps
    "medium": [(1, 1), (2, 6), (5, 1), (6, 5)],
    "large": [(1, 1), (1, 6), (3, 5), (3, 10), (5, 2), (7, 4), (7, 6), (7, 9)],
}


def split_kind(kind: str) -> tuple[str, str]:
    """(maze, goal sampling) of a dataset kind: ``medium-play`` -> ("medium", "play")."""
    if kind not in ANTMAZE_KINDS:
        raise ValueError(
            f"Unknown AntMaze dataset kind {kind!r}; valid kinds are {', '.join(ANTMAZE_KINDS)}."
        )
    maze, _, sampling = kind.partition("-")
    return maze, sampling or "fixed"


def episode_cells(kind: str, rng: np.random.Generator) -> tuple[tuple, tuple]:
    """(start cell, goal cell) of one episode of a dataset kind (module docstring)."""
    maze, sampling = split_kind(kind)
    if sampling == "fixed":
        return START, UMAZE_GOAL
    cells = (
        PLAY_CELLS[maze] if sampling == "play" else np.argwhere(np.array(antmaze_layout(maze)) == 0)
    )
    start, goal = rng.choice(len(cells), size=2, replace=False)
    return tuple(int(v) for v in cells[start]), tuple(int(v) for v in cells[goal])


class Navigator:
    """The next waypoint on a shortest cell path to the goal (D4RL's BFS navigator).

    Distances from the goal cell are computed once per goal; the waypoint is the centre of the
    neighbouring cell one step closer, or the goal itself in the goal cell. Two adjacent free
    cells form a convex rectangle, so heading straight for the next centre crosses no wall.
    """

    def __init__(self, layout, scaling: float = SCALING):
        self.layout, self.scaling = layout, scaling
        self.dist: np.ndarray | None = None

    def set_goal(self, goal_cell) -> None:
        dist = bfs_distances(self.layout, tuple(goal_cell))
        self.dist = np.where(dist < 0, np.iinfo(np.int32).max, dist)  # walls: never closer

    def next_cell(self, cell) -> tuple[int, int]:
        r, c = (int(v) for v in cell)
        if self.dist[r, c] == 0:
            return r, c
        return min(((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)), key=lambda n: self.dist[n])

    def waypoint(self, xy: np.ndarray, goal: np.ndarray) -> np.ndarray:
        cell = xy_to_cell(self.layout, xy, self.scaling)
        if self.dist[tuple(cell)] == 0:
            return np.asarray(goal, dtype=np.float64)
        return cell_to_xy(self.layout, self.next_cell(cell), self.scaling)


def navigation_policy(controller, navigator: Navigator, rng, target_max: float, noise: float):
    """``act(obs)``: the controller towards the navigator's waypoint, its stochastic action
    plus N(0, noise^2) and clipped to [-1, 1] (D4RL's noisy data collection)."""

    def act(obs: dict) -> np.ndarray:
        target = navigator.waypoint(obs["achieved_goal"], obs["desired_goal"])
        action = controller(goal_obs(obs, target, target_max), deterministic=False)
        action = action + noise * rng.standard_normal(action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return act


def eval_env(maze: str, **kw):
    """D4RL's evaluation task: start (1, 1), the ``*_TEST`` map's goal, its time limit
    (``kw`` to :func:`ttlib.envs.make_antmaze`, e.g. a shorter ``max_episode_steps``)."""
    layout = [[c if c == 1 else 0 for c in row] for row in antmaze_layout(maze)]
    layout[START[0]][START[1]] = "r"
    goal = EVAL_GOALS[maze]
    layout[goal[0]][goal[1]] = "g"
    kw.setdefault("max_episode_steps", ANTMAZE_MAX_EPISODE_STEPS[maze])
    return make_antmaze(maze, layout=layout, **kw)


def antmaze_episodes(kind: str, cfg) -> tuple[list, float]:
    """Episodes of one dataset (``cfg``: :class:`ttlib.datagen.datasets_gen.GenConfig`) and
    the fraction of them that reached their goal."""
    from ttlib.datagen.datasets_gen import collect

    maze, _ = split_kind(kind)
    path = milestone_path(Path(cfg.policy_dir) / CONTROLLER_DIR)
    controller = load_controller(path)
    target_max = read_curve(path.parent).get("config", {}).get("target_max", 6.0)
    seed = cfg.seed * 1_000_000 + ANTMAZE_KINDS.index(kind) * 100_000
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # SB3 samples the stochastic actions with torch's generator
    layout = antmaze_layout(maze)
    navigator = Navigator(layout)
    env = make_antmaze(maze, layout=layout, max_episode_steps=cfg.antmaze_episode_steps)

    def options(_ep_seed: int) -> dict:
        start, goal = episode_cells(kind, rng)
        navigator.set_goal(goal)
        return {"reset_cell": np.array(start), "goal_cell": np.array(goal)}

    act = navigation_policy(controller, navigator, rng, target_max, cfg.antmaze_action_noise)
    label = f"antmaze/{kind}" if cfg.progress else None
    episodes = collect(env, act, cfg.transitions, seed, options, label)
    success = float(np.mean([ep.rewards.max() > 0 for ep in episodes]))
    return episodes, success


def make_antmaze_dataset(did: str, kind: str, cfg):
    """Generate one AntMaze dataset into Minari's data dir (called by ``make_dataset``)."""
    import minari

    with torch.random.fork_rng():
        episodes, success = antmaze_episodes(kind, cfg)
    maze, _ = split_kind(kind)
    env = make_antmaze(maze, max_episode_steps=cfg.antmaze_episode_steps)
    with warnings.catch_warnings():  # minari warns about every metadata field we leave empty
        warnings.simplefilter("ignore", UserWarning)
        return minari.create_dataset_from_buffers(
            dataset_id=did,
            buffer=[replace(ep, id=i) for i, ep in enumerate(episodes)],
            env=env.env.spec,  # the gym.make'd env; the reward wrapper is not registered
            eval_env=eval_env(maze).env.spec,
            algorithm_name="SB3 ant controller + BFS waypoint navigator, N(0, 0.2^2) noise",
            author="ttlib",
            author_email="ttlib@users.noreply.github.com",
            code_permalink="ttlib/datagen/antmaze_gen.py",
            description=f"D4RL-style antmaze-{kind} data generated by `ttlib make-data` "
            f"(seed {cfg.seed}); the controller reached its goal in {100 * success:.1f}% of "
            "the episodes. See ttlib/datagen/antmaze_gen.py.",
            ref_min_score=0.0,
            ref_max_score=1.0,
        )
