"""Maze geometry (BFS distances, cells and positions) and the noisy waypoint controller that
collects the maze datasets (and is their behaviour policy in the goal-reaching experiment)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from ttlib.envs import maze_map


# Cells are (row, col) of a layout (1 = wall); positions are PointMaze's (x, y), with cells of
# size ``scaling`` and (0, 0) at the centre of the layout, row 0 at the top.
def bfs_distances(layout: Sequence[Sequence[int]], source: tuple[int, int]) -> np.ndarray:
    """Fewest moves between 4-neighbouring free cells from ``source`` to every cell; -1 where
    no path exists (and on walls)."""
    free = np.asarray(layout, dtype=int) == 0
    rows, cols = free.shape
    if not (0 <= source[0] < rows and 0 <= source[1] < cols and free[source]):
        raise ValueError(f"source cell {source} is a wall or outside the layout")
    dist = np.full(free.shape, -1, dtype=int)
    dist[source] = 0
    queue = deque([source])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < rows and 0 <= nc < cols and free[nr, nc] and dist[nr, nc] < 0:
                dist[nr, nc] = dist[r, c] + 1
                queue.append((nr, nc))
    return dist


def xy_to_cell(layout: Sequence[Sequence[int]], xy, scaling: float = 1.0) -> np.ndarray:
    """(row, col) of positions xy (..., 2), as gymnasium-robotics' ``Maze.cell_xy_to_rowcol``."""
    rows, cols = np.shape(layout)
    xy = np.asarray(xy, dtype=np.float64) / scaling
    r = np.floor(rows / 2 - xy[..., 1]).astype(int)
    c = np.floor(xy[..., 0] + cols / 2).astype(int)
    return np.stack([r, c], axis=-1)


def cell_to_xy(layout: Sequence[Sequence[int]], cell, scaling: float = 1.0) -> np.ndarray:
    """Positions of cell centres (..., 2), as gymnasium-robotics' ``Maze.cell_rowcol_to_xy``."""
    rows, cols = np.shape(layout)
    cell = np.asarray(cell, dtype=np.float64)
    xy = np.stack([cell[..., 1] + 0.5 - cols / 2, rows / 2 - cell[..., 0] - 0.5], axis=-1)
    return xy * scaling


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
