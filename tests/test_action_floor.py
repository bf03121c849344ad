"""The action-entropy floor of the imitation page: exact bin probabilities of a SAC policy."""

import numpy as np
import torch

from ttlib.datagen.actor import SACActor
from ttlib.discretize import QuantileDiscretizer
from ttlib.experiments.action_floor import action_entropy_floor, bin_probs


def _actor(seed=0, log_std_bias=0.0):
    torch.manual_seed(seed)
    actor = SACActor(3, 2, np.array([-1.0, -0.4]), np.array([1.0, 2.0]), hidden=16).eval()
    with torch.no_grad():
        actor.log_std.bias += log_std_bias
    return actor


def test_bin_probabilities_match_the_frequencies_of_sampled_actions():
    actor, rng = _actor(), np.random.default_rng(0)
    obs = rng.standard_normal((3, 3)).astype(np.float32)
    draws = actor.act(np.repeat(obs, 20_000, 0), rng)
    disc = QuantileDiscretizer(n_bins=12)
    disc.fit(draws[:5000] * 0.9)  # outer edges inside the range: the end bins take the rest
    ids = disc.encode(draws).reshape(3, 20_000, 2)
    p = bin_probs(actor, obs, disc.edges)
    assert p.shape == (3, 2, 12)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-9)
    for s in range(3):
        for d in range(2):
            freq = np.bincount(ids[s, :, d], minlength=12) / 20_000
            np.testing.assert_allclose(p[s, d], freq, atol=0.012)


def test_floor_is_between_zero_and_ln_k_and_falls_with_the_policy_noise():
    obs = np.random.default_rng(1).standard_normal((50, 3)).astype(np.float32)
    disc = QuantileDiscretizer(n_bins=20)
    disc.fit(_actor().act(np.repeat(obs, 20, 0), np.random.default_rng(2)))
    wide = action_entropy_floor(_actor(), obs, disc.edges)
    narrow = action_entropy_floor(_actor(log_std_bias=-3.0), obs, disc.edges)
    assert np.all(wide <= np.log(20) + 1e-9) and np.all(narrow >= 0)
    assert np.all(narrow < wide - 0.5)
