from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ttlib.data import Episode
from ttlib.discretize import UniformDiscretizer
from ttlib.experiments.prediction import (
    RolloutConfig,
    error_quantiles,
    error_table,
    horizon_errors,
    original_learning,
    sample_segments,
    tt_configs,
    tt_rollout,
)
from ttlib.experiments.presets import PRESETS, preset_params
from ttlib.model import GPTConfig

from conftest import tiny_gpt

# A lattice system whose states, actions and rewards are integers 0..9, so that every value
# has its own bin and decoding is exact: s'0 = s0 + a, s'1 = s1 + s0 (mod 10), r = s0.
N, M, TD = 2, 1, 5


def lattice_step(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    return np.stack([(s[:, 0] + a[:, 0]) % 10, (s[:, 1] + s[:, 0]) % 10], axis=1)


def lattice_discretizer() -> UniformDiscretizer:
    return UniformDiscretizer(10).fit(np.tile(np.arange(10.0)[:, None], (1, TD)))


class LatticeOracle(torch.nn.Module):
    """Knows the lattice dynamics: puts all probability on the true next token, reading the
    previous transition from whatever window it is shown (so it needs keep >= 1)."""

    def __init__(self, n_transitions: int = 3):
        super().__init__()
        self.config = GPTConfig(
            observation_dim=N, action_dim=M, n_bins=10, n_transitions=n_transitions
        )
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.longest = 0

    def new_cache(self, batch_size: int):
        return SimpleNamespace(seq=None, length=0)

    def forward(self, idx, goal=None, cache=None):
        seq = idx if cache is None or cache.seq is None else torch.cat([cache.seq, idx], 1)
        if cache is not None:
            cache.seq, cache.length = seq, seq.shape[1]
        self.longest = max(self.longest, seq.shape[1])
        assert seq.shape[1] <= self.config.block_size
        B, T = seq.shape
        nxt = T  # position of the token to predict, relative to the window start (s^0)
        d = nxt % TD
        if d < N:
            prev = nxt - d - TD
            s0, s1, a = seq[:, prev], seq[:, prev + 1], seq[:, prev + 2]
            target = (s0 + a) % 10 if d == 0 else (s1 + s0) % 10
        elif d == N + M:
            target = seq[:, nxt - N - M]  # r = s0 of this transition
        else:
            target = torch.zeros(B, dtype=torch.long)
        logits = torch.full((B, idx.shape[1], 11), -1e4)
        logits[torch.arange(B), -1, target] = 0.0
        return logits, None


def lattice_data(n: int, H: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 10, (n, N)).astype(float)
    actions = rng.integers(0, 10, (n, H, M)).astype(float)
    states, rewards = [s], []
    for t in range(H):
        rewards.append(s[:, 0])
        s = lattice_step(s, actions[:, t])
        states.append(s)
    return np.stack(states, 1), actions, np.stack(rewards, 1)


@pytest.mark.parametrize("decode", ["argmax", "expectation"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_oracle_rollout_has_zero_error_beyond_the_window(decode, use_cache):
    H = 12  # four times the oracle's 3-transition window: the window jumps many times
    states, actions, rewards = lattice_data(6, H)
    oracle = LatticeOracle()
    cfg = RolloutConfig(decode=decode, use_cache=use_cache)
    out = tt_rollout(oracle, lattice_discretizer(), states[:, 0], actions, cfg)
    assert oracle.longest <= oracle.config.block_size
    np.testing.assert_array_equal(out.states, states)
    np.testing.assert_array_equal(out.rewards, rewards)
    assert horizon_errors(out.states, states, np.ones(N)).max() == 0.0


def test_actions_shifted_by_one_step_give_errors():
    states, actions, _ = lattice_data(6, 8, seed=1)
    shifted = np.roll(actions, 1, axis=1)
    out = tt_rollout(LatticeOracle(), lattice_discretizer(), states[:, 0], shifted)
    err = horizon_errors(out.states, states, np.ones(N))
    assert err[:, 0].max() == 0.0 and err[:, 1:].max() > 0.0


def test_cached_rollout_equals_recomputed_rollout():
    model = tiny_gpt()
    cfg = model.config
    rng = np.random.default_rng(0)
    disc = UniformDiscretizer(10).fit(rng.normal(size=(500, cfg.transition_dim)))
    s0, actions = rng.normal(size=(4, 3)), rng.normal(size=(4, 9, 2))
    a = tt_rollout(model, disc, s0, actions, RolloutConfig(use_cache=True))
    b = tt_rollout(model, disc, s0, actions, RolloutConfig(use_cache=False))
    np.testing.assert_allclose(a.states, b.states)
    assert a.states.shape == (4, 10, 3) and a.rewards.shape == (4, 9)
    with pytest.raises(ValueError, match="expected s0"):
        tt_rollout(model, disc, s0[:, :2], actions)


def test_horizon_errors_are_scaled_rms_over_dimensions():
    true = np.zeros((2, 3, 4))
    pred = true.copy()
    pred[:, 2, 0] = 2.0  # one dimension off by 2 at step 2
    err = horizon_errors(pred, true, scale=np.array([2.0, 1, 1, 1]))
    np.testing.assert_allclose(err, [[0, 0, 0.5]] * 2)  # sqrt((2/2)^2 / 4)
    with pytest.raises(ValueError, match="differ"):
        horizon_errors(pred[:, :2], true, np.ones(4))


def test_segments_are_aligned_with_their_episodes():
    eps = [
        Episode(
            np.arange(n * 2.0).reshape(n, 2),
            np.arange(n)[:, None] + 0.5,
            np.arange(n) * 10.0,
            False,
        )
        for n in (3, 12, 20)
    ]
    seg = sample_segments(eps, horizon=5, n=8, seed=0)
    assert seg.states.shape == (8, 6, 2) and seg.actions.shape == (8, 5, 1)
    assert set(seg.episode) <= {1, 2}  # the 3-step episode is too short
    for k in range(8):
        ep, t = eps[seg.episode[k]], seg.start[k]
        np.testing.assert_array_equal(seg.states[k], ep.observations[t : t + 6])
        np.testing.assert_array_equal(seg.actions[k], ep.actions[t : t + 5])
        np.testing.assert_array_equal(seg.rewards[k], ep.rewards[t : t + 5])
    with pytest.raises(ValueError, match="longest has 20"):
        sample_segments(eps, horizon=20, n=1)


def test_error_table_reads_the_curves_at_the_asked_horizons():
    errs = np.tile(np.arange(11.0), (4, 1))
    curves = pd.concat(
        [
            error_quantiles(errs, env="hopper", model="TT"),
            error_quantiles(2 * errs, env="hopper", model="MLP"),
        ]
    )
    table = error_table(curves, [1, 10])
    assert table["horizon"].tolist() == [1, 10]
    assert table["TT median"].tolist() == [1.0, 10.0]
    assert table["MLP median"].tolist() == [2.0, 20.0]


@pytest.mark.parametrize("preset", PRESETS)
def test_attention_analyses_the_model_the_prediction_notebook_trains(preset):
    """Both notebooks share one trained Hopper model: their preset blocks must give equal
    configs for the attention notebook's dataset, or the model is trained twice."""
    pred, att = preset_params("prediction", preset), preset_params("attention", preset)
    assert att["env"] in pred["envs"] and att["dataset_kind"] == pred["dataset_kind"]
    did = f"ttlib/{att['env']}/{att['dataset_kind']}-v0"
    assert tt_configs(did, att) == tt_configs(did, pred)


def test_discretization_floor_moves_each_state_to_its_bin_mean():
    from ttlib.experiments.prediction import discretization_floor

    x = np.random.default_rng(0).normal(size=(500, 3))
    disc = UniformDiscretizer(n_bins=4).fit(x)
    floor = discretization_floor(disc, x[None])  # any leading shape
    assert floor.shape == (1, 500, 3)
    ids = disc.encode(x)
    for d in range(3):  # each state becomes the training mean of its own bin
        for b in range(4):
            rows = ids[:, d] == b
            np.testing.assert_allclose(floor[0, rows, d], x[rows, d].mean())
    # and the error is bounded by the bin width: no better than the bins, no worse than one bin
    width = (x.max(0) - x.min(0)) / 4
    assert np.all(np.abs(floor[0] - x) <= width + 1e-12) and np.abs(floor[0] - x).mean() > 0


def test_learning_curves_draw_only_the_logged_columns():
    import matplotlib

    matplotlib.use("Agg")
    from ttlib.experiments.plots import learning_curves

    old = pd.DataFrame({"tokens": [1e6, 2e6], "loss_state": [3.0, 2.5]})
    new = old.assign(val_loss_state=[3.1, 2.7])
    fig = learning_curves({"old": old, "new": new}, ["loss_state", "val_loss_state"], ["a", "b"])
    assert [len(ax.lines) for ax in fig.axes] == [1, 2]
    np.testing.assert_allclose(fig.axes[1].lines[1].get_xdata(), [1.0, 2.0])  # in millions


def test_original_learning_compares_the_codes_at_equal_tokens(tmp_path):
    columns = ["env", "schedule", "code", "step", "tokens", "val_loss_state"]
    rows = [  # 8 logged steps of 0.1M tokens per code; the last scores the code's `loss`
        ("hopper", "run_length", code, step, 100_000 * step, loss + 8 - step)
        for code, loss in (("original", 4.0), ("ttlib", 3.0), ("original-same-init", 9.0))
        for step in range(1, 9)
    ]
    rows.append(("hopper", "original", "ttlib", 8, 800_000, 0.0))  # not the page's schedule
    rows.append(("walker", "run_length", "original", 1, 100_000, 1.0))  # one code: no pair
    rows = pd.DataFrame(rows, columns=columns)
    rows.to_csv(tmp_path / "original_learning.csv", index=False)
    got = original_learning(tmp_path)
    assert list(got.curves) == ["hopper"]
    assert list(got.curves["hopper"]["tokens"]) == [100_000 * s for s in range(1, 9)]
    at = got.at_tokens.set_index("tokens (M)")
    assert list(at.index) == [0.2, 0.4, 0.8]  # the steps nearest 1/4, 1/2 and all
    assert list(at["original"]) == [10.0, 8.0, 4.0]
    assert list(at["ttlib − original"]) == [-1.0, -1.0, -1.0]
    assert got.record == {}  # no .json beside it
    assert original_learning(tmp_path / "missing") is None
