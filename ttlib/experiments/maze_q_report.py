"""What the maze_q notebook shows: success tables, the paper's AntMaze numbers, the critic's
value map, and the figures.

The value map asks how far the IQL critic's goal signal reaches: a heuristic that can guide a
search from far away keeps rising all the way to the goal; one whose goal signal has not
propagated is flat beyond a few cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ttlib.data import Episode
from ttlib.datagen.maze_controller import bfs_distances, xy_to_cell
from ttlib.evaluate import mean_se
from ttlib.experiments import paper
from ttlib.experiments.maze_q import METHODS
from ttlib.experiments.mazes import draw_walls, maze_extent
from ttlib.iql import IQL


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


def wide_table(successes: pd.DataFrame, digits: int = 1, with_n: bool = False) -> pd.DataFrame:
    """Mazes as rows, methods as columns, cells "mean ± s.e." (the paper's layout), with the
    number of episodes as "(n)" when ``with_n``."""
    cells = successes.assign(
        cell=[
            f"{m:.{digits}f} ± {s:.{digits}f}" + (f" ({n})" if with_n else "")
            for m, s, n in zip(
                successes["success"], successes["se"], successes["episodes"], strict=True
            )
        ]
    )
    table = cells.pivot(index="maze", columns="method", values="cell")
    order = [m for m in METHODS if m in table.columns]
    return table[order].reindex(list(dict.fromkeys(successes["maze"])))


def closest_approach(evaluations: list[dict], layouts: dict[str, tuple]) -> pd.DataFrame:
    """How far along the maze each method got, when success alone says little: per maze and
    method, the shortest-path distance (in cells) from the start to the goal's cell and the
    fewest cells between the agent and the goal's cell over an episode, median and share of
    episodes that entered the goal's cell. ``layouts``: maze → (layout, cell size)."""
    rows = []
    for ev in evaluations:
        layout, scaling = layouts[ev["maze"]]
        fewest, start = [], []
        for path, goal in zip(ev["paths"], ev["goals"], strict=True):
            goal_cell = tuple(int(v) for v in xy_to_cell(layout, goal, scaling))
            dist = bfs_distances(layout, goal_cell)
            cells = xy_to_cell(layout, np.asarray(path), scaling)
            along = dist[cells[:, 0], cells[:, 1]]
            start.append(along[0])
            fewest.append(along[along >= 0].min())
        fewest = np.array(fewest)
        rows.append(
            {
                "maze": ev["maze"],
                "method": ev["method"],
                "start (cells to goal)": int(np.median(start)),
                "closest (cells, median)": float(np.median(fewest)),
                "entered the goal's cell (%)": 100 * float(np.mean(fewest == 0)),
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the paper's numbers
def paper_antmaze_table() -> pd.DataFrame:
    """Success rates (×100) on D4RL AntMaze v0 as the paper reports them, read from
    results/paper/paper_numbers.csv with their sources.

    From a secondary source (a study note of the paper), not checked against the PDF; BC,
    CQL, IQL and DT are the IQL paper's numbers. ``TT(+Q) se`` is the paper's standard
    error. The paper's printed CQL average is 44.9, while its five rows average 43.9.
    """
    df = paper.antmaze_paper_table()
    sources = paper.paper_numbers("antmaze")
    df["source"] = "; ".join(dict.fromkeys(sources[sources["dataset"] != "average"]["source"]))
    return df


def paper_rows(mazes: Sequence[str]) -> pd.DataFrame:
    """The paper's AntMaze cells (TT(+Q) ± its s.e., IQL, BC; D4RL's data) for our mazes
    (``antmaze-umaze`` → the paper's ``umaze`` row), to stand beside our table."""
    published = paper_antmaze_table().set_index("dataset")
    rows = {}
    for maze in mazes:
        row = published.loc[maze.removeprefix("antmaze-")]
        rows[maze] = {
            "TT(+Q)": paper.cell(row["TT(+Q)"], row["TT(+Q) se"]),
            "IQL": paper.cell(row["IQL"], np.nan),
            "BC": paper.cell(row["BC"], np.nan),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("paper (AntMaze v0)")


def _printed_averages() -> dict[str, float]:
    df = paper.paper_numbers("antmaze")
    df = df[df["dataset"] == "average"]
    return dict(zip(df["method"], df["value"], strict=True))


PAPER_PRINTED_AVERAGES = _printed_averages()


# ------------------------------------------------------------------ the verdict
def paired_gains(episodes: pd.DataFrame, a: str = "TT(+Q)", b: str = "TT") -> dict:
    """Per maze, success of ``a`` minus ``b`` (×100) paired over the shared evaluation tasks."""
    out = {}
    for maze, g in episodes.groupby("maze", sort=False):
        by = g.pivot_table(index="episode", columns="method", values="success")
        if {a, b} <= set(by.columns):
            pair = by[[a, b]].dropna()
            out[maze] = paper.paired_difference(100 * pair[a], 100 * pair[b])
    return out


def verdict(episodes: pd.DataFrame, experiment: str = "maze_q") -> paper.Verdict:
    """The paper: TT(+Q) beats TT's own value and IQL on sparse-reward mazes. Reproduced when
    TT(+Q) is clearly above TT in every maze, partly when in some, else not at this scale.
    ``experiment`` names the page's glue keys (``maze_q`` or ``antmaze``)."""
    avg = {
        m: paper.paper_value("antmaze", m, "antmaze", "average") for m in ("TT(+Q)", "IQL", "BC")
    }
    claim = (
        f"Q-guided search averages {avg['TT(+Q)']:.0f}% success on five AntMaze datasets, "
        f"IQL {avg['IQL']:.0f}%, BC {avg['BC']:.0f}%"
    )
    gains, vs_iql = paired_gains(episodes), paired_gains(episodes, "TT(+Q)", "IQL")
    rates = episodes.groupby(["maze", "method"], sort=False)["success"].mean() * 100
    ours = "; ".join(
        f"{maze}: "
        + ", ".join(f"{m} {rates[maze, m]:.0f}%" for m in METHODS if (maze, m) in rates.index)
        for maze in dict.fromkeys(episodes["maze"])
    )
    word = paper.share_verdict(sum(d.sign > 0 for d in gains.values()), len(gains))
    why = " ".join(
        f"{maze}: TT(+Q) − TT = {d.text()}, TT(+Q) − IQL = {vs_iql[maze].text()} success points"
        f" (paired over tasks)."
        for maze, d in gains.items()
    )
    why += " A difference counts when it is at least two standard errors."
    return paper.Verdict(experiment, claim, ours, word, why)


# ------------------------------------------------------------------ figures
def plot_value_maps(maps: dict[str, tuple[list, ValueMap]], scaling: float = 1.0):
    """IQL's V(x, y, goal) as a heat map per maze (walls grey, goal a star)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(4.8 * len(maps), 4.0), squeeze=False)
    for ax, (name, (layout, vm)) in zip(axes[0], maps.items(), strict=True):
        im = ax.imshow(
            vm.values, extent=vm.extent, origin="upper", cmap="viridis", interpolation="nearest"
        )
        draw_walls(ax, layout, scaling)
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
    goal_cell = tuple(int(v) for v in xy_to_cell(layout, vm.goal, scaling))
    dist = bfs_distances(layout, goal_cell)
    blocks = vm.values.reshape(rows, k, cols, k).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    free = dist >= 0
    df = pd.DataFrame({"cells to goal": dist[free], "V": blocks[free].mean(-1)})
    return df.groupby("cells to goal", as_index=False)["V"].mean()
