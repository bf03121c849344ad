"""What the two maze experiments share: the paths agents take, and the figure that draws them.

:class:`PathRecorder` wraps a maze env and keeps the point's (or the ant's) x, y after every
reset and step; :func:`plot_paths` draws recorded paths over the maze's walls. The geometry
itself (cells, positions, shortest paths) is the env's: see :mod:`ttlib.envs`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np


class PathRecorder(gym.Wrapper):
    """Keeps the agent's x, y (``achieved_goal``) after every reset and step, and the goal."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.positions: list[np.ndarray] = []
        self.goal: np.ndarray | None = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.positions = [np.array(obs["achieved_goal"], dtype=np.float64)]
        self.goal = np.array(obs["desired_goal"], dtype=np.float64)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.positions.append(np.array(obs["achieved_goal"], dtype=np.float64))
        return obs, reward, terminated, truncated, info

    @staticmethod
    def around(make_env: Callable[..., gym.Env]) -> tuple[Callable[..., gym.Env], list]:
        """An env factory whose envs record their paths, and the list the recorders join
        (in the order :func:`ttlib.evaluate.evaluate` makes them: episode 0 first)."""
        recorders: list[PathRecorder] = []

        def factory(**kw) -> gym.Env:
            recorders.append(PathRecorder(make_env(**kw)))
            return recorders[-1]

        return factory, recorders


def maze_extent(layout: Sequence[Sequence[int]], scaling: float = 1.0) -> tuple:
    """(left, right, bottom, top) of the maze in world units, as gymnasium-robotics centres it."""
    rows, cols = np.shape(layout)
    return (-cols * scaling / 2, cols * scaling / 2, -rows * scaling / 2, rows * scaling / 2)


def draw_walls(ax, layout, scaling: float = 1.0) -> None:
    walls = np.where(np.asarray(layout) == 1, 1.0, np.nan)
    extent = maze_extent(layout, scaling)
    ax.imshow(
        walls,
        extent=extent,
        origin="upper",
        cmap="Greys",
        vmin=0,
        vmax=1.3,
        interpolation="nearest",
    )
    ax.set(xticks=[], yticks=[], aspect="equal", xlim=extent[:2], ylim=extent[2:])
    ax.grid(False)


def plot_paths(
    layout,
    panels: dict[str, dict],
    n_paths: int | None = None,
    scaling: float = 1.0,
    title: str = "",
    size: tuple[float, float] = (4.6, 4.0),
):
    """One panel per entry of ``panels`` (its title: {"paths", "goals", "success"}): the first
    ``n_paths`` paths over the walls, each in its own colour, start as a circle, goal as a
    star; a path that reached its goal is solid with a filled star, one that did not is dashed
    with a hollow star."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    w, h = size
    fig, axes = plt.subplots(1, len(panels), figsize=(w * len(panels), h), squeeze=False)
    for ax, (name, run) in zip(axes[0], panels.items(), strict=True):
        draw_walls(ax, layout, scaling)
        n = len(run["paths"]) if n_paths is None else min(n_paths, len(run["paths"]))
        colours = sns.color_palette("husl", n)
        for k in range(n):
            xy, ok, colour = np.asarray(run["paths"][k]), bool(run["success"][k]), colours[k]
            ax.plot(xy[:, 0], xy[:, 1], ls="-" if ok else "--", lw=1.4, color=colour)
            ax.plot(*xy[0], "o", color=colour, ms=5, mec="black", mew=0.5)
            if run.get("goals") is not None:
                face = colour if ok else "none"
                ax.plot(*run["goals"][k], "*", ms=12, color=face, mec="black", mew=0.6)
        ax.set_title(name, fontsize="medium")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
