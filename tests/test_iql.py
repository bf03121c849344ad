"""IQL on a two-step MDP whose expectile values are known in closed form."""

import numpy as np
import pytest
import torch

from ttlib.data import Episode
from ttlib.iql import IQL, IQLConfig, train_iql, transitions_from_episodes

ACTIONS = np.array([0.0, 0.5, 1.0])
REWARDS = np.array([0.0, 1.0, 2.0])  # r(s1, a) for the three actions in the data
GAMMA = 0.9
S0, S1 = [1.0, 0.0], [0.0, 1.0]


def expectile(values: np.ndarray, tau: float, iters: int = 100) -> float:
    """The τ-expectile of a sample: the m solving τ·E(x-m)₊ = (1-τ)·E(m-x)₊ (bisection)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(x.min()), float(x.max())
    for _ in range(iters):
        m = 0.5 * (lo + hi)
        grad = tau * np.clip(x - m, 0, None).sum() - (1 - tau) * np.clip(m - x, 0, None).sum()
        lo, hi = (m, hi) if grad > 0 else (lo, m)
    return 0.5 * (lo + hi)


def two_step_episodes(n=300, seed=0):
    """s0 --(any a, r = 0)--> s1 --(a ∈ ACTIONS equally often, r = REWARDS)--> terminal.

    Q(s1, a) = r(a); V_τ(s1) = the τ-expectile of {0, 1, 2}; Q(s0, ·) = V(s0) = γ V_τ(s1).
    """
    rng = np.random.default_rng(seed)
    return [
        Episode(
            observations=np.array([S0, S1], np.float32),
            actions=np.array([[rng.uniform()], [ACTIONS[i % 3]]], np.float32),
            rewards=np.array([0.0, REWARDS[i % 3]], np.float32),
            terminated=True,
        )
        for i in range(n)
    ]


def fit(tau: float) -> IQL:
    # Small nets and fast targets: the MDP has two states, so this converges in 600 steps.
    cfg = IQLConfig(
        expectile=tau,
        discount=GAMMA,
        hidden=(32, 32),
        lr=3e-3,
        batch_size=128,
        steps=600,
        tau_target=0.05,
        policy="deterministic",
    )
    return train_iql(two_step_episodes(), cfg, progress=False)[0]


def test_expectile_interpolates_mean_and_max():
    assert expectile(REWARDS, 0.5) == pytest.approx(1.0)
    assert expectile(REWARDS, 0.7) == pytest.approx(1.7 / 1.3)  # (1+τ)/(2-τ) for {0,1,2}
    assert expectile(REWARDS, 0.999) == pytest.approx(2.0, abs=0.01)


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.99])
@pytest.mark.slow
def test_iql_recovers_the_expectile_values(tau):
    """Rewards are deterministic, so the only error is optimisation noise from minibatches.
    The tolerance 0.05 is 2.5 % of the reward range and a sixth of the gap between the
    τ = 0.5 and τ = 0.7 values (1.0 vs 1.31): a wrong expectile or discount cannot pass."""
    model = fit(tau)
    v = model.value(torch.tensor([S0, S1]))
    target = expectile(REWARDS, tau)
    assert v[1].item() == pytest.approx(target, abs=0.05)
    assert v[0].item() == pytest.approx(GAMMA * target, abs=0.05)
    q = model.q_value(torch.tensor([S1] * 3), torch.tensor(ACTIONS[:, None], dtype=torch.float32))
    np.testing.assert_allclose(q.numpy(), REWARDS, atol=0.05)
    if tau == 0.5:
        assert v[1].item() < 1.1  # the mean, far from the max
    if tau == 0.99:
        assert v[1].item() > 1.9  # close to the max over the data's actions


@pytest.mark.slow
def test_awr_policy_prefers_the_high_advantage_action_and_roundtrips(tmp_path):
    model = fit(0.7)
    assert model.act(np.array(S1)).item() > 0.8  # weighted towards a = 1 (r = 2)
    path = model.save(tmp_path / "iql.pt")
    torch.load(path, weights_only=True)  # plain tensors and dicts only
    again = IQL.load(path)
    s = torch.tensor([S0, S1])
    torch.testing.assert_close(again.value(s), model.value(s))


def test_time_limited_last_step_is_dropped_and_terminal_is_done():
    eps = two_step_episodes(2)
    eps[1].terminated = False
    t = transitions_from_episodes(eps)
    assert len(t) == 3 and t.dones.tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_array_equal(t.next_observations[0], S1)
