"""Behaviour cloning recovers a linear policy; the dynamics model predicts linear dynamics."""

import numpy as np
import pytest
import torch

from ttlib.baselines import (
    BCConfig,
    BehaviourCloning,
    DynamicsConfig,
    ProbabilisticDynamics,
    dynamics_pairs,
    train_bc,
    train_dynamics,
)
from ttlib.data import Episode

from conftest import linear_episodes

GAIN = np.array([[0.5, -1.0, 0.3], [-0.2, 0.4, 0.8]])
NOISE = 0.05


def linear_policy_episodes(n=4000, seed=0):
    """a = GAIN s + N(0, 0.05²) on uniform states."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    a = (s @ GAIN.T + NOISE * rng.normal(size=(n, 2))).astype(np.float32)
    return [
        Episode(s[i : i + 50], a[i : i + 50], np.zeros(50, np.float32), False)
        for i in range(0, n, 50)
    ]


@pytest.mark.parametrize("loss", ["mse", "gaussian"])
@pytest.mark.slow
def test_bc_recovers_a_linear_policy(loss, tmp_path):
    """The regression target is GAIN s exactly (the noise has mean 0). Its spread is 0.6, the
    noise 0.05; a fit off by 0.05 RMSE would be as wrong as the noise itself."""
    cfg = BCConfig(hidden=(64, 64), lr=1e-3, steps=1000, loss=loss)
    model = train_bc(linear_policy_episodes(), cfg, progress=False)
    s = np.random.default_rng(5).uniform(-1, 1, (500, 3))
    rmse = np.sqrt(((model.act(s) - s @ GAIN.T) ** 2).mean())
    assert rmse < 0.05
    if loss == "gaussian":  # the learned std is the data's noise
        _, log_std = model(torch.tensor(s, dtype=torch.float32))
        std = (log_std.exp() * model.act_std).mean().item()
        assert 0.6 * NOISE < std < 1.6 * NOISE
    again = BehaviourCloning.load(model.save(tmp_path / "bc.pt"))
    np.testing.assert_allclose(again.act(s), model.act(s))


@pytest.mark.slow
def test_dynamics_one_step_error_on_held_out_episodes_is_small(tmp_path):
    """s' = A s + B a is learnable exactly; r = -|s|² is smooth. Held-out mean squared errors
    must be below 1 % of the variance of Δs and 5 % of the variance of r (observed: ~0.01 %
    and ~1.5 %); a model that ignored the action would miss Δs by far more."""
    cfg = DynamicsConfig(hidden=(64, 64), steps=1500)
    model = train_dynamics(linear_episodes(40, 50, seed=0), cfg, progress=False)
    s, a, y = dynamics_pairs(linear_episodes(10, 50, seed=9))
    next_s, r, var = model.predict(torch.tensor(s), torch.tensor(a))
    mse_s = ((next_s.numpy() - (s + y[:, :2])) ** 2).mean(0)
    mse_r = ((r.numpy() - y[:, 2]) ** 2).mean()
    assert (mse_s < 0.01 * y[:, :2].var(0)).all()
    assert mse_r < 0.05 * y[:, 2].var()
    assert (var > 0).all()

    states, rewards = model.rollout(s[0], a[:10])
    assert states.shape == (11, 2) and rewards.shape == (10,)
    torch.testing.assert_close(states[1], next_s[0])  # step 1 of the rollout = predict
    batched, _ = model.rollout(s[:3], np.stack([a[:10]] * 3))
    torch.testing.assert_close(batched[0], states)
    again = ProbabilisticDynamics.load(model.save(tmp_path / "dyn.pt"))
    torch.testing.assert_close(again.rollout(s[0], a[:10])[0], states)
