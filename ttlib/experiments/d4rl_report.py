"""What the D4RL notebook shows: the paper's Table 1 beside ours, and the figures.

The paper's numbers are kept here as published (with their sources); our scores are set next
to them as a table in the paper's layout and as bars with the paper's values as ticks. The
training-loss and learning-curve figures of the table's models are drawn here too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ttlib.evaluate import mean_se
from ttlib.experiments import paper
from ttlib.experiments.d4rl_table import ENV_LABELS, KIND_LABELS, KINDS, METHODS

# The published numbers live in results/paper/paper_numbers.csv (ttlib.experiments.paper),
# each with its source: the TT paper's Table 1 for its own columns and baselines, the IQL
# paper for IQL (not a column of the TT paper's table), a secondary source for TT (uniform).
PAPER_BASELINES = ("BC", "MBOP", "BRAC", "CQL", "DT")


def paper_table(methods=METHODS) -> pd.DataFrame:
    """The published scores of ``methods`` in long format: env, kind, method, score, se, source."""
    df = paper.d4rl_paper_table()
    return df[df["method"].isin(methods)].reset_index(drop=True)


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


def dataset_label(env: str, kind: str) -> str:
    return f"{ENV_LABELS.get(env, env)} {KIND_LABELS.get(kind, kind)}"


def data_episode_scores(params: dict) -> pd.DataFrame:
    """The normalised return of every complete episode of each dataset of the table (the
    last episode, cut by the dataset's size, is left out unless it ended by falling)."""
    from ttlib.data import load_episodes
    from ttlib.envs import normalized_score
    from ttlib.experiments.d4rl_data import DatasetUnavailable, dataset_config

    rows = []
    for env in params["envs"]:
        for kind in params["kinds"]:
            try:
                eps = load_episodes(dataset_config(env, kind, params))
            except DatasetUnavailable:
                continue
            eps = eps[:-1] + [e for e in eps[-1:] if e.terminated]
            scores = normalized_score(env, [float(e.rewards.sum()) for e in eps])
            rows += [
                {"env": env, "kind": kind, "episode": i, "score": float(x)}
                for i, x in enumerate(scores)
            ]
    return pd.DataFrame(rows, columns=["env", "kind", "episode", "score"])


def ours_table(summary: pd.DataFrame, data: pd.DataFrame) -> pd.DataFrame:
    """Our scores, one row per dataset: the data's own mean, then each method, every cell
    "mean ± s.e. (n)"; the Average row combines the datasets' errors."""
    methods = [m for m in METHODS if m in set(summary["method"])]
    keys = list(dict.fromkeys(zip(summary["env"], summary["kind"], strict=True)))
    ours = summary.set_index(["env", "kind", "method"])
    rows, per_column = [], {c: [] for c in ["data", *methods]}
    for env, kind in keys:
        row = {"Dataset": dataset_label(env, kind)}
        d = data[(data["env"] == env) & (data["kind"] == kind)]["score"].to_numpy()
        m, se = mean_se(d) if len(d) else (np.nan, np.nan)
        row["data"] = paper.cell(m, se, len(d))
        per_column["data"].append((m, se))
        for method in methods:
            r = ours.loc[(env, kind, method)]
            row[method] = paper.cell(r["score"], r["se"], int(r["episodes"]))
            per_column[method].append((r["score"], r["se"]))
        rows.append(row)
    avg = {"Dataset": "Average"}
    for col, vals in per_column.items():
        m, se = np.array(vals, dtype=float).T if vals else (np.array([]), np.array([]))
        avg[col] = paper.cell(m.mean(), np.sqrt((se**2).sum()) / len(se)) if len(m) else ""
    return pd.DataFrame([*rows, avg])


def paper_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's Table 1 in two narrow tables: the baselines it printed, and IQL (from the
    IQL paper) with the two TT columns. Rows: the nine datasets and the printed averages."""
    nums = paper.paper_numbers("d4rl")
    nums = nums.assign(
        label=[
            "Average" if k == "average" else dataset_label(e, k)
            for e, k in zip(nums["env"], nums["dataset"], strict=True)
        ]
    )
    wide = nums.pivot(index="label", columns="method", values="text")
    order = list(dict.fromkeys(nums["label"]))
    iql = paper_table(["IQL"])
    wide.loc["Average", "IQL"] = f"{iql['score'].mean():.1f}*"
    wide = wide.loc[order]
    baselines = wide[list(PAPER_BASELINES)].rename_axis("Dataset").reset_index()
    tt = wide[["IQL", "TT (uniform)", "TT (quantile)"]].rename(
        columns={"IQL": "IQL ‡", "TT (uniform)": "TT (uniform) †"}
    )
    return baselines, tt.rename_axis("Dataset").reset_index()


PAIRS = (
    ("TT (quantile)", "data"),
    ("TT (quantile)", "BC"),
    ("TT (quantile)", "IQL"),
    ("TT (quantile)", "TT (uniform)"),
)


def differences(episodes: pd.DataFrame, data: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, method A minus B: paired over evaluation episodes (every method meets the
    same reset seeds), unpaired against the data's episodes. Columns: env, kind, a, b, mean,
    se, n, clear (at least two standard errors)."""
    rows = []
    for (env, kind), g in episodes.groupby(["env", "kind"], sort=False):
        by = g.pivot_table(index=["train_seed", "episode"], columns="method", values="score")
        d = data[(data["env"] == env) & (data["kind"] == kind)]["score"].to_numpy()
        for a, b in PAIRS:
            if a not in by.columns or (b != "data" and b not in by.columns):
                continue
            if b == "data":
                if len(d) == 0:
                    continue
                diff = paper.independent_difference(by[a].dropna(), d)
            else:
                pair = by[[a, b]].dropna()
                diff = paper.paired_difference(pair[a], pair[b])
            rows.append(
                {
                    "env": env,
                    "kind": kind,
                    "a": a,
                    "b": b,
                    "mean": diff.mean,
                    "se": diff.se,
                    "n": diff.n,
                    "clear": diff.clear,
                }
            )
    return pd.DataFrame(rows, columns=["env", "kind", "a", "b", "mean", "se", "n", "clear"])


def _diff_cell(d: paper.Difference) -> str:
    text = d.text()
    return f"**{text}**" if d.clear else text


def average_differences(diffs: pd.DataFrame) -> dict[tuple[str, str], paper.Difference]:
    out = {}
    for (a, b), g in diffs.groupby(["a", "b"], sort=False):
        out[a, b] = paper.mean_of_differences(
            [paper.Difference(m, s, n) for m, s, n in zip(g["mean"], g["se"], g["n"], strict=True)]
        )
    return out


def differences_table(diffs: pd.DataFrame) -> pd.DataFrame:
    """A row per dataset, a column per comparison ("A − B": mean ± s.e. (n)); clear
    differences (two standard errors or more) in bold; the Average row last."""
    rows = []
    for (env, kind), g in diffs.groupby(["env", "kind"], sort=False):
        row = {"Dataset": dataset_label(env, kind)}
        for r in g.itertuples():
            row[f"{r.a} − {r.b}"] = _diff_cell(paper.Difference(r.mean, r.se, r.n))
        rows.append(row)
    avg = {"Dataset": "Average"}
    for (a, b), d in average_differences(diffs).items():
        avg[f"{a} − {b}"] = _diff_cell(d)
    return pd.DataFrame([*rows, avg])


def verdict(diffs: pd.DataFrame, summary: pd.DataFrame) -> paper.Verdict:
    """The paper: TT (quantile) level with the best offline-RL baselines and far above BC.
    Here: reproduced when TT (quantile) is clearly above BC and not clearly below IQL on
    average; partly when one of the two holds."""
    avg = average_differences(diffs)
    means = average_scores(summary)
    claim = (
        f"TT (quantile) averages {paper.paper_value('d4rl', 'TT (quantile)', '', 'average'):.1f}"
        f" on the nine D4RL datasets, level with CQL "
        f"({paper.paper_value('d4rl', 'CQL', '', 'average'):.1f}) and far above BC "
        f"({paper.paper_value('d4rl', 'BC', '', 'average'):.1f})"
    )
    ours = ", ".join(f"{m} {v:.1f}" for m, v in means.items())
    n_datasets = len(summary[["env", "kind"]].drop_duplicates())
    ours = f"averages over {n_datasets} of our datasets: {ours}"
    vs_bc, vs_iql = avg.get(("TT (quantile)", "BC")), avg.get(("TT (quantile)", "IQL"))
    if vs_bc is None or vs_iql is None:
        return paper.Verdict(
            "d4rl",
            claim,
            ours,
            "not at this scale",
            "TT (quantile), BC or IQL was not run, so the ranking is untested.",
        )
    holds = [vs_bc.sign > 0, vs_iql.sign >= 0]
    word = paper.share_verdict(sum(holds), 2)
    why = (
        f"TT (quantile) − BC = {vs_bc.text()}, TT (quantile) − IQL = {vs_iql.text()} "
        f"(mean over datasets of paired episode differences; a difference counts when it "
        f"is at least two standard errors)."
    )
    return paper.Verdict("d4rl", claim, ours, word, why)
