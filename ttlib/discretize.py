"""Per-dimension discretizers that turn continuous transitions into tokens.

Every dimension of the joined transition [s, a, r, V] gets its own K bins, placed as the paper
compares: equal-width (:class:`UniformDiscretizer`) or equal-mass (:class:`QuantileDiscretizer`).
Out-of-range values are clipped into the first or last bin (planning can visit states a little
outside the data); a constant dimension decodes to the constant, never to NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ttlib.errors import CheckpointError

STATISTICS = ("centre", "mean")


class Discretizer:
    """Shared encode / decode logic; subclasses only decide where the edges go."""

    kind = "base"

    def __init__(self, n_bins: int = 100):
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        self.n_bins = n_bins
        self.edges: np.ndarray | None = None  # (D, K+1), non-decreasing per row
        self.bin_means: np.ndarray | None = None  # (D, K) mean of the training data per bin

    def _edges(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, x: np.ndarray) -> Discretizer:
        """Place the bins on data ``x`` of shape (n, D); returns ``self``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"fit expects a non-empty (n, D) array, got shape {x.shape}")
        if not np.isfinite(x).all():
            bad = np.unique(np.argwhere(~np.isfinite(x))[:, 1]).tolist()
            raise ValueError(f"cannot fit a discretizer on NaN/inf values (dimensions {bad})")
        self.edges = self._edges(x)
        ids = self.encode(x)
        counts = np.zeros((x.shape[1], self.n_bins))
        sums = np.zeros((x.shape[1], self.n_bins))
        for d in range(x.shape[1]):
            counts[d] = np.bincount(ids[:, d], minlength=self.n_bins)
            sums[d] = np.bincount(ids[:, d], weights=x[:, d], minlength=self.n_bins)
        centres = self.centres
        # Empty bins fall back to their centre so that "mean" decoding is always defined.
        self.bin_means = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        return self

    def _check_fitted(self) -> np.ndarray:
        if self.edges is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(data) first")
        return self.edges

    @property
    def dim(self) -> int:
        return self._check_fitted().shape[0]

    @property
    def centres(self) -> np.ndarray:
        e = self._check_fitted()
        return 0.5 * (e[:, :-1] + e[:, 1:])

    def encode(self, x: np.ndarray, dims: Sequence[int] | slice | None = None) -> np.ndarray:
        """Bin ids in [0, K-1] of values (..., D') of dimensions ``dims``: the last edge each
        value reaches, clipped (below the minimum: bin 0; above the maximum: bin K-1)."""
        edges = self._check_fitted()
        if dims is not None:
            edges = edges[dims]
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != edges.shape[0]:
            raise ValueError(f"expected {edges.shape[0]} dimensions, got {x.shape[-1]}")
        flat = x.reshape(-1, edges.shape[0])
        ids = np.empty(flat.shape, dtype=np.int64)
        for d in range(edges.shape[0]):
            ids[:, d] = np.searchsorted(edges[d], flat[:, d], side="right") - 1
        return np.clip(ids, 0, self.n_bins - 1).reshape(x.shape)

    def _table(self, statistic: str) -> np.ndarray:
        if statistic == "centre":
            return self.centres
        if statistic == "mean":
            if self.bin_means is None:
                raise RuntimeError("bin means are unknown for this discretizer; use 'centre'")
            return self.bin_means
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {STATISTICS}")

    def decode(
        self,
        ids: np.ndarray,
        dims: Sequence[int] | slice | None = None,
        statistic: str = "centre",
    ) -> np.ndarray:
        """Values of bin ids (..., D'): bin centres, or the training mean per bin; the stop
        token K decodes as the last bin."""
        table = self._table(statistic)
        if dims is not None:
            table = table[dims]
        ids = np.clip(np.asarray(ids, dtype=np.int64), 0, self.n_bins - 1)
        if ids.shape[-1] != table.shape[0]:
            raise ValueError(f"expected {table.shape[0]} dimensions, got {ids.shape[-1]}")
        return np.take_along_axis(table, ids.reshape(-1, table.shape[0]).T, axis=1).T.reshape(
            ids.shape
        )

    def expectation(
        self, probs: torch.Tensor, dims: Sequence[int] | slice, statistic: str = "centre"
    ) -> torch.Tensor:
        """E[value] under a categorical (..., D', K or K+1) over bins. The stop-token mass is
        dropped without renormalising, as in the original: a model that believes the episode
        ends predicts a smaller expected reward."""
        table = torch.as_tensor(
            self._table(statistic)[dims], dtype=probs.dtype, device=probs.device
        )
        return (probs[..., : self.n_bins] * table).sum(-1)

    def state_dict(self) -> dict:
        """Tensors and plain types only, so checkpoints load with ``weights_only=True``."""
        self._check_fitted()
        return {
            "kind": self.kind,
            "n_bins": self.n_bins,
            "edges": torch.from_numpy(self.edges.copy()),
            "bin_means": torch.from_numpy(self.bin_means.copy()),
        }

    @staticmethod
    def from_state_dict(state: dict) -> Discretizer:
        """Rebuild a discretizer; a state that is not one (it comes from a file) is a
        CheckpointError, not a KeyError or a discretizer that fails at its first encode."""
        if not isinstance(state, dict) or not {"kind", "n_bins", "edges", "bin_means"} <= set(
            state
        ):
            raise CheckpointError("discretizer state lacks kind, n_bins, edges or bin_means")
        cls = DISCRETIZERS.get(state["kind"]) if isinstance(state["kind"], str) else None
        if cls is None:
            raise CheckpointError(f"unknown discretizer kind {state['kind']!r}")
        edges, means, n_bins = state["edges"], state["bin_means"], state["n_bins"]
        if not (isinstance(edges, torch.Tensor) and isinstance(means, torch.Tensor)):
            raise CheckpointError("discretizer state: edges and bin_means must be tensors")
        fits = isinstance(n_bins, int) and n_bins >= 2 and edges.ndim == 2 and edges.shape[1] >= 2
        if not fits or tuple(means.shape) != (edges.shape[0], n_bins):
            raise CheckpointError(
                f"discretizer state: n_bins {n_bins!r} with edges of shape {tuple(edges.shape)} "
                f"and bin_means of shape {tuple(means.shape)}"
            )
        disc = cls(n_bins)
        disc.edges = edges.numpy().astype(np.float64)
        disc.bin_means = means.numpy().astype(np.float64)
        return disc


class UniformDiscretizer(Discretizer):
    """K equal-width bins from the per-dimension minimum to the maximum."""

    kind = "uniform"

    def _edges(self, x: np.ndarray) -> np.ndarray:
        lo, hi = x.min(0), x.max(0)
        return np.linspace(lo, hi, self.n_bins + 1, axis=1)


class QuantileDiscretizer(Discretizer):
    """K equal-mass bins: edge i is the (i/K)-th order statistic (the original's
    ``sort(x)[::n/K]``), the last edge the maximum; a value on tied edges takes the last bin."""

    kind = "quantile"

    def _edges(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        s = np.sort(x, axis=0)
        idx = (np.arange(self.n_bins) * n) // self.n_bins
        return np.concatenate([s[idx], s[-1:]], axis=0).T


DISCRETIZERS: dict[str, type[Discretizer]] = {
    "uniform": UniformDiscretizer,
    "quantile": QuantileDiscretizer,
}


def relative_goal_bins(goal_bins, from_bins, n_bins: int):
    """Goal tokens relative to a state: each goal bin minus the state's bin of the same dim,
    clipped to [-n_bins // 2, n_bins - 1 - n_bins // 2] and shifted into [0, n_bins), so the
    tokens stay in the goal embedding's range (arrays or tensors of equal shape). Clipping
    keeps the direction of a far goal and drops its distance."""
    half = n_bins // 2
    return (goal_bins - from_bins).clip(-half, n_bins - 1 - half) + half


def make_discretizer(kind: str, n_bins: int = 100) -> Discretizer:
    """Build an unfitted discretizer by name ('uniform' or 'quantile')."""
    if kind not in DISCRETIZERS:
        raise ValueError(f"unknown discretizer {kind!r}; choose one of {sorted(DISCRETIZERS)}")
    return DISCRETIZERS[kind](n_bins)
