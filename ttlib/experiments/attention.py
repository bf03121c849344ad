"""What the attention heads of a trained Trajectory Transformer look at.

The paper (and its blog post) describes two patterns in the attention maps: a *Markovian*
one, where a prediction draws on the immediately preceding transition, and a *smoothing*
one, where state dimension j draws on dimension j of all earlier states and actions draw on
all earlier actions. This module labels every token of a window and measures, for each head,
the share of attention mass that follows each pattern.

Conventions. A query at position q produces the logits of token q+1, so a query is judged by
the token it *predicts* (its target): its transition t and its dimension. Only queries whose
target is a state or an action dimension in transition t ≥ 1 are scored (transition 0 has no
past). Markovian keys are those of transition t-1 and the tokens of transition t already
written. Smoothing keys lie in transitions before t: dimension j of the states for a state-j
target, any action dimension for an action target. The two sets overlap in transition t-1,
so the shares are measured separately, each next to its chance level (the share a head that
spreads its attention evenly over the keys it may see would get).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

KINDS = ("state", "action", "reward", "value")


@dataclass
class TokenLayout:
    """Kind, dimension and transition of each of ``n_tokens`` positions of a window."""

    observation_dim: int
    action_dim: int
    n_tokens: int

    @property
    def transition_dim(self) -> int:
        return self.observation_dim + self.action_dim + 2

    def dim(self, pos: np.ndarray | None = None) -> np.ndarray:
        """Index within the transition of each position (default: every position)."""
        pos = np.arange(self.n_tokens) if pos is None else np.asarray(pos)
        return pos % self.transition_dim

    def step(self, pos: np.ndarray | None = None) -> np.ndarray:
        """Transition index of each position."""
        pos = np.arange(self.n_tokens) if pos is None else np.asarray(pos)
        return pos // self.transition_dim

    def kind(self, pos: np.ndarray | None = None) -> np.ndarray:
        """0 state, 1 action, 2 reward, 3 value (indices into :data:`KINDS`)."""
        d = self.dim(pos)
        N, M = self.observation_dim, self.action_dim
        return np.select([d < N, d < N + M, d == N + M], [0, 1, 2], default=3)


def pattern_masks(layout: TokenLayout) -> dict[str, np.ndarray]:
    """Boolean (T, T) key masks of both patterns and the (T,) queries that are scored.

    Row q describes the query at position q, which predicts position q+1.
    """
    T = layout.n_tokens
    q = np.arange(T)
    target = q + 1
    t_step, t_dim, t_kind = layout.step(target), layout.dim(target), layout.kind(target)
    k_step, k_dim, k_kind = layout.step(), layout.dim(), layout.kind()
    causal = q[None, :] <= q[:, None]
    earlier = k_step[None, :] < t_step[:, None]
    markov = causal & (k_step[None, :] >= t_step[:, None] - 1)
    same_state_dim = (t_kind[:, None] == 0) & (k_kind[None, :] == 0) & (k_dim == t_dim[:, None])
    prior_action = (t_kind[:, None] == 1) & (k_kind[None, :] == 1)
    smoothing = causal & earlier & (same_state_dim | prior_action)
    queries = (t_kind <= 1) & (t_step >= 1)
    return {
        "markov": markov,
        "smoothing": smoothing,
        "queries": queries,
        "state_queries": queries & (t_kind == 0),
        "action_queries": queries & (t_kind == 1),
    }


def pattern_shares(attention: torch.Tensor | np.ndarray, layout: TokenLayout) -> pd.DataFrame:
    """Share of attention mass on Markovian and on smoothing keys, per leading index.

    ``attention`` is (..., T, T) with rows summing to one (e.g. (n_layer, n_head, T, T));
    the result has one row per leading index, with columns for the index (``layer``,
    ``head`` for a 4-d input), ``markov``, ``smoothing`` (all scored queries),
    ``smoothing_state`` and ``smoothing_action`` (state or action targets only).
    """
    att = torch.as_tensor(attention, dtype=torch.float64)
    if att.shape[-2:] != (layout.n_tokens, layout.n_tokens):
        raise ValueError(
            f"attention of shape {tuple(att.shape)} does not match a {layout.n_tokens}-token window"
        )
    m = {k: torch.as_tensor(v) for k, v in pattern_masks(layout).items()}
    if not bool(m["queries"].any()):
        raise ValueError("the window needs at least two transitions to score any query")
    lead = att.shape[:-2]
    att = att.reshape(-1, layout.n_tokens, layout.n_tokens)

    def share(keys: torch.Tensor, queries: torch.Tensor) -> np.ndarray:
        mass = (att * keys).sum(-1)  # (L, T): mass of every query on those keys
        return (
            (mass[:, queries].mean(-1)).numpy()
            if bool(queries.any())
            else np.full(len(att), np.nan)
        )

    df = pd.DataFrame(
        {
            "markov": share(m["markov"], m["queries"]),
            "smoothing": share(m["smoothing"], m["queries"]),
            "smoothing_state": share(m["smoothing"], m["state_queries"]),
            "smoothing_action": share(m["smoothing"], m["action_queries"]),
        }
    )
    names = ["layer", "head"] if len(lead) == 2 else [f"i{k}" for k in range(len(lead))]
    index = np.stack(np.unravel_index(np.arange(len(df)), tuple(lead)), axis=1) if lead else None
    if index is not None:
        for k, name in reversed(list(enumerate(names))):
            df.insert(0, name, index[:, k])
    return df


def uniform_attention(layout: TokenLayout, mask_values: bool = True) -> torch.Tensor:
    """(T, T) attention spread evenly over the keys each query may see: the chance level."""
    T = layout.n_tokens
    allowed = np.tril(np.ones((T, T), dtype=bool))
    if mask_values:
        allowed &= layout.kind()[None, :] != 3
    w = torch.as_tensor(allowed, dtype=torch.float64)
    return w / w.sum(-1, keepdim=True).clamp_min(1.0)


def head_table(maps: torch.Tensor, layout: TokenLayout, mask_values: bool = True) -> pd.DataFrame:
    """Per-head shares of attention maps (n_layer, B, n_head, T, T), averaged over windows,
    with the chance levels ``chance_markov`` and ``chance_smoothing`` beside them."""
    mean = torch.as_tensor(maps).mean(1).double()  # shares are linear in the map
    df = pattern_shares(mean, layout)
    chance = pattern_shares(uniform_attention(layout, mask_values), layout).iloc[0]
    df["chance_markov"] = chance["markov"]
    df["chance_smoothing"] = chance["smoothing"]
    return df


def full_windows(dataset, n: int, seed: int = 0) -> torch.Tensor:
    """Input tokens (n, block_size) of ``n`` random training windows without padding."""
    L = dataset.cfg.n_transitions
    inside = (dataset.real[dataset.starts + L - 1] > 0).nonzero().flatten()
    if len(inside) == 0:
        raise ValueError(f"no episode of {dataset.cfg.dataset_id} is {L} transitions long")
    gen = torch.Generator().manual_seed(seed)
    pick = inside[torch.randperm(len(inside), generator=gen)[:n]]
    return dataset.batch(pick)[0]
