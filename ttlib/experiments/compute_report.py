"""What the compute-study page shows: per-point scores, the fits, the equal-FLOPs comparison,
the verdict and the figures, all computed from the study's episodes (nothing typed by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ttlib.evaluate import mean_se
from ttlib.experiments import paper
from ttlib.experiments.compute_fit import Crossing, LogFit, crossing, fit_log_tokens, tokens_text
from ttlib.experiments.d4rl_report import dataset_label, paper_table

TT = "TT (quantile)"  # the paper's column our runs correspond to (quantile bins)
REFERENCE_STYLES = {"data": ("grey", ":"), "BC": ("tab:orange", "--"), "IQL": ("tab:green", "-.")}


def point_summary(episodes: pd.DataFrame) -> pd.DataFrame:
    """Mean ± s.e. (ddof = 1) of every kept point: one row per model, seed and step."""
    keys = ["env", "kind", "model", "train_seed", "step", "tokens", "flops", "paper_tokens"]
    rows = []
    for key, g in episodes.groupby(keys, sort=True):
        m, se = mean_se(g["score"].to_numpy())
        rows.append({**dict(zip(keys, key, strict=True)), "score": m, "se": se, "n": len(g)})
    return pd.DataFrame(rows)


def reference_summary(references: pd.DataFrame) -> pd.DataFrame:
    """Mean ± s.e. of the data's episodes and of BC's and IQL's, per dataset."""
    rows = []
    for (env, kind, method), g in references.groupby(["env", "kind", "method"], sort=False):
        m, se = mean_se(g["score"].to_numpy())
        rows.append({"env": env, "kind": kind, "method": method, "score": m, "se": se, "n": len(g)})
    return pd.DataFrame(rows)


def paper_score(env: str, kind: str) -> tuple[float, float]:
    """The paper's TT (quantile) score and standard error on ``env``/``kind``."""
    row = paper_table([TT]).set_index(["env", "kind"]).loc[(env, kind)]
    return float(row["score"]), float(row["se"])


def fits(points: pd.DataFrame, model: str) -> dict[tuple[str, str], tuple[LogFit, Crossing]]:
    """Per dataset: the fit of ``model``'s points (all seeds) and where it meets the paper."""
    out = {}
    for (env, kind), g in points[points["model"] == model].groupby(["env", "kind"], sort=False):
        if len(g) < 3:
            continue  # fit_log_tokens needs three points
        fit = fit_log_tokens(g["tokens"], g["score"])
        out[env, kind] = fit, crossing(fit, paper_score(env, kind)[0])
    return out


def fit_table(found: dict) -> pd.DataFrame:
    """One row per dataset: slope per decade of tokens, points, the paper's score, and where
    the trend reaches it."""
    rows = []
    for (env, kind), (fit, cross) in found.items():
        slope = paper.cell(fit.slope, fit.slope_se)
        rows.append(
            {
                "Dataset": dataset_label(env, kind),
                "score per ×10 tokens": f"**{slope}**" if fit.slope_clear else slope,
                "models fitted": fit.n,
                "paper TT": paper.cell(*paper_score(env, kind)),
                "reaches the paper at": cross.text(),
            }
        )
    return pd.DataFrame(rows)


def _paired(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """The scores of ``a`` and ``b`` side by side on the reset seeds both met (columns 0, 1)."""
    return pd.concat([a.set_index("seed")["score"], b.set_index("seed")["score"]], axis=1,
                     join="inner")  # fmt: skip


def equal_flops(episodes: pd.DataFrame, base: str, large: str) -> pd.DataFrame:
    """Each point of the ``large`` model against the ``base`` model's point of the same
    dataset and seed nearest in training FLOPs: ``large`` minus ``base``, paired over the
    evaluation episodes (both meet the same reset seeds). Columns: env, kind, flops,
    base_tokens, large_tokens, mean, se, n, clear."""
    rows = []
    for (env, kind, _seed), g in episodes.groupby(["env", "kind", "train_seed"], sort=False):
        small = g[g["model"] == base]
        if small.empty:
            continue
        budgets = small["flops"].unique()
        for flops, big in g[g["model"] == large].groupby("flops"):
            ref = small[small["flops"] == budgets[np.argmin(abs(np.log(budgets / flops)))]]
            pair = _paired(big, ref)
            d = paper.paired_difference(pair.iloc[:, 0], pair.iloc[:, 1])
            rows.append(
                {
                    "env": env,
                    "kind": kind,
                    "flops": float(flops),
                    "base_tokens": int(ref["tokens"].iloc[0]),
                    "large_tokens": int(big["tokens"].iloc[0]),
                    "mean": d.mean,
                    "se": d.se,
                    "n": d.n,
                    "clear": d.clear,
                }
            )
    return pd.DataFrame(rows)


def equal_flops_table(diffs: pd.DataFrame, base: str, large: str) -> pd.DataFrame:
    """The comparison for the page: clear differences (two s.e. or more) in bold."""
    rows = []
    for r in diffs.itertuples():
        d = paper.Difference(r.mean, r.se, r.n)
        rows.append(
            {
                "Dataset": dataset_label(r.env, r.kind),
                "training FLOPs": f"{r.flops:.2e}",
                f"{base} tokens": tokens_text(r.base_tokens),
                f"{large} tokens": tokens_text(r.large_tokens),
                f"{large} − {base}": f"**{d.text()}**" if d.clear else d.text(),
            }
        )
    return pd.DataFrame(rows)


def verdict(points: pd.DataFrame, found: dict, model: str) -> paper.Verdict:
    """reproduced when the longest-trained model of every dataset is not clearly below the
    paper's TT score (two standard errors of the difference, ours and the paper's combined),
    partly when one is, else not at this scale."""
    datasets = list(dict.fromkeys(zip(points["env"], points["kind"], strict=True)))
    claims, ours, whys, reached = [], [], [], 0
    for env, kind in datasets:
        score, se = paper_score(env, kind)
        mine = points[
            (points["env"] == env) & (points["kind"] == kind) & (points["model"] == model)
        ]
        last = mine[mine["tokens"] == mine["tokens"].max()].iloc[0]
        name = dataset_label(env, kind)
        claims.append(
            f"{score:.1f} ± {se:.1f} on {name} after ~{tokens_text(last['paper_tokens'])}"
        )
        # the paper's own standard error counts too: both means are estimates
        d = paper.Difference(last["score"] - score, float(np.hypot(last["se"], se)), int(last["n"]))
        reached += d.sign >= 0
        cell = paper.cell(last["score"], last["se"], int(last["n"]))
        ours.append(f"{name} {cell} after {tokens_text(last['tokens'])} tokens")
        cross = found[env, kind][1].text() if (env, kind) in found else "no fit (< 3 points)"
        whys.append(f"{name}: {d.text()} against the paper; the trend reaches it: {cross}")
    claim = (
        "TT (quantile) scores " + "; ".join(claims) + " training tokens (the original's "
        "recipe); the paper does not show how the score grows with training"
    )
    why = (
        "; ".join(whys) + ". A score counts as reaching the paper unless it is more than two "
        "standard errors below it; where the trend meets the paper beyond the measured "
        "tokens, that is an extrapolation of a straight line in log(tokens)."
    )
    word = paper.share_verdict(reached, len(datasets))
    return paper.Verdict("compute_study", claim, "; ".join(ours), word, why)


def plot_curves(points: pd.DataFrame, refs: pd.DataFrame, found: dict, model: str):
    """Score against training tokens per dataset: the kept points of every seed, the fitted
    line with its two-s.e. band (dashed beyond the measured tokens: an extrapolation), the
    data, BC and IQL as lines, and the paper's TT score at its training tokens."""
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(zip(points["env"], points["kind"], strict=True)))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.8), squeeze=False)
    for ax, (env, kind) in zip(axes[0], datasets, strict=True):
        mine = points[
            (points["env"] == env) & (points["kind"] == kind) & (points["model"] == model)
        ]
        for (seed, g), marker in zip(mine.groupby("train_seed"), "os^v", strict=False):
            ax.errorbar(g["tokens"], g["score"], yerr=g["se"], marker=marker, ls="none",
                        capsize=3, color="tab:blue", label=f"TT {model}, seed {seed}")  # fmt: skip
        target_tokens = float(mine["paper_tokens"].iloc[0])
        if (env, kind) in found:
            fit = found[env, kind][0]
            measured = np.geomspace(mine["tokens"].min(), mine["tokens"].max(), 50)
            beyond = np.geomspace(mine["tokens"].max(), target_tokens, 50)
            labels = ("fit ± 2 s.e.", "fit, extrapolated")
            for xs, ls, label in zip((measured, beyond), ("-", "--"), labels, strict=True):
                y, se = fit.predict(xs)
                ax.plot(xs, y, ls=ls, color="tab:blue", lw=1, label=label)
                ax.fill_between(xs, y - 2 * se, y + 2 * se, color="tab:blue", alpha=0.12, lw=0)
        score, se = paper_score(env, kind)
        ax.errorbar([target_tokens], [score], yerr=[se], marker="*", ms=12, color="black",
                    ls="none", label=f"paper {TT}")  # fmt: skip
        ref = refs[(refs["env"] == env) & (refs["kind"] == kind)]
        for r in ref.itertuples():
            colour, ls = REFERENCE_STYLES.get(r.method, ("tab:red", "-"))
            ax.axhline(r.score, color=colour, ls=ls, lw=1, label=f"{r.method} (ours)")
        ax.set(xscale="log", xlabel="training tokens", ylabel="normalised score",
               title=dataset_label(env, kind))  # fmt: skip
    legend = {}  # every label once, from whichever panel has it
    for ax in axes[0]:
        legend |= {label: h for h, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(legend.values(), legend.keys(), loc="upper center", ncol=4, frameon=False,
               bbox_to_anchor=(0.5, 1.15))  # fmt: skip
    fig.tight_layout()
    return fig


def plot_equal_flops(points: pd.DataFrame, models: tuple[str, str]):
    """Score against training FLOPs for both model sizes on the datasets that have both."""
    import matplotlib.pyplot as plt

    both = points.groupby(["env", "kind"])["model"].transform("nunique") > 1
    sub = points[both & points["model"].isin(models)]
    datasets = list(dict.fromkeys(zip(sub["env"], sub["kind"], strict=True)))
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(5, 3.6), squeeze=False)
    for ax, (env, kind) in zip(axes[0], datasets, strict=False):
        here = sub[(sub["env"] == env) & (sub["kind"] == kind)]
        for model, colour in zip(models, ("tab:blue", "tab:purple"), strict=True):
            for seed, g in here[here["model"] == model].groupby("train_seed"):
                ax.errorbar(g["flops"], g["score"], yerr=g["se"], marker="o", capsize=3,
                            color=colour, alpha=1.0 if seed == here["train_seed"].min() else 0.5,
                            label=f"TT {model}, seed {seed}")  # fmt: skip
        ax.set(xscale="log", xlabel="training FLOPs", ylabel="normalised score",
               title=dataset_label(env, kind))  # fmt: skip
        ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def paper_search_table(again: pd.DataFrame, episodes: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Points planned with the preset's search and again with the original's, paired over the
    same reset seeds: original minus preset, in bold when at least two standard errors."""
    from ttlib.experiments.d4rl_table import planner_config

    rows = []
    keys = ["env", "kind", "model", "train_seed", "step"]
    for key, big in again.groupby(keys, sort=False):
        env, kind = key[0], key[1]
        mask = np.logical_and.reduce([episodes[k] == v for k, v in zip(keys, key, strict=True)])
        small = episodes[mask]
        pair = _paired(big, small)
        d = paper.paired_difference(pair.iloc[:, 0], pair.iloc[:, 1])
        ours = planner_config(env, kind, params)
        rows.append(
            {
                "Dataset": dataset_label(env, kind),
                "tokens": tokens_text(int(big["tokens"].iloc[0])),
                "preset's search": paper.cell(*mean_se(pair.iloc[:, 1].to_numpy()), len(pair))
                + f" (H{ours.horizon}/B{ours.beam_width})",
                "original's search": paper.cell(*mean_se(pair.iloc[:, 0].to_numpy()), len(pair))
                + f" (H{big['horizon'].iloc[0]}/B{big['beam_width'].iloc[0]})",
                "original − ours": f"**{d.text()}**" if d.clear else d.text(),
            }
        )
    return pd.DataFrame(rows)
