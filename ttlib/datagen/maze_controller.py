"""The noisy waypoint controller that collects the maze datasets (and serves as their
behaviour policy in the goal-reaching experiment)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from ttlib.envs import bfs_distances, maze_map


class WaypointController:
    """Drive the point mass along a shortest cell path to the goal: BFS + PD control + noise.

    BFS distances from the goal cell are computed once per episode; each step the target is
    the centre of the neighbouring cell one step closer (or the goal itself in the goal cell).
    Two adjacent cells form a convex rectangle, so heading for the next centre never cuts a
    wall corner.
    """

    def __init__(self, env: gym.Env, env_name: str, cfg, rng: np.random.Generator):
        """``cfg`` holds the gains ``kp``, ``kd`` and the ``action_noise`` (a
        :class:`ttlib.datagen.datasets_gen.GenConfig`)."""
        self.maze = env.unwrapped.maze
        self.layout = maze_map(env_name)
        self.free = np.array(self.layout, dtype=int) == 0
        self.cfg, self.rng = cfg, rng
        self.dist: np.ndarray | None = None

    def set_goal(self, goal_cell: tuple[int, int]) -> None:
        dist = bfs_distances(self.layout, goal_cell)
        self.dist = np.where(dist < 0, np.iinfo(np.int32).max, dist)  # walls: never closer

    def waypoint(self, pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
        r, c = self.maze.cell_xy_to_rowcol(pos)
        if self.dist[r, c] == 0:
            return goal
        neighbours = ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1))
        nxt = min(neighbours, key=lambda rc: self.dist[rc])
        return self.maze.cell_rowcol_to_xy(np.array(nxt))

    def command(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """The PD command towards the next waypoint for ``state`` [x, y, vx, vy], before noise
        and clipping: its sign is where the controller pushes, whatever the noise."""
        pos, vel = state[:2], state[2:4]
        return self.cfg.kp * (self.waypoint(pos, goal) - pos) - self.cfg.kd * vel

    def __call__(self, obs: dict) -> np.ndarray:
        action = self.command(obs["observation"], obs["desired_goal"])
        action = action + self.cfg.action_noise * self.rng.standard_normal(2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
