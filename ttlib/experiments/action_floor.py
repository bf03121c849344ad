"""The lowest action loss any model of an expert dataset can reach (the imitation page).

Our expert datasets are sampled from a SAC policy: u ~ N(mu(s), std(s)), squashed to
a = low + (tanh(u) + 1) / 2 * (high - low). Given the state, the chance that an action lands in
one of TT's bins is a difference of two Gaussian CDFs at the bin's edges mapped back through the
squashing, so the entropy of the policy *over the bins* is exact, with no sampling. A model that
had learned the policy perfectly would score exactly this cross-entropy on each action token;
TT's training loss above it is what the model has not learned yet, and below ln(K) is what it has.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + torch.special.erf(torch.as_tensor(z) / math.sqrt(2.0)).numpy())


def bin_probs(actor, obs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N, A, K) chance of each action bin under the SAC ``actor`` in each state.

    ``edges``: (A, K + 1) the discretizer's action edges in action units. Values outside the
    outer edges fall in the end bins, as ``Discretizer.encode`` clips them.
    """
    with torch.no_grad():
        mu, log_std = actor(torch.as_tensor(obs, dtype=torch.float32))
    mu, std = mu.double().numpy(), log_std.double().exp().numpy()
    low, high = actor.action_low.double().numpy(), actor.action_high.double().numpy()
    # edges in the pre-squash space; an edge outside (-1, 1) after rescaling maps to -/+inf
    unit = 2.0 * (edges - low[:, None]) / (high - low)[:, None] - 1.0
    with np.errstate(divide="ignore"):
        u = np.arctanh(np.clip(unit, -1.0, 1.0))
    u[:, 0], u[:, -1] = -np.inf, np.inf  # clipping: everything outside goes to the end bins
    cdf = _normal_cdf((u[None] - mu[..., None]) / std[..., None])  # (N, A, K + 1)
    return np.diff(cdf, axis=-1)


def action_entropy_floor(actor, obs: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(A,) the policy's entropy over the bins in nats, averaged over the states ``obs``."""
    p = bin_probs(actor, obs, edges)
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -plogp.sum(-1).mean(0)
