"""What the locomotion data is: the behaviour policies' learning curves and each dataset's
returns, beside D4RL's reference values (``results/data/d4rl_reference.csv``, each with its
source). ``ttlib data-summary`` writes the table and both figures under ``results/data/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ttlib.datagen.datasets_gen import parse_dataset_id, summarize_returns
from ttlib.envs import LOCOMOTION_ENVS, normalized_score

REFERENCE_CSV = "results/data/d4rl_reference.csv"


def d4rl_reference(path: str | Path = REFERENCE_CSV) -> pd.DataFrame:
    """D4RL's dataset sizes and normalised means, one row per (env, kind), with sources."""
    return pd.read_csv(path)


def with_reference(summary: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """``summary`` (one row per dataset id) joined with D4RL's values for the same env/kind."""
    parts = pd.DataFrame(
        [parse_dataset_id(d) for d in summary["dataset_id"]],
        columns=["env", "kind"],
        index=summary.index,
    )
    ref = reference.rename(
        columns={
            "normalized_mean": "d4rl_normalized_mean",
            "transitions": "d4rl_transitions",
            "source": "d4rl_source",
        }
    )
    return pd.concat([summary, parts], axis=1).merge(ref, on=["env", "kind"], how="left")


def learning_curves(policy_dir: str | Path = "results/policies") -> pd.DataFrame:
    """Every evaluated SAC chunk of every env: step, mean return and its normalised score.

    Read from ``policies.json`` where the policies are final, or from the last milestone
    (``sac_milestone.json``) of a run that has trained further since; ``final`` says which.
    """
    rows = []
    for env in LOCOMOTION_ENVS:
        folder = Path(policy_dir) / env
        final = folder / "policies.json"
        found = [p for p in (final, folder / "sac_milestone.json") if p.exists()]
        if not found:
            continue
        infos = {p: json.loads(p.read_text()) for p in found}
        src = max(found, key=lambda p: infos[p]["evaluations"][-1]["step"])  # final on ties
        if len(found) == 2 and _other_run(*(infos[p]["evaluations"] for p in found)):
            src = found[1]  # a new run has started since the policies were chosen
        info = infos[src]
        chosen = {info[k]["step"]: k for k in ("medium", "expert") if k in info}
        for e in info["evaluations"]:
            rows.append(
                {
                    "env": env,
                    "step": e["step"],
                    "return_mean": e["mean"],
                    "normalized": float(normalized_score(env, e["mean"])),
                    "chosen_as": chosen.get(e["step"], ""),
                    "final": src is final,
                }
            )
    return pd.DataFrame(rows)


def _other_run(final: list[dict], milestone: list[dict]) -> bool:
    """Whether a milestone's evaluations disagree with the final ones at a step both have."""
    means = {e["step"]: e["mean"] for e in final}
    return any(e["step"] in means and means[e["step"]] != e["mean"] for e in milestone)


def plot_learning_curves(curves: pd.DataFrame, reference: pd.DataFrame):
    """One panel per env: normalised return per chunk, D4RL's medium and expert means dashed."""
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(curves["env"]))
    fig, axes = plt.subplots(1, len(envs), figsize=(4 * len(envs), 3.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        c = curves[curves["env"] == env]
        ax.plot(c["step"] / 1e3, c["normalized"], color="C0", lw=1.5, label="SAC (ours)")
        for kind, colour in (("medium", "C1"), ("expert", "C2")):
            picked = c[c["chosen_as"] == kind]
            ax.scatter(picked["step"] / 1e3, picked["normalized"], color=colour, zorder=3)
            ref = reference[(reference["env"] == env) & (reference["kind"] == kind)]
            if len(ref) and np.isfinite(ref["normalized_mean"].iloc[0]):
                ax.axhline(
                    ref["normalized_mean"].iloc[0],
                    color=colour,
                    ls="--",
                    lw=1,
                    label=f"D4RL {kind}",
                )
        state = "final" if c["final"].all() else "training"
        ax.set(title=f"{env} ({state})", xlabel="env steps (thousands)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("normalised return (x100)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    return fig


def plot_returns(returns: pd.DataFrame, reference: pd.DataFrame):
    """Box plots of episode returns per dataset, D4RL's mean of the same dataset as a red tick."""
    import matplotlib.pyplot as plt

    ids = sorted(returns["dataset_id"].unique())
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(ids) + 1.2))
    data = [returns.loc[returns["dataset_id"] == i, "normalized"] for i in ids]
    ax.boxplot(data, vert=False, tick_labels=[i.removeprefix("ttlib/") for i in ids], widths=0.6)
    ref = with_reference(pd.DataFrame({"dataset_id": ids}), reference)
    ys = np.arange(1, len(ids) + 1)
    ok = ref["d4rl_normalized_mean"].notna().to_numpy()
    ax.scatter(
        ref["d4rl_normalized_mean"][ok], ys[ok], marker="|", s=300, color="C3", label="D4RL mean"
    )
    ax.set_xlabel("episode return, D4RL-normalised (x100)")
    # above the axes, right-aligned: off the data, and at a fixed place whatever the height
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, borderaxespad=0.2)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def compact_table(table: pd.DataFrame) -> pd.DataFrame:
    """Six columns for the book: size and normalised mean, ours beside D4RL's, and for goal
    datasets (AntMaze) the share of episodes whose ant reached the goal it was sent to."""

    def fmt(x, spec: str) -> str:
        return "" if pd.isna(x) else format(x, spec)

    return pd.DataFrame(
        {
            "dataset": table["dataset_id"].str.removeprefix("ttlib/"),
            "transitions": [fmt(x, ",.0f") for x in table["transitions"]],
            "D4RL transitions": [fmt(x, ",.0f") for x in table["d4rl_transitions"]],
            "normalised mean": [fmt(x, ".1f") for x in table["normalized_score_mean"]],
            "D4RL normalised mean": [fmt(x, ".0f") for x in table["d4rl_normalized_mean"]],
            "goal reached (%)": [fmt(100 * x, ".1f") for x in table["success_rate"]],
        }
    )


def write_report(
    returns: pd.DataFrame, out: str | Path, policy_dir: str | Path = "results/policies"
):
    """The datasets' summary (from :func:`episode_returns`) with D4RL's values beside it as
    ``out`` (CSV), and next to it the policies' learning curves (CSV, PNG) and the locomotion
    datasets' return distributions (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    out = Path(out)
    folder = out.parent
    folder.mkdir(parents=True, exist_ok=True)
    reference = d4rl_reference(folder / Path(REFERENCE_CSV).name)
    table = with_reference(summarize_returns(returns), reference)
    table.to_csv(out, index=False, float_format="%.4g")
    compact_table(table).to_csv(folder / "datasets_table.csv", index=False)
    curves = learning_curves(policy_dir)
    if len(curves):
        curves.to_csv(folder / "policy_learning_curves.csv", index=False, float_format="%.4g")
        plot_learning_curves(curves, reference).savefig(
            folder / "policy_learning_curves.png", dpi=120, bbox_inches="tight"
        )
    locomotion = returns[returns["env"].isin(list(LOCOMOTION_ENVS))]
    if len(locomotion):
        plot_returns(locomotion, reference).savefig(
            folder / "returns.png", dpi=120, bbox_inches="tight"
        )
    return table
