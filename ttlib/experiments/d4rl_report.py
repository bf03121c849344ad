"""What the D4RL notebook shows: the paper's Table 1 beside ours, and the figures.

The paper's numbers are kept here as published (with their sources); our scores are set next
to them as a table in the paper's layout and as bars with the paper's values as ticks. The
training-loss and learning-curve figures of the table's models are drawn here too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ttlib.evaluate import mean_se
from ttlib.experiments.d4rl_table import ENV_LABELS, KIND_LABELS, KINDS, METHODS

# D4RL v2 normalised scores as the paper and its code report them (reference/paper-facts.md 2a).
# BC and TT (quantile): the original README / plotting code; IQL: the IQL paper's Table 1 as
# quoted by the diffuser code; TT (uniform): a single secondary source, not checked against
# the paper itself. TT columns are (mean, standard error); baselines come without one.
# Columns: env, kind, BC, IQL, TT (uniform) (mean, s.e.), TT (quantile) (mean, s.e.).
PAPER_ROWS: list[tuple[str, str, float, float, tuple[float, float], tuple[float, float]]] = [
    ("halfcheetah", "medium-expert", 59.9, 86.7, (40.8, 2.3), (95.0, 0.2)),
    ("hopper", "medium-expert", 79.6, 91.5, (106.0, 0.28), (110.0, 2.7)),
    ("walker2d", "medium-expert", 36.6, 109.6, (91.0, 2.8), (101.9, 6.8)),
    ("halfcheetah", "medium", 43.1, 47.4, (44.0, 0.31), (46.9, 0.4)),
    ("hopper", "medium", 63.9, 66.3, (67.4, 2.9), (61.1, 3.6)),
    ("walker2d", "medium", 77.3, 78.3, (81.3, 2.1), (79.0, 2.8)),
    ("halfcheetah", "medium-replay", 4.3, 44.2, (44.1, 0.9), (41.9, 2.5)),
    ("hopper", "medium-replay", 27.6, 94.7, (99.4, 3.2), (91.5, 3.6)),
    ("walker2d", "medium-replay", 36.9, 73.9, (79.4, 3.3), (82.6, 6.9)),
]
PAPER_SOURCES = {
    "BC": "TT paper / original README",
    "IQL": "IQL paper Table 1 (via diffuser's score file)",
    "TT (uniform)": "secondary source only (a study note), not checked against the paper",
    "TT (quantile)": "TT paper / original README",
}


def paper_table() -> pd.DataFrame:
    """The published scores in long format: env, kind, method, score, se, source."""
    rows = []
    for env, kind, bc, iql, uniform, quantile in PAPER_ROWS:
        cells = {"BC": (bc, np.nan), "IQL": (iql, np.nan)}
        cells.update({"TT (uniform)": uniform, "TT (quantile)": quantile})
        for method, (m, se) in cells.items():
            rows.append(
                {
                    "env": env,
                    "kind": kind,
                    "method": method,
                    "score": m,
                    "se": se,
                    "source": PAPER_SOURCES[method],
                }
            )
    return pd.DataFrame(rows)


def average_scores(table: pd.DataFrame, column: str = "score") -> pd.Series:
    """Mean of ``column`` per method over the datasets present (the tables' Average row)."""
    return table.groupby("method", sort=False)[column].mean()


def compare_with_paper(summary: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our scores next to the published ones, one row per (env, kind, method) we measured."""
    paper = paper_table() if paper is None else paper
    both = summary.merge(
        paper.rename(columns={"score": "paper_score", "se": "paper_se", "source": "paper_source"}),
        on=["env", "kind", "method"],
        how="left",
    )
    return both


def _fmt(m: float, se: float, digits: int = 1) -> str:
    if not np.isfinite(m):
        return ""
    return f"{m:.{digits}f}" if not np.isfinite(se) else f"{m:.{digits}f} ± {se:.{digits}f}"


def display_table(summary: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """The table as the paper prints it: a row per dataset, ours then the paper's columns.

    The Average row averages each column over the datasets measured here, the paper's
    columns over the same datasets (so it equals the paper's own average only for all nine).
    """
    paper = paper_table() if paper is None else paper
    methods = [m for m in METHODS if m in set(summary["method"])]
    keys = list(dict.fromkeys(zip(summary["env"], summary["kind"], strict=True)))
    ours = summary.set_index(["env", "kind", "method"])
    pub = paper.set_index(["env", "kind", "method"])
    rows = []
    for env, kind in keys:
        row = {"Dataset": KIND_LABELS.get(kind, kind), "Env": ENV_LABELS.get(env, env)}
        for m in methods:
            r = ours.loc[(env, kind, m)] if (env, kind, m) in ours.index else None
            row[m] = _fmt(r["score"], r["se"]) if r is not None else ""
        for m in METHODS:
            r = pub.loc[(env, kind, m)] if (env, kind, m) in pub.index else None
            row[paper_column(m)] = _fmt(r["score"], r["se"]) if r is not None else ""
        rows.append(row)
    avg = {"Dataset": "Average", "Env": ""}
    for m in methods:
        avg[m] = _fmt(summary[summary["method"] == m]["score"].mean(), np.nan)
    sub = paper[[(e, k) in set(keys) for e, k in zip(paper["env"], paper["kind"], strict=True)]]
    for m in METHODS:
        avg[paper_column(m)] = _fmt(sub[sub["method"] == m]["score"].mean(), np.nan)
    rows.append(avg)
    return pd.DataFrame(rows)


def paper_column(method: str) -> str:
    return f"paper: {method}" + (" †" if method == "TT (uniform)" else "")


def plot_table(summary: pd.DataFrame, paper: pd.DataFrame | None = None):
    """Bars: our mean score ± s.e. per dataset and method; black ticks: the paper's numbers."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    paper = paper_table() if paper is None else paper
    envs = list(dict.fromkeys(summary["env"]))
    kinds = [k for k in KINDS if k in set(summary["kind"])] + [
        k for k in dict.fromkeys(summary["kind"]) if k not in KINDS
    ]
    methods = [m for m in METHODS if m in set(summary["method"])]
    fig, axes = plt.subplots(
        1, len(envs), figsize=(4.2 * len(envs), 3.6), squeeze=False, sharey=True
    )
    pub = paper.set_index(["env", "kind", "method"])["score"]
    for ax, env in zip(axes[0], envs, strict=True):
        part = summary[summary["env"] == env]
        sns.barplot(
            data=part,
            x="kind",
            y="score",
            hue="method",
            order=kinds,
            hue_order=methods,
            errorbar=None,
            ax=ax,
        )
        ours = part.set_index(["kind", "method"])
        for container, method in zip(ax.containers, methods, strict=False):
            for patch, kind in zip(container.patches, kinds, strict=False):
                x = patch.get_x() + patch.get_width() / 2
                if (kind, method) in ours.index:
                    r = ours.loc[(kind, method)]
                    ax.errorbar(x, r["score"], yerr=r["se"], color="black", lw=1, capsize=2)
                if (env, kind, method) in pub.index:
                    ax.plot(
                        x,
                        pub[(env, kind, method)],
                        marker="_",
                        ms=12,
                        mew=2,
                        color="black",
                        ls="none",
                    )
        ax.set(title=ENV_LABELS.get(env, env), xlabel="", ylabel="normalised score")
        ax.legend_.remove()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], marker="_", ms=12, mew=2, color="black", ls="none"))
    labels.append("paper")
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=len(labels),
        frameon=False,
        bbox_to_anchor=(0.5, 1.08),
    )
    fig.tight_layout()
    return fig


def plot_losses(histories: pd.DataFrame):
    """Training cross-entropy per token type against tokens, one panel per dataset."""
    import seaborn as sns

    from ttlib.experiments.plots import KIND_COLOURS

    df = histories.assign(dataset=histories["env"] + " " + histories["kind"])
    g = sns.relplot(
        data=df,
        x="tokens",
        y="loss",
        hue="token",
        palette=KIND_COLOURS,
        style="method",
        col="dataset",
        col_wrap=min(3, df["dataset"].nunique()),
        kind="line",
        height=2.8,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    g.set_axis_labels("training tokens", "cross-entropy (nats)")
    g.set_titles("{col_name}")
    return g.figure


def plot_learning_curve(curve: pd.DataFrame):
    """Mean planning score ± s.e. against training tokens, one line per discretizer."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for method, g in curve.groupby("method", sort=False):
        stats = [(t, *mean_se(x["score"].to_numpy())) for t, x in g.groupby("tokens")]
        t, m, se = map(np.array, zip(*stats, strict=True))
        ax.errorbar(t, m, yerr=se, marker="o", capsize=3, label=method)
    env, kind = curve["env"].iloc[0], curve["kind"].iloc[0]
    ax.set(
        xscale="log",
        xlabel="training tokens",
        ylabel="normalised score",
        title=f"{ENV_LABELS.get(env, env)} {kind}",
    )
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig
