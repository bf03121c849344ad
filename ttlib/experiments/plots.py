"""Seaborn figure helpers shared by the experiment notebooks: one look, few lines per cell."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

KIND_COLOURS = {"state": "#4c72b0", "action": "#dd8452", "reward": "#55a868", "value": "#8c8c8c"}


def set_style() -> None:
    """The one theme of every figure in the book."""
    sns.set_theme(style="whitegrid", context="notebook", palette="deep")


def bands(
    df: pd.DataFrame,
    x: str,
    y: str,
    lo: str,
    hi: str,
    hue: str,
    col: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    logy: bool = False,
) -> plt.Figure:
    """Lines of ``y`` with a shaded band from ``lo`` to ``hi``, one colour per ``hue`` value
    and one panel per ``col`` value (e.g. median error and its quartiles vs horizon)."""
    panels = list(dict.fromkeys(df[col])) if col else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    colours = dict(zip(dict.fromkeys(df[hue]), sns.color_palette(), strict=False))
    for ax, panel in zip(axes[0], panels, strict=True):
        part = df if panel is None else df[df[col] == panel]
        for name, g in part.groupby(hue, sort=False):
            ax.plot(g[x], g[y], color=colours[name], label=name)
            ax.fill_between(g[x], g[lo], g[hi], color=colours[name], alpha=0.25, lw=0)
        ax.set(title=panel or "", xlabel=xlabel or x, ylabel=ylabel or y)
        if logy:
            ax.set_yscale("log")
    axes[0, 0].legend(frameon=False)
    fig.tight_layout()
    return fig


def trajectories(
    curves: dict[str, np.ndarray], names: list[str], dt: float = 1.0, xlabel: str = "step"
) -> plt.Figure:
    """One panel per dimension (``names``), one line per entry of ``curves`` (T, len(names));
    the first entry (the truth) is drawn black."""
    fig, axes = plt.subplots(1, len(names), figsize=(2.8 * len(names), 2.8), squeeze=False)
    colours = ["black", *sns.color_palette()]
    for ax, j, name in zip(axes[0], range(len(names)), names, strict=True):
        for (label, y), c in zip(curves.items(), colours, strict=False):
            ax.plot(np.arange(len(y)) * dt, y[:, j], color=c, label=label, lw=1.5)
        ax.set(title=name, xlabel=xlabel)
    axes[0, 0].legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def frame_strip(frames: dict[str, np.ndarray], steps: list[int]) -> plt.Figure:
    """Rendered frames: one row per entry of ``frames`` (T, H, W, 3), one column per step."""
    fig, axes = plt.subplots(
        len(frames), len(steps), figsize=(1.6 * len(steps), 1.7 * len(frames)), squeeze=False
    )
    for row, (label, video) in zip(axes, frames.items(), strict=True):
        for ax, t in zip(row, steps, strict=True):
            ax.imshow(video[t])
            ax.set(xticks=[], yticks=[])
        row[0].set_ylabel(label)
    for ax, t in zip(axes[0], steps, strict=True):
        ax.set_title(f"t = {t}", fontsize="small")
    fig.tight_layout()
    return fig


def attention_grid(maps: np.ndarray, kinds: list[str], transition_dim: int) -> plt.Figure:
    """Attention maps (n_layer, n_head, T, T), one panel per head, with transition boundaries
    and a strip along each axis coloured by the token kind (``kinds``: one name per token)."""
    L, H, T, _ = maps.shape
    fig, axes = plt.subplots(L, H, figsize=(2.6 * H, 2.6 * L), squeeze=False)
    strip = np.array([sns.color_palette([KIND_COLOURS[k]])[0] for k in kinds])
    for (layer, head), ax in np.ndenumerate(axes):
        m = maps[layer, head]
        ax.imshow(m, cmap="magma", vmin=0, vmax=max(np.quantile(m[m > 0], 0.99), 1e-9))
        ax.imshow(strip[None], extent=(-0.5, T - 0.5, T + 3.5, T - 0.5), aspect="auto")
        ax.imshow(strip[:, None], extent=(-4.5, -0.5, T - 0.5, -0.5), aspect="auto")
        for b in np.arange(transition_dim, T, transition_dim) - 0.5:
            ax.axhline(b, color="white", lw=0.3, alpha=0.5)
            ax.axvline(b, color="white", lw=0.3, alpha=0.5)
        ax.set(xlim=(-4.5, T - 0.5), ylim=(T + 3.5, -0.5), xticks=[], yticks=[], aspect="equal")
        ax.set_title(f"layer {layer}, head {head}", fontsize="small")
        ax.grid(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in KIND_COLOURS.values()]
    fig.supxlabel("key (attended token)")
    fig.supylabel("query (predicts the next token)")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.legend(handles, KIND_COLOURS, ncol=4, loc="upper center", frameon=False)
    return fig


def head_shares(table: pd.DataFrame) -> plt.Figure:
    """Per-head Markovian and smoothing shares as bars, chance levels as dashed lines."""
    df = table.assign(head_name=[f"L{r.layer}H{r.head}" for r in table.itertuples()])
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 0.55 * len(df)) * 1.4, 3.2), sharey=True)
    for ax, col, title in zip(
        axes, ("markov", "smoothing"), ("Markovian", "smoothing"), strict=True
    ):
        sns.barplot(df, x="head_name", y=col, ax=ax, color=sns.color_palette()[0])
        ax.axhline(df[f"chance_{col}"].iloc[0], color="black", ls="--", lw=1, label="chance")
        ax.set(title=f"{title} share", xlabel="head", ylabel="share of attention", ylim=(0, 1))
        ax.tick_params(axis="x", labelrotation=90)
    axes[0].legend(frameon=False)
    fig.tight_layout()
    return fig


def learning_curves(
    histories: dict[str, pd.DataFrame], columns: list[str], labels: list[str]
) -> plt.Figure:
    """One panel per key of ``histories`` (training logs: ``tokens`` and loss columns), one
    line per column that the log has (a model trained before a column was logged lacks it)."""
    fig, axes = plt.subplots(1, len(histories), figsize=(4.5 * len(histories), 3.2), squeeze=False)
    for ax, (title, h) in zip(axes[0], histories.items(), strict=True):
        for column, label in zip(columns, labels, strict=True):
            if column in h:
                ax.plot(h["tokens"] / 1e6, h[column], marker=".", label=label)
        ax.set(title=title, xlabel="training tokens (millions)", ylabel="nats per token")
    axes[0][0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=len(columns))
    fig.tight_layout()
    return fig
