"""Draw the explanatory figures of the book's method page.

These figures need no trained model: they illustrate tokenisation, the two discretizers and
beam search on made-up numbers. Run from the repository root and commit the SVGs it writes:

    python book/make_figures.py

The output is deterministic (fixed seed, no date in the SVG metadata), so re-running it only
changes the files when this script changes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

FIGURES = Path(__file__).resolve().parent / "figures"
K = 100  # bins per dimension, as in the paper

# One colour per kind of token, reused in every figure.
COLOURS = {"s": "#4C72B0", "a": "#DD8452", "r": "#55A868", "V": "#C44E52"}


def _save(fig: plt.Figure, name: str) -> Path:
    FIGURES.mkdir(exist_ok=True)
    path = FIGURES / name
    fig.savefig(path, metadata={"Date": None}, bbox_inches="tight")
    plt.close(fig)
    return path


def _box(
    ax: plt.Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    colour: str,
    text: str,
    text_colour: str = "white",
    alpha: float = 1.0,
    fontsize: float = 11,
) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=colour,
            edgecolor="none",
            alpha=alpha,
        )
    )
    ax.text(
        x + w / 2, y + h / 2, text, ha="center", va="center", color=text_colour, fontsize=fontsize
    )


def tokenisation() -> Path:
    """One transition of a toy task (3 state dims, 2 action dims) turned into 7 token ids."""
    labels = ["$s^1$", "$s^2$", "$s^3$", "$a^1$", "$a^2$", "$r$", "$V$"]
    kinds = ["s", "s", "s", "a", "a", "r", "V"]
    values = ["0.42", "-1.30", "2.07", "0.85", "-0.11", "3.6", "287"]
    bins = [61, 18, 93, 77, 45, 52, 70]

    fig, ax = plt.subplots(figsize=(9.0, 3.4))
    w, gap = 1.0, 0.18
    rows = {"label": 3.0, "value": 2.2, "bin": 1.4, "token": 0.6}
    for j, (label, kind, value, b) in enumerate(zip(labels, kinds, values, bins, strict=True)):
        x = j * (w + gap)
        c = COLOURS[kind]
        _box(ax, x, rows["label"], w, 0.6, c, label, fontsize=13)
        _box(ax, x, rows["value"], w, 0.6, c, value, text_colour="black", alpha=0.18)
        _box(ax, x, rows["bin"], w, 0.6, c, str(b), text_colour="black", alpha=0.35)
        _box(ax, x, rows["token"], w, 0.6, c, str(b + K * j))
        ax.text(
            x + w / 2,
            rows["token"] - 0.25,
            f"j = {j}",
            ha="center",
            va="center",
            fontsize=9,
            color="0.35",
        )
    right = len(labels) * (w + gap) + 0.1
    notes = {
        "label": "dimension of the transition",
        "value": "continuous value",
        "bin": "bin index b (0 … 99)",
        "token": "token id = b + 100·j",
    }
    for row, note in notes.items():
        ax.text(right, rows[row] + 0.3, note, ha="left", va="center", fontsize=10)
    ax.set_xlim(-0.1, right + 3.2)
    ax.set_ylim(0.1, 3.7)
    ax.axis("off")
    return _save(fig, "tokenisation.svg")


def discretizers() -> Path:
    """Uniform and quantile bin edges on a skewed 1-d sample (10 bins, for legibility)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.0, 0.4, 4000), rng.exponential(1.5, 1000) + 0.5])
    n_bins = 10
    uniform = np.linspace(x.min(), x.max(), n_bins + 1)
    quantile = np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1))

    fig, axes = plt.subplots(2, 1, figsize=(8.0, 4.2), sharex=True)
    for ax, edges, name in zip(axes, [uniform, quantile], ["uniform", "quantile"], strict=True):
        ax.hist(x, bins=120, color="0.75", edgecolor="none")
        for e in edges:
            ax.axvline(e, color=COLOURS["s"], linewidth=1.2)
        ax.set_yticks([])
        ax.set_title(f"{name}: {n_bins} bins", loc="left", fontsize=11)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    axes[1].set_xlabel("value of one dimension")
    fig.tight_layout()
    return _save(fig, "discretizers.svg")


def beam_search() -> Path:
    """Three steps of beam search with beam width 3 and expansion factor 2."""
    width, expand, steps = 3, 2, 3
    rng = np.random.default_rng(3)

    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    root_y = (width * expand - 1) / 2
    kept = [(root_y, 0.0)]  # (y position, score) of the plans alive at the current step
    ax.scatter([0], [root_y], s=260, color="black", zorder=3)
    ax.text(0, root_y - 0.55, "current\nstate", ha="center", va="top", fontsize=10)
    for t in range(1, steps + 1):
        candidates = []
        for parent_y, parent_score in sorted(kept):
            n_children = expand if t > 1 else width * expand
            for _ in range(n_children):
                candidates.append((parent_y, parent_score + float(rng.normal(1.0, 0.8))))
        order = np.argsort([-score for _, score in candidates])
        survivors = set(order[:width].tolist())
        new_kept = []
        for i, (parent_y, score) in enumerate(candidates):
            y = i * (width * expand - 1) / max(len(candidates) - 1, 1)
            alive = i in survivors
            colour = COLOURS["a"] if alive else "0.8"
            ax.plot([t - 1, t], [parent_y, y], color=colour, linewidth=2 if alive else 1, zorder=1)
            ax.scatter([t], [y], s=200, color=colour, zorder=2)
            ax.text(
                t + 0.09,
                y,
                f"{score:.1f}",
                va="center",
                fontsize=9,
                color="black" if alive else "0.6",
            )
            if alive:
                new_kept.append((y, score))
        kept = new_kept
    best_y = max(kept, key=lambda p: p[1])[0]
    ax.annotate(
        "best plan: execute\nits first action",
        xy=(steps, best_y),
        xytext=(steps + 0.35, best_y + 0.9),
        fontsize=10,
        arrowprops={"arrowstyle": "->", "color": "black"},
    )
    ax.set_xticks(range(steps + 1))
    ax.set_xticklabels(["now"] + [f"+{t}" for t in range(1, steps + 1)])
    ax.set_xlabel("planning step (one transition per step)")
    ax.set_yticks([])
    ax.set_xlim(-0.4, steps + 1.4)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(
        "kept (orange) and pruned (grey) candidates; numbers are plan scores",
        loc="left",
        fontsize=10,
    )
    return _save(fig, "beam_search.svg")


def main() -> None:
    plt.rcParams["svg.hashsalt"] = "ttlib-book"
    for make in (tokenisation, discretizers, beam_search):
        print(make())


if __name__ == "__main__":
    main()
