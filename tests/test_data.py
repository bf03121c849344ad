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
from ttlib.discretize import relative_goal_bins

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


def test_windows_start_before_the_last_step_and_train_on_the_stop_tokens():
    eps = linear_episodes(3, 7)
    cfg = DataConfig("synthetic", n_bins=10, n_transitions=4)
    ds = SequenceDataset(eps, cfg)
    td = ds.transition_dim
    assert len(ds) == 18  # t = 0..5 per episode: none at the last step, as in the original
    x, y, mask = ds.batch(torch.tensor([5]))  # second-to-last step of episode 0: two real
    assert x.shape == (1, 4 * td - 1)
    torch.testing.assert_close(x[0, 1:], y[0, :-1])
    assert (y[0, 2 * td - 1 :] == cfg.n_bins).all()  # stop tokens after the end...
    assert mask.all()  # ...trained on: the episode ends long before max_path_length
    x0, _, m0 = ds.batch(torch.tensor([0]))
    assert m0.all()
    np.testing.assert_array_equal(
        x0[0, :td].numpy(), ds.discretizer.encode(joined_transitions(eps[0], 0.99, -100)[0])
    )


def test_no_loss_past_max_path_length():
    eps = linear_episodes(2, 7)
    cfg = DataConfig("synthetic", n_bins=10, n_transitions=4, max_path_length=7)
    ds = SequenceDataset(eps, cfg)
    td = ds.transition_dim
    _, y, mask = ds.batch(torch.tensor([5]))  # steps 5, 6 real; 7, 8 past the cap
    # The mask is aligned with the inputs (the original's mask[:-1]): inputs of steps 5-6
    # are kept, so the first stop target (s^0 of step 7) is still trained, the rest not.
    assert mask[0, : 2 * td].all() and not mask[0, 2 * td :].any()
    assert y[0, 2 * td - 1] == cfg.n_bins
    with pytest.raises(DatasetError, match="max_path_length"):
        SequenceDataset(eps, DataConfig("synthetic", n_bins=10, max_path_length=6))


def test_hindsight_goals_come_from_the_same_episode_later():
    eps = linear_episodes(4, 10)
    cfg = DataConfig("synthetic", n_bins=10, n_transitions=3, goal_dims=[0, 1])
    ds = SequenceDataset(eps, cfg)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(len(ds))
    *_, goals = ds.batch(idx, generator=gen)
    for i in range(len(ds)):
        ep, t = divmod(i, 9)  # 9 windows per episode of 10 steps
        future = ds.discretizer.encode(eps[ep].observations[t:, :2], dims=[0, 1])
        assert any((goals[i].numpy() == f).all() for f in future)


def test_final_goal_sampling_gives_every_window_its_episodes_last_state():
    eps = linear_episodes(4, 10)
    cfg = DataConfig(
        "synthetic", n_bins=10, n_transitions=3, goal_dims=[0, 1], goal_sampling="final"
    )
    ds = SequenceDataset(eps, cfg)
    *_, goals = ds.batch(torch.arange(len(ds)), generator=torch.Generator().manual_seed(0))
    for i in range(len(ds)):
        last = eps[i // 9].observations[-1:, :2]  # 9 windows per episode of 10 steps
        assert (goals[i].numpy() == ds.discretizer.encode(last, dims=[0, 1])[0]).all()


def test_relative_goals_are_the_goal_bins_minus_the_windows_first_state_clipped():
    eps = linear_episodes(4, 10)
    absolute = SequenceDataset(eps, DataConfig("synthetic", n_bins=10, n_transitions=3,
                                               goal_dims=[0, 1]))  # fmt: skip
    relative = SequenceDataset(eps, DataConfig("synthetic", n_bins=10, n_transitions=3,
                                               goal_dims=[0, 1], goal_relative=True))  # fmt: skip
    idx = torch.arange(len(absolute))
    x, *_, goals = absolute.batch(idx, generator=torch.Generator().manual_seed(0))
    *_, rel = relative.batch(idx, generator=torch.Generator().manual_seed(0))
    offset = (goals - x[:, :2]).clamp(-5, 4) + 5  # the first state's x, y bins
    assert torch.equal(rel, offset)
    assert not torch.equal(rel, goals)
    assert relative_goal_bins(np.array([9, 0, 3]), np.array([0, 9, 3]), 10).tolist() == [9, 0, 5]


def test_goal_sampling_default_keeps_old_cache_keys_and_rejects_unknown_names():
    assert "goal_sampling" not in DataConfig("d").to_dict()
    assert DataConfig("d", goal_sampling="final").to_dict()["goal_sampling"] == "final"
    assert "goal_relative" not in DataConfig("d", goal_dims=[0]).to_dict()
    assert DataConfig("d", goal_dims=[0], goal_relative=True).to_dict()["goal_relative"]
    with pytest.raises(ValueError, match="goal_relative=True needs goal_dims"):
        DataConfig("d", goal_relative=True)
    with pytest.raises(ValueError, match="goal_sampling"):
        DataConfig("d", goal_sampling="last")


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
