"""The paper's numbers, read from one sourced file, and the rule that turns ours into verdicts.

Every published number the book shows lives in ``results/paper/paper_numbers.csv``, one row
per number with the table it belongs to, the method, the value, its standard error where one
was printed, and where it comes from (the TT paper's tables, the IQL paper, D4RL). Notebooks
read and glue them from here, so no page types a paper number by hand.

The verdict helpers implement the book's noise rule: a difference between two scores counts
only when it is at least two standard errors of that difference (sample standard deviation,
ddof = 1, with the number of pairs stated).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ttlib.experiments.presets import repo_root

COLUMNS = ["table", "env", "dataset", "method", "value", "se", "source"]
VERDICTS = ("reproduced", "partly", "not at this scale")


def paper_csv() -> Path:
    return repo_root() / "results" / "paper" / "paper_numbers.csv"


@lru_cache(maxsize=1)
def _read(path: str) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["text"] = [v + (f" ± {s}" if s else "") for v, s in zip(df["value"], df["se"], strict=True)]
    for col in ("value", "se"):
        df[col] = pd.to_numeric(df[col].replace("", np.nan))
    return df


def paper_numbers(table: str | None = None) -> pd.DataFrame:
    """All published numbers (or those of one ``table``): the columns of :data:`COLUMNS`, and
    ``text``, the number as printed ("95.0 ± 0.2")."""
    df = _read(str(paper_csv())).copy()
    return df if table is None else df[df["table"] == table].reset_index(drop=True)


def paper_value(table: str, method: str, env: str = "", dataset: str = "") -> float:
    """One published number; a KeyError names what was asked when it is not in the file."""
    df = paper_numbers(table)
    hit = df[(df["method"] == method) & (df["env"] == env) & (df["dataset"] == dataset)]
    if len(hit) != 1:
        raise KeyError(f"paper number {table}/{env}/{dataset}/{method}: {len(hit)} rows")
    return float(hit["value"].iloc[0])


def d4rl_paper_table() -> pd.DataFrame:
    """The paper's D4RL locomotion scores per dataset: env, kind, method, score, se, source."""
    df = paper_numbers("d4rl")
    df = df[df["dataset"] != "average"]
    return df.rename(columns={"dataset": "kind", "value": "score"})[
        ["env", "kind", "method", "score", "se", "source"]
    ].reset_index(drop=True)


def antmaze_paper_table() -> pd.DataFrame:
    """The paper's AntMaze success rates, one row per dataset, a column per method."""
    df = paper_numbers("antmaze")
    df = df[df["dataset"] != "average"]
    wide = df.pivot(index="dataset", columns="method", values="value")
    order = list(dict.fromkeys(df["dataset"]))
    methods = [m for m in ("BC", "CQL", "IQL", "DT", "TT(+Q)") if m in wide.columns]
    wide = wide.loc[order, methods]
    wide["TT(+Q) se"] = df[df["method"] == "TT(+Q)"].set_index("dataset").loc[order, "se"]
    return wide.reset_index()


# ------------------------------------------------------------------ the noise rule
@dataclass(frozen=True)
class Difference:
    """A difference of means with its standard error and the number of pairs behind it."""

    mean: float
    se: float
    n: int

    @property
    def clear(self) -> bool:
        """At least two standard errors away from zero (never with an unknown error, never
        for a difference of exactly zero)."""
        finite = np.isfinite(self.se) and np.isfinite(self.mean)
        return bool(finite and self.mean != 0 and abs(self.mean) >= 2 * self.se)

    @property
    def sign(self) -> int:
        """+1 or -1 for a clear difference, 0 for one inside the noise."""
        return int(np.sign(self.mean)) if self.clear else 0

    def text(self, digits: int = 1) -> str:
        return f"{self.mean:+.{digits}f} ± {self.se:.{digits}f} (n = {self.n})"


def paired_difference(a, b) -> Difference:
    """Mean of ``a - b`` over matched pairs and its sample standard error (ddof = 1)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return Difference(float(d.mean()) if n else float("nan"), se, n)


def independent_difference(a, b) -> Difference:
    """Mean of ``a`` minus mean of ``b`` for unmatched samples; the two sample standard errors
    (ddof = 1) combined; n is the smaller sample."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    se = [x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else np.nan for x in (a, b)]
    return Difference(float(a.mean() - b.mean()), float(np.hypot(*se)), min(len(a), len(b)))


def mean_of_differences(diffs: list[Difference]) -> Difference:
    """The average of differences measured on separate datasets (their errors combined)."""
    k = len(diffs)
    se = float(np.sqrt(sum(d.se**2 for d in diffs)) / k)
    return Difference(float(np.mean([d.mean for d in diffs])), se, sum(d.n for d in diffs))


def cell(mean: float, se: float, n: int | None = None, digits: int = 1) -> str:
    """'mean ± se (n)' for a table cell; a number without an error stays bare."""
    if not np.isfinite(mean):
        return ""
    text = f"{mean:.{digits}f}"
    if np.isfinite(se):
        text += f" ± {se:.{digits}f}"
    return text + (f" ({n})" if n is not None else "")


# ------------------------------------------------------------------ verdicts
@dataclass
class Verdict:
    """What one experiment page and the intro's headline table say about a claim."""

    experiment: str
    paper: str  # the paper's claim in a few words, with its number
    ours: str  # our result, with its number
    verdict: str  # one of VERDICTS
    why: str  # one or two sentences

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")

    def markdown(self) -> str:
        return (
            f"**Verdict: {self.verdict}.** {self.why}\n\n"
            f"*Paper:* {self.paper}  \n*This run:* {self.ours}"
        )

    def glue(self) -> None:
        """Glue verdict, paper, ours and why as HTML (pasted here and, across pages, in the
        intro: myst-nb pastes HTML from other documents, not markdown)."""
        from IPython.display import HTML
        from myst_nb import glue

        parts = {"verdict": f"<strong>{self.verdict}</strong>", "paper": self.paper}
        parts |= {"ours": self.ours, "why": self.why}
        for key, text in parts.items():
            glue(f"{self.experiment}_{key}", HTML(_html(text)), display=False)


def _html(text: str) -> str:
    """The little markdown the verdicts use (*em*, **strong**) as HTML."""
    import re

    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*(.+?)\*", r"<em>\1</em>", text)


def share_verdict(clear_wins: int, total: int) -> str:
    """reproduced when every case agrees with the paper, partly when some do, else not."""
    if total and clear_wins == total:
        return "reproduced"
    return "partly" if clear_wins > 0 else "not at this scale"
