"""The arithmetic of the compute study: training FLOPs, the log-linear fit, and where it leads.

Score is fitted against log10(training tokens) by ordinary least squares over the study's
trained models (one point per model: the mean score of its evaluation episodes), with the
standard errors of slope and intercept from the residuals (n - 2 degrees of freedom: two
parameters were fitted). The token count at which the fitted line reaches a target score
(the paper's) comes with Fieller's interval at two standard errors, the book's noise rule:
the set of token counts where the line is within two standard errors of the target. That set
is a bounded interval only when the slope is more than two standard errors from zero;
otherwise the crossing is "not determinable". Beyond the largest measured token count it is
an extrapolation, and labelled so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ttlib.model import GPTConfig

K_SE = 2.0  # the book's noise rule: a difference counts at two standard errors

# The original trains n_epochs = 1e6 / |D| x n_epochs_ref passes over |D| windows
# (config/offline.py, scripts/train.py), so every dataset gets about 1e6 x n_epochs_ref windows
# of block_size tokens, ~12B tokens; hopper and walker2d medium-replay get 80, the others 50.
N_EPOCHS_REF = {("hopper", "medium-replay"): 80, ("walker2d", "medium-replay"): 80}
N_EPOCHS_REF_DEFAULT = 50
WINDOWS_PER_EPOCH_REF = 1_000_000


def paper_tokens(env: str, kind: str, block_size: int) -> int:
    """Training tokens of the paper's model of ``env``/``kind`` (windows x block size)."""
    epochs = N_EPOCHS_REF.get((env, kind), N_EPOCHS_REF_DEFAULT)
    return epochs * WINDOWS_PER_EPOCH_REF * block_size


def train_flops_per_token(c: GPTConfig) -> float:
    """Model FLOPs of one training token: 6 x (12·L·E² + (K+1)·E) for the linear layers and
    the one output head a position uses (forward 2x, backward 4x the multiply-adds), plus
    6·L·E·(T+1) for attention over the causal triangle (benchmarks/bench_training.py)."""
    L, E, T = c.n_layer, c.n_embd, c.block_size
    return 6 * (12 * L * E * E + (c.n_bins + 1) * E) + 6 * L * E * (T + 1)


@dataclass(frozen=True)
class LogFit:
    """score ≈ intercept + slope · log10(tokens), fitted on ``n`` points."""

    slope: float
    intercept: float
    slope_se: float
    intercept_se: float
    cov: float  # covariance of intercept and slope
    n: int
    x_range: tuple[float, float]  # log10 tokens of the first and last point

    @property
    def slope_clear(self) -> bool:
        """The slope is at least two standard errors from zero (the noise rule)."""
        return bool(np.isfinite(self.slope_se) and abs(self.slope) >= K_SE * self.slope_se)

    def predict(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """The fitted line at ``tokens`` and the standard error of that line (not of a new
        point): sqrt(var a + x² var b + 2x cov(a, b))."""
        x = np.log10(np.asarray(tokens, dtype=np.float64))
        var = self.intercept_se**2 + x**2 * self.slope_se**2 + 2 * x * self.cov
        return self.intercept + self.slope * x, np.sqrt(np.maximum(var, 0.0))


def fit_log_tokens(tokens: Sequence[float], scores: Sequence[float]) -> LogFit:
    """OLS of ``scores`` on log10(``tokens``); standard errors from the residuals (ddof = 2).

    Needs at least three points at two or more token counts (with two, the residuals are
    zero and say nothing about the noise): a ValueError names what is missing.
    """
    x = np.log10(np.asarray(tokens, dtype=np.float64))
    y = np.asarray(scores, dtype=np.float64)
    n = len(x)
    if n < 3 or len(np.unique(x)) < 2:
        raise ValueError(f"a fit needs >= 3 points at >= 2 token counts; got {n} points")
    X = np.column_stack([np.ones(n), x])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    sigma2 = float(resid @ resid) / (n - 2)
    cov = sigma2 * np.linalg.inv(X.T @ X)
    return LogFit(
        slope=float(coef[1]),
        intercept=float(coef[0]),
        slope_se=float(np.sqrt(cov[1, 1])),
        intercept_se=float(np.sqrt(cov[0, 0])),
        cov=float(cov[0, 1]),
        n=n,
        x_range=(float(x.min()), float(x.max())),
    )


@dataclass(frozen=True)
class Crossing:
    """Where the fitted line reaches ``target``: ``tokens`` (the point estimate) and the
    interval where the line is within two standard errors of the target, or why not."""

    target: float
    tokens: float | None
    low: float | None
    high: float | None
    extrapolation: bool  # beyond the largest token count measured
    reason: str  # "" when determinable

    @property
    def determinable(self) -> bool:
        return self.tokens is not None

    def text(self) -> str:
        if not self.determinable:
            return f"not determinable: {self.reason}"
        label = "extrapolation: " if self.extrapolation else ""
        return (
            f"{label}~{tokens_text(self.tokens)} tokens "
            f"(2-s.e. interval {tokens_text(self.low)} to {tokens_text(self.high)})"
        )


_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def tokens_text(t: float) -> str:
    """A token count with a unit: 3M, 12.4B; from 1000T on a power of ten (an extrapolated
    interval's far end): 2.07×10²⁵."""
    if t >= 1e15:
        mantissa, exponent = f"{t:.2e}".split("e")
        return f"{float(mantissa):.3g}×10{str(int(exponent)).translate(_SUPERSCRIPT)}"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if t >= size:
            return f"{t / size:.3g}{unit}"
    return f"{t:.3g}"


def crossing(fit: LogFit, target: float) -> Crossing:
    """The token count where ``fit`` reaches ``target``, with Fieller's 2-s.e. interval.

    The interval solves (a + b·x − target)² ≤ k²·(var a + 2x cov + x² var b) for x = log10
    tokens, k = 2: bounded exactly when b² > k² var b, i.e. when the slope is clear.
    """

    def none(reason: str) -> Crossing:
        return Crossing(target, None, None, None, False, reason)

    a, b, k2 = fit.intercept, fit.slope, K_SE**2
    if not fit.slope_clear:
        return none(f"the slope ({b:.2f} ± {fit.slope_se:.2f} per decade) is within two s.e. of 0")
    if b < 0:
        return none(f"the score falls with more tokens ({b:.2f} ± {fit.slope_se:.2f} per decade)")
    d = a - target
    qa = b * b - k2 * fit.slope_se**2
    qb = 2 * (d * b - k2 * fit.cov)
    qc = d * d - k2 * fit.intercept_se**2
    disc = max(0.0, qb * qb - 4 * qa * qc)  # >= 0 in exact arithmetic: f(x0) <= 0 < qa
    x0 = -d / b
    roots = sorted(((-qb - math.sqrt(disc)) / (2 * qa), (-qb + math.sqrt(disc)) / (2 * qa)))
    with np.errstate(over="ignore"):  # a flat-ish slope can put the crossing past 1e308
        t0, low, high = (float(np.power(10.0, x)) for x in (x0, *roots))
    return Crossing(target, t0, low, high, extrapolation=x0 > fit.x_range[1], reason="")
