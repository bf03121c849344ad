"""Four-rooms goal reaching: rooms, start/goal pairs, shortest paths, and recorded rollouts.

The paper's four-rooms figure sends the goal-conditioned planner from a start to a goal in
another room. This module picks such pairs (one room per connected area between doorways),
measures how long the path the agent took was against the BFS shortest path between the two
cells, and runs any :class:`ttlib.evaluate.Agent` from given cells with ``reset_options``
while recording where the point went (:func:`ttlib.experiments.mazes.plot_paths` draws it).

Cells are (row, col) of the maze layout (1 = wall); positions are PointMaze's xy, with
cells of size 1 and (0, 0) at the centre of the layout.

Two diagnostics sit beside the planner: a goal-conditioned BC on the same data and the same
hindsight goals (the baseline a reader expects), and :func:`goal_following`, which asks whether
a policy's action changes with the goal it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ttlib.baselines import BCConfig, BehaviourCloning, train_bc
from ttlib.data import DataConfig, Episode
from ttlib.datagen.datasets_gen import GenConfig as ControllerConfig
from ttlib.datagen.maze_controller import WaypointController, bfs_distances, xy_to_cell
from ttlib.envs import make_env, maze_map
from ttlib.evaluate import EvalResult, evaluate, mean_se
from ttlib.experiments.cache import train_config
from ttlib.experiments.mazes import PathRecorder
from ttlib.experiments.presets import model_kwargs
from ttlib.search import PlannerConfig, beam_search
from ttlib.train import TrainConfig

Cell = tuple[int, int]


GOAL_DIMS = [0, 1]  # the point's x and y: the first two entries of PointMaze's observation
ActFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (states, goals) -> actions


def goal_configs(
    dataset_id: str, params: dict, **data_knobs
) -> tuple[DataConfig, TrainConfig, dict]:
    """Data, training and model settings of the goal-conditioned model, from notebook params
    (``data_knobs`` override DataConfig fields, e.g. ``n_transitions`` or ``n_bins``).

    Hindsight goals: every training window is paired with the xy position (``GOAL_DIMS``) of a
    later state of its own episode, so any reached position is a goal the data shows how to
    get to.
    """
    data_cfg = DataConfig(
        dataset_id=dataset_id,
        discretizer=params["discretizer"],
        goal_dims=list(GOAL_DIMS),
        **data_knobs,
    )
    return data_cfg, train_config(params, 250), model_kwargs(params)


# ------------------------------------------------------------------ cells and rooms
def doorways(layout: Sequence[Sequence[int]]) -> list[Cell]:
    """Free cells walled in on both sides along one axis: the gaps that join two rooms."""
    free = np.pad(np.asarray(layout, dtype=int) == 0, 1)  # outside the layout counts as wall
    left_right = ~free[1:-1, :-2] & ~free[1:-1, 2:]
    up_down = ~free[:-2, 1:-1] & ~free[2:, 1:-1]
    return [(int(r), int(c)) for r, c in np.argwhere(free[1:-1, 1:-1] & (left_right | up_down))]


def room_ids(layout: Sequence[Sequence[int]]) -> np.ndarray:
    """Room index of every cell (rows, cols): connected free areas once the doorways are
    closed, numbered in reading order; -1 for walls and doorways."""
    closed = np.array(layout, dtype=int)
    for cell in doorways(layout):
        closed[cell] = 1
    rooms = np.full(closed.shape, -1, dtype=int)
    for r, c in np.argwhere(closed == 0):
        if rooms[r, c] < 0:
            rooms[bfs_distances(closed, (int(r), int(c))) >= 0] = rooms.max() + 1
    return rooms


def sample_pairs(layout: Sequence[Sequence[int]], n: int, seed: int = 0) -> list[tuple[Cell, Cell]]:
    """``n`` (start, goal) cell pairs, each start and goal inside rooms that differ.

    Doorway cells are never used. The same seed gives the same pairs.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rooms = room_ids(layout)
    if rooms.max() < 1:
        raise ValueError("the layout has fewer than two rooms: no pair can cross rooms")
    cells = np.argwhere(rooms >= 0)
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n:
        i, j = rng.choice(len(cells), size=2, replace=False)
        start, goal = tuple(map(int, cells[i])), tuple(map(int, cells[j]))
        if rooms[start] != rooms[goal]:
            pairs.append((start, goal))
    return pairs


# ------------------------------------------------------------------ path lengths
def shortest_path_length(layout: Sequence[Sequence[int]], start: Cell, goal: Cell) -> int:
    """Number of cell-to-cell moves on a shortest path from ``start`` to ``goal``."""
    d = int(bfs_distances(layout, start)[goal])
    if d < 0:
        raise ValueError(f"no path between {start} and {goal}")
    return d


def cell_path_length(cells: np.ndarray) -> int:
    """Moves along a sequence of cells (T, 2): each change of cell counts its Manhattan
    distance, so a diagonal step past a corner counts as the two moves it stands for."""
    cells = np.asarray(cells, dtype=int).reshape(-1, 2)
    return int(np.abs(np.diff(cells, axis=0)).sum())


# ------------------------------------------------------------------ rollouts
@dataclass
class GoalRollouts:
    """Episodes from given (start, goal) cells: the evaluation and the path of each."""

    env_name: str
    pairs: list[tuple[Cell, Cell]]
    result: EvalResult
    paths: list[np.ndarray]  # (T_i + 1, 2) xy positions, reset included
    goals: np.ndarray  # (E, 2) goal positions the agent was given

    @property
    def success(self) -> np.ndarray:
        if self.result.success is None:
            return np.zeros(len(self.pairs), dtype=bool)
        return self.result.success

    def table(self):
        """One row per episode: cells, success, steps, moves taken, shortest moves, ratio.

        Moves count from the start cell to the goal cell; an episode that stops within the
        success radius but just outside the goal cell is charged the last move(s) to it.
        Ratios exist for successful episodes only.
        """
        import pandas as pd

        layout = maze_map(self.env_name)
        rows = []
        for (start, goal), path, ok, steps in zip(
            self.pairs, self.paths, self.success, self.result.lengths, strict=True
        ):
            cells = xy_to_cell(layout, path)
            if ok and tuple(cells[-1]) != goal:
                cells = np.vstack([cells, goal])
            shortest = shortest_path_length(layout, start, goal)
            moves = cell_path_length(cells) if ok else np.nan
            rows.append(
                {
                    "start": f"{start[0]},{start[1]}",
                    "goal": f"{goal[0]},{goal[1]}",
                    "success": bool(ok),
                    "steps": int(steps),
                    "moves": moves,
                    "shortest": shortest,
                    "ratio": moves / shortest if ok else np.nan,
                }
            )
        return pd.DataFrame(rows)


def run_from_cells(
    agent,
    env_name: str,
    pairs: Sequence[tuple[Cell, Cell]],
    max_steps: int | None = None,
    seed: int = 0,
    video_episodes: int = 0,
    frame_every: int = 1,
    progress: bool = False,
) -> GoalRollouts:
    """Run ``agent`` once per (start, goal) pair, all episodes batched, recording paths.

    Each episode resets with ``reset_cell`` / ``goal_cell`` options (PointMaze adds its
    ±0.25 position noise to both); the agent is given the goal positions through
    ``reset(n, goals)``.
    """
    factory, recorders = PathRecorder.around(lambda **kw: make_env(env_name, **kw))
    options = [{"reset_cell": np.array(s), "goal_cell": np.array(g)} for s, g in pairs]
    result = evaluate(
        agent,
        factory,
        n_episodes=len(pairs),
        max_steps=max_steps,
        seed=seed,
        reset_options=options,
        video_episodes=video_episodes,
        frame_every=frame_every,
        progress=progress,
    )
    paths = [np.stack(r.positions) for r in recorders]
    goals = np.stack([r.goal for r in recorders])
    return GoalRollouts(env_name, list(pairs), result, paths, goals)


class ControllerAgent:
    """The data's noisy waypoint controller (:mod:`ttlib.datagen.maze_controller`) as an Agent:
    the behaviour policy, to set the planner's success and path lengths against."""

    def __init__(self, env_name: str, seed: int = 0, **controller_knobs):
        self.env_name = env_name
        self.env = make_env(env_name)
        self.cfg = ControllerConfig(**controller_knobs)
        self.rng = np.random.default_rng(seed)
        self.maze = self.env.unwrapped.maze
        self.controllers: list = []
        self.goals: np.ndarray | None = None

    def reset(self, n_episodes: int, goals: np.ndarray | None = None) -> None:
        if goals is None:
            raise ValueError("the waypoint controller needs the goals: reset(n, goals=...)")
        self.goals = np.asarray(goals, dtype=np.float64).reshape(n_episodes, 2)
        self.controllers = []
        for g in self.goals:
            c = WaypointController(self.env, self.env_name, self.cfg, self.rng)
            c.set_goal(tuple(int(v) for v in self.maze.cell_xy_to_rowcol(g)))
            self.controllers.append(c)

    def act(self, observations: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                self.controllers[i]({"observation": o, "desired_goal": self.goals[i]})
                for o, i in zip(np.asarray(observations), index, strict=True)
            ]
        )

    def observe(self, rewards: np.ndarray, index: np.ndarray) -> None:
        pass


def success_summary(rollouts: GoalRollouts) -> dict:
    """Success rate (± s.e.) and path-length ratio of the successful episodes (mean ± s.e.,
    median), as plain floats."""
    t = rollouts.table()
    s_mean, s_se = mean_se(t["success"].to_numpy(float))
    ratios = t["ratio"].dropna().to_numpy(float)
    r_mean, r_se = mean_se(ratios)
    return {
        "episodes": len(t),
        "success": s_mean,
        "success_se": s_se,
        "ratio_mean": r_mean,
        "ratio_se": r_se,
        "ratio_median": float(np.median(ratios)) if len(ratios) else float("nan"),
    }


# ------------------------------------------------------------------ goal-conditioned BC
GOAL_BC_STEPS = 3000  # batch 256: ~10 CPU s on the 100k four-rooms data


def hindsight_goal_episodes(
    episodes: Sequence[Episode], copies: int = 4, seed: int = 0
) -> list[Episode]:
    """The episodes with a hindsight goal appended to every observation: [s_t, xy of s_k],
    k uniform in t..T-1, ``copies`` draws per step. These are the goals TT trains on
    (``DataConfig.goal_sampling="future"``), so BC and TT learn from the same pairs."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    rng = np.random.default_rng(seed)
    out = []
    for ep in episodes:
        t = np.arange(len(ep))
        for _ in range(copies):
            k = t + (rng.random(len(ep)) * (len(ep) - t)).astype(int)
            goal = ep.observations[k][:, GOAL_DIMS]
            obs = np.concatenate([ep.observations, goal], axis=1)
            out.append(Episode(obs, ep.actions, ep.rewards, ep.terminated))
    return out


def train_goal_bc(
    episodes: Sequence[Episode], steps: int = GOAL_BC_STEPS, seed: int = 0, copies: int = 8
) -> BehaviourCloning:
    """Goal-conditioned BC: an MLP regressing the mean action from [s, goal xy] (MSE), on
    ``copies`` hindsight goals per step."""
    cfg = BCConfig(steps=steps, seed=seed, lr=1e-3)
    return train_bc(hindsight_goal_episodes(episodes, copies, seed), cfg, progress=False)


class GoalPolicyAgent:
    """A goal-conditioned policy ``policy(states (n, N), goals (n, G)) -> actions`` as an Agent:
    each episode's goal xy, given at ``reset``, goes with its observations."""

    needs = "a goal-conditioned policy"  # who asks for the goals, in the error message

    def __init__(self, policy: ActFn):
        self.policy = policy
        self.goals: np.ndarray | None = None

    def reset(self, n_episodes: int, goals: np.ndarray | None = None) -> None:
        if goals is None:
            raise ValueError(f"{self.needs} needs the goals: reset(n, goals=...)")
        self.goals = np.asarray(goals, dtype=np.float64).reshape(n_episodes, -1)

    def act(self, observations: np.ndarray, index: np.ndarray) -> np.ndarray:
        return self.policy(np.asarray(observations, dtype=np.float64), self.goals[index])

    def observe(self, rewards: np.ndarray, index: np.ndarray) -> None:
        pass


class GoalBCAgent(GoalPolicyAgent):
    """A goal-conditioned BC policy as an Agent: each episode's goal xy is appended to its
    observations, as in training."""

    needs = "goal-conditioned BC"

    def __init__(self, bc: BehaviourCloning):
        super().__init__(lambda s, g: bc.act(np.concatenate([s, g], axis=1).astype(np.float32)))
        self.bc = bc


# ------------------------------------------------------------------ goal following
# the planner at horizon 1, beam 1, no history: what tt_greedy_actions decodes
GREEDY = PlannerConfig(
    mode="goal", horizon=1, beam_width=1, n_expand=1, max_context_transitions=0, deterministic=True
)


def tt_greedy_actions(model, discretizer, goal_dims: Sequence[int] = GOAL_DIMS) -> ActFn:
    """TT decoded as a policy: ``act(states (n, N), goals (n, G))`` is the most likely action
    given the goal prefix and the state alone (no history), the planner's horizon-1, beam-1
    decoding."""
    config = GREEDY
    n_obs = model.config.observation_dim
    device = next(model.parameters()).device

    def act(states: np.ndarray, goals: np.ndarray) -> np.ndarray:
        context = discretizer.encode(np.asarray(states, np.float64), dims=slice(0, n_obs))
        goal = discretizer.encode(np.asarray(goals, np.float64), dims=list(goal_dims))
        plan = beam_search(
            model.eval(),
            discretizer,
            torch.as_tensor(context, device=device),
            config,
            torch.as_tensor(goal, device=device),
        )
        return plan.action.float().cpu().numpy()

    return act


def goal_following(
    act: ActFn,
    episodes: Sequence[Episode],
    env_name: str = "fourrooms",
    n: int = 1000,
    seed: int = 0,
    min_command: float = 1.5,
) -> dict:
    """How often a policy pushes the way the data's controller would for the goal it is given.

    For ``n`` states of the data, the share of action components whose sign matches the
    controller's noise-free command (:meth:`WaypointController.command`) for that goal,
    counted where the command exceeds ``min_command`` (the noisy, clipped controller then
    pushes that way almost always):

    * ``own``: the goal of the state's own episode, as in every training pair;
    * ``swapped``: another episode's goal at the same state. A policy that ignores the goal
      and follows the state (the velocity already points along the data's path) scores about
      0.5 here; the controller itself scores 1.
    """
    if any(ep.goals is None for ep in episodes):
        raise ValueError("goal_following needs episodes with their goals (maze datasets)")
    rng = np.random.default_rng(seed)
    ep_idx = rng.integers(len(episodes), size=n)
    states = np.stack([episodes[e].observations[rng.integers(len(episodes[e]))] for e in ep_idx])
    own = np.stack([episodes[e].goals[0] for e in ep_idx])
    swapped = np.stack([episodes[e].goals[0] for e in rng.integers(len(episodes), size=n)])
    env = make_env(env_name)
    controller = WaypointController(env, env_name, ControllerConfig(), rng)
    maze = env.unwrapped.maze
    out = {"states": n}
    for name, goals in (("own", own), ("swapped", swapped)):
        commands = []
        for s, g in zip(states, goals, strict=True):
            controller.set_goal(tuple(int(v) for v in maze.cell_xy_to_rowcol(g)))
            commands.append(controller.command(s, g))
        commands = np.asarray(commands)
        actions = np.asarray(act(states.astype(np.float64), goals.astype(np.float64)))
        clear = np.abs(commands) > min_command
        out[name] = float((np.sign(actions[clear]) == np.sign(commands[clear])).mean())
    return out
