"""The verdicts of the prediction, attention, imitation and goal-reaching pages.

Each function turns an experiment's result tables into a :class:`~ttlib.experiments.paper.Verdict`
with the book's noise rule (a difference counts when it is at least two standard errors of
that difference, sample standard deviation with ddof = 1). The D4RL and maze verdicts live
beside their tables, in ``d4rl_report`` and ``maze_q_report``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ttlib.evaluate import mean_se
from ttlib.experiments.paper import (
    Verdict,
    independent_difference,
    paired_difference,
    paper_value,
    share_verdict,
)


def prediction(final_errors: dict[str, dict[str, np.ndarray]], horizon: int) -> Verdict:
    """``final_errors[env][model]``: each held-out trajectory's error after ``horizon`` steps.

    The paper: TT's open-loop error stays below a single-step model's. Per environment the
    MLP's error minus TT (argmax)'s is paired over trajectories, with the longest-trained TT
    of that environment (``"TT (argmax), longer"`` where the page trained one); reproduced when
    TT is clearly lower in every environment, partly in some."""
    claim = (
        "over a 100-step open-loop rollout TT stays close to the true states while a "
        "single-step model's error compounds (a figure; no number is printed)"
    )
    longer = "TT (argmax), longer"
    tt = {env: longer if longer in e else "TT (argmax)" for env, e in final_errors.items()}
    diffs = {env: paired_difference(e["MLP"], e[tt[env]]) for env, e in final_errors.items()}
    ours = "; ".join(
        f"{env}: median error after {horizon} steps {tt[env]} "
        f"{np.median(e[tt[env]]):.2f}, MLP {np.median(e['MLP']):.2f}"
        for env, e in final_errors.items()
    )
    word = share_verdict(sum(d.sign > 0 for d in diffs.values()), len(diffs))
    why = " ".join(
        f"{env}: MLP − {tt[env]} = {d.text(2)} (paired over held-out trajectories)."
        for env, d in diffs.items()
    )
    return Verdict("prediction", claim, ours, word, why + " Positive means TT is closer.")


def attention(per_window: pd.DataFrame) -> Verdict:
    """``per_window``: one row per (window, layer, head) with ``markov``, ``smoothing`` and
    their ``chance_*`` levels. A pattern is present when the head with the largest mean share
    is at least 1.5 times its chance level and above it by two standard errors over windows."""
    claim = (
        "trained heads attend mostly to the last transition (Markovian) or to the same "
        "dimension of earlier transitions (smoothing)"
    )
    found, parts, texts = 0, [], []
    for pattern in ("markov", "smoothing"):
        mean = per_window.groupby(["layer", "head"])[pattern].mean()
        layer, head = mean.idxmax()
        best = per_window[(per_window["layer"] == layer) & (per_window["head"] == head)]
        chance = float(best[f"chance_{pattern}"].iloc[0])
        d = paired_difference(best[pattern], np.full(len(best), chance))
        ratio = float(best[pattern].mean()) / chance
        found += bool(d.sign > 0 and ratio >= 1.5)
        parts.append(
            f"{pattern}: layer {layer} head {head}, share {best[pattern].mean():.2f} "
            f"against {chance:.2f} for uniform attention ({ratio:.1f}×)"
        )
        texts.append(f"{pattern}: share − chance = {d.text(3)} over windows")
    word = share_verdict(found, 2)
    why = "; ".join(texts) + ". A pattern counts at 1.5× chance and two standard errors."
    return Verdict("attention", claim, "; ".join(parts), word, why)


def imitation(per_episode: pd.DataFrame) -> Verdict:
    """``per_episode``: env, agent ("TT (likelihood)", "BC", "expert data"), score. The
    paper: likelihood beam search scores as well as the expert. Per environment TT matches
    the expert data when TT − data is not clearly negative and its standard error is at most
    a tenth of the data's score (so a 10 % shortfall would show)."""
    claim = (
        f"likelihood beam search on expert data scores "
        f"{paper_value('imitation', 'TT (likelihood)', 'hopper', 'expert'):.0f} on Hopper "
        f"and {paper_value('imitation', 'TT (likelihood)', 'walker2d', 'expert'):.0f} on "
        "Walker2d, as well as the expert"
    )
    matches, parts, texts = 0, [], []
    for env, g in per_episode.groupby("env", sort=False):
        tt = g[g["agent"] == "TT (likelihood)"]["score"].to_numpy()
        data = g[g["agent"] == "expert data"]["score"].to_numpy()
        d = independent_difference(tt, data)
        matches += bool(d.sign >= 0 and d.se <= 0.1 * abs(data.mean()))
        parts.append(f"{env}: TT {tt.mean():.1f}, expert data {data.mean():.1f}")
        texts.append(f"{env}: TT − data = {d.text()}")
    word = share_verdict(matches, len(parts))
    why = "; ".join(texts) + (
        ". TT matches when it is not clearly below the data and the "
        "error is small enough to see a 10 % shortfall."
    )
    return Verdict("imitation", claim, "; ".join(parts), word, why)


def goal_reaching(
    tt_success, controller_success, variant: tuple[str, object] | None = None
) -> Verdict:
    """Success (0/1) per start/goal pair for TT and the data's controller on the same pairs.
    Reproduced when TT clearly succeeds and is not clearly below the controller; partly when
    it clearly succeeds but less often than the controller. ``variant`` (a label and its
    successes on the same pairs): a TT changed by us, reported beside the verdict, which is
    the paper's method's alone."""
    tt, ctrl = np.asarray(tt_success, float), np.asarray(controller_success, float)
    claim = (
        "a goal placed before the trajectory steers beam search into other rooms (a "
        "four-rooms figure; on MiniGrid-MultiRoom "
        f"{paper_value('goal_reaching', 'TT (goal)', 'minigrid-multiroom'):.0f}% success)"
    )
    ours = (
        f"TT reached {100 * tt.mean():.0f}% of {len(tt)} cross-room goals, the data's "
        f"controller {100 * ctrl.mean():.0f}%"
    )
    above_zero = paired_difference(100 * tt, np.zeros_like(tt))
    gap = paired_difference(100 * ctrl, 100 * tt)
    word = (
        "not at this scale" if above_zero.sign <= 0 else "partly" if gap.sign > 0 else "reproduced"
    )
    why = (
        f"TT success {above_zero.text()} points; controller − TT = {gap.text()} points, "
        "paired over start/goal pairs (a difference counts at two standard errors)."
    )
    if variant is not None:
        label, success = variant[0], np.asarray(variant[1], float)
        m, se = mean_se(100 * success)
        why += f" Changed by us ({label}), TT reached {m:.0f} ± {se:.1f} % (n = {len(success)})."
    return Verdict("goal_reaching", claim, ours, word, why)
