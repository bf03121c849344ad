import numpy as np
import pytest
import torch

from ttlib.data import (
    DataConfig,
    DatasetError,
    SequenceDataset,
    joined_transitions,
    load_episodes,
    load_minari,
    returns_to_go,
)

from conftest import linear_episodes, write_minari_dataset


def test_returns_to_go_excludes_the_current_reward():
    r = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(returns_to_go(r, 0.5), [2 + 0.5 * 4, 4, 0])


def test_true_terminal_gets_the_penalty_but_a_time_limit_does_not():
    ep = linear_episodes(2, 5, terminate_every=2)
    term, trunc = ep[0], ep[1]
    assert term.terminated and not trunc.terminated
    j = joined_transitions(term, 0.99, -100.0)
    assert j[-1, -2] == -100.0 and j[-2, -1] == pytest.approx(-100.0)
    j2 = joined_transitions(trunc, 0.99, -100.0)
    assert j2[-1, -2] == trunc.rewards[-1] and j2[-1, -1] == 0.0


def test_windows_start_at_every_step_and_pad_after_the_episode():
    eps = linear_episodes(3, 7)
    cfg = DataConfig("synthetic", n_bins=10, n_transitions=4)
    ds = SequenceDataset(eps, cfg)
    td = ds.transition_dim
    assert len(ds) == 21
    x, y, mask = ds.batch(torch.tensor([6]))  # last step of episode 0: one real transition
    assert x.shape == (1, 4 * td - 1)
    torch.testing.assert_close(x[0, 1:], y[0, :-1])
    assert mask[0, : td - 1].all() and not mask[0, td - 1 :].any()
    assert (y[0, td - 1 :] == cfg.n_bins).all()  # stop tokens after the end
    x0, _, m0 = ds.batch(torch.tensor([0]))
    assert m0.all()
    np.testing.assert_array_equal(
        x0[0, :td].numpy(), ds.discretizer.encode(joined_transitions(eps[0], 0.99, -100)[0])
    )


def test_hindsight_goals_come_from_the_same_episode_later():
    eps = linear_episodes(4, 10)
    cfg = DataConfig("synthetic", n_bins=10, n_transitions=3, goal_dims=[0, 1])
    ds = SequenceDataset(eps, cfg)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(len(ds))
    *_, goals = ds.batch(idx, generator=gen)
    for i in range(len(ds)):
        ep, t = divmod(i, 10)
        future = ds.discretizer.encode(eps[ep].observations[t:, :2], dims=[0, 1])
        assert any((goals[i].numpy() == f).all() for f in future)


def test_discretizer_from_other_data_is_rejected():
    eps = linear_episodes(2, 5)
    ds = SequenceDataset(eps, DataConfig("a", n_bins=10))
    other = linear_episodes(2, 5, obs_dim=1)
    with pytest.raises(DatasetError, match="fit on other data"):
        SequenceDataset(other, DataConfig("b", n_bins=10), discretizer=ds.discretizer)


def test_minari_roundtrip_through_the_loader():
    eps = linear_episodes(5, 12, terminate_every=2)
    write_minari_dataset("ttlibtest/linear/medium-v0", eps)
    loaded = load_episodes(DataConfig("ttlibtest/linear/medium-v0"))
    assert len(loaded) == 5
    for a, b in zip(eps, loaded, strict=True):
        np.testing.assert_allclose(a.observations, b.observations)
        np.testing.assert_allclose(a.actions, b.actions)
        np.testing.assert_allclose(a.rewards, b.rewards, rtol=1e-6)
        assert a.terminated == b.terminated
    capped = load_episodes(DataConfig("ttlibtest/linear/medium-v0", max_transitions=20))
    assert len(capped) == 2


def test_unknown_id_suggests_near_matches():
    write_minari_dataset("ttlibtest/linear/medium-v0", linear_episodes(2, 5))
    with pytest.raises(DatasetError, match="Did you mean ttlibtest/linear/medium-v0"):
        load_minari("ttlibtest/linear/medium-v1")


def test_nan_in_dataset_is_reported():
    eps = linear_episodes(2, 5)
    eps[1].rewards[2] = np.nan
    write_minari_dataset("ttlibtest/nan/bad-v0", eps)
    with pytest.raises(DatasetError, match="episode 1 has NaN/inf in rewards"):
        load_episodes(DataConfig("ttlibtest/nan/bad-v0"))
