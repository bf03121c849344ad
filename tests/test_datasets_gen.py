"""make-data: D4RL-style datasets written as Minari datasets into a temporary data dir."""

import numpy as np
import pytest

from ttlib.datagen.datasets_gen import (
    LOCOMOTION_KINDS,
    GenConfig,
    data_summary,
    dataset_id,
    make_dataset,
    make_datasets,
    parse_dataset_id,
)
from ttlib.envs import REF_SCORES

from conftest import tiny_sac_config


@pytest.fixture(autouse=True)
def minari_dir(tmp_path, monkeypatch):
    """Never touch the user's Minari data dir."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """medium/expert/medium_replay files of a tiny hopper SAC run (300 steps)."""
    from ttlib.datagen.policies import make_policies

    root = tmp_path_factory.mktemp("policies")
    make_policies(tiny_sac_config(root))
    return root / "out"


def _arrays(ds):
    eps = list(ds.iterate_episodes())
    obs = [e.observations for e in eps]
    if isinstance(obs[0], dict):
        obs = [o["observation"] for o in obs]
    return np.concatenate(obs), np.concatenate([e.actions for e in eps]), eps


@pytest.mark.parametrize("kind", LOCOMOTION_KINDS)
def test_locomotion_dataset_loads_back_with_d4rl_reference_scores(kind, policy_dir):
    import minari

    ds = make_dataset("hopper", kind, GenConfig(transitions=250, policy_dir=str(policy_dir)))
    ds = minari.load_dataset(dataset_id("hopper", kind))
    steps = {
        "medium-expert": 500,  # the medium and expert datasets, concatenated
        "medium-replay": min(
            250, int(np.load(policy_dir / "hopper" / "medium_replay.npz")["rewards"].size)
        ),
    }.get(kind, 250)
    assert ds.total_steps == steps
    for ep in ds.iterate_episodes():
        n = len(ep.rewards)
        assert ep.observations.shape == (n + 1, 11) and ep.actions.shape == (n, 3)
        assert np.all(np.abs(ep.actions) <= 1.0)
        # exactly one episode end, at the last step; hopper terminates when it falls
        ends = ep.terminations | ep.truncations
        assert ends[-1] and not ends[:-1].any()
    assert ep.truncations[-1] or ep.terminations[-1]
    lo, hi = REF_SCORES["hopper"]
    assert ds.storage.metadata["ref_min_score"] == lo
    np.testing.assert_allclose(minari.get_normalized_score(ds, np.array([lo, hi])), [0, 1])


def test_random_dataset_is_cut_to_the_size_and_marks_the_cut_as_truncation():
    ds = make_dataset("halfcheetah", "random", GenConfig(transitions=1500))
    eps = list(ds.iterate_episodes())
    assert [len(e.rewards) for e in eps] == [1000, 500]  # halfcheetah never terminates
    assert eps[0].truncations[-1] and eps[1].truncations[-1]
    assert not any(e.terminations.any() for e in eps)


def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    obs_a, act_a, _ = _arrays(make_dataset("hopper", "random", GenConfig(transitions=200)))
    again = make_dataset("hopper", "random", GenConfig(transitions=200, overwrite=True))
    obs_b, act_b, _ = _arrays(again)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(act_a, act_b)
    other = make_dataset("hopper", "random", GenConfig(transitions=200, seed=1, overwrite=True))
    assert not np.array_equal(act_a, _arrays(other)[1])


def test_existing_dataset_is_kept_unless_overwrite():
    first = make_dataset("hopper", "random", GenConfig(transitions=100))
    kept = make_dataset("hopper", "random", GenConfig(transitions=100, seed=5))
    np.testing.assert_array_equal(_arrays(first)[1], _arrays(kept)[1])


def test_half_written_dataset_is_regenerated():
    import minari

    from ttlib.envs import make_env

    did = dataset_id("hopper", "random")
    minari.create_dataset_from_buffers(did, [], env=make_env("hopper"))  # like a killed write
    assert minari.load_dataset(did).total_steps == 0
    assert make_dataset("hopper", "random", GenConfig(transitions=50)).total_steps == 50


def test_medium_replay_is_the_saved_replay_buffer(policy_dir):
    replay = np.load(policy_dir / "hopper" / "medium_replay.npz")
    ds = make_dataset("hopper", "medium-replay", GenConfig(policy_dir=str(policy_dir)))
    obs, act, eps = _arrays(ds)
    np.testing.assert_array_equal(act, replay["actions"].astype(np.float32))
    np.testing.assert_array_equal(
        np.concatenate([e.rewards for e in eps]), replay["rewards"].astype(np.float64)
    )
    # observations round-trip through float16; each episode's last one is its final observation
    n0 = len(eps[0].rewards)
    np.testing.assert_array_equal(eps[0].observations[:-1], replay["observations"][:n0])
    np.testing.assert_array_equal(eps[0].observations[-1], replay["final_observations"][0])
    assert len(eps) == len(replay["final_observations"])


def test_medium_expert_is_the_medium_and_expert_datasets_concatenated(policy_dir):
    cfg = GenConfig(transitions=120, policy_dir=str(policy_dir))
    both = list(make_dataset("hopper", "medium-expert", cfg).iterate_episodes())
    parts = [list(make_dataset("hopper", k, cfg).iterate_episodes()) for k in ("medium", "expert")]
    assert sum(len(e.rewards) for e in both) == 240  # D4RL: the two datasets, not two halves
    singles = parts[0] + parts[1]
    assert len(both) == len(singles)
    for a, b in zip(both, singles, strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)


def test_medium_expert_reads_the_stored_halves_with_their_seeds(policy_dir, monkeypatch):
    import ttlib.datagen.datasets_gen as gen

    cfg = GenConfig(transitions=120, policy_dir=str(policy_dir))
    parts = [make_dataset("hopper", k, cfg) for k in ("medium", "expert")]
    monkeypatch.setattr(gen, "collect", lambda *a, **k: pytest.fail("collected again"))
    both = make_dataset("hopper", "medium-expert", cfg)
    singles = [e for ds in parts for e in ds.iterate_episodes()]
    eps = list(both.iterate_episodes())
    assert len(eps) == len(singles)
    for a, b in zip(eps, singles, strict=True):
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))

    def seeds(ds):
        return [m["seed"] for m in ds.storage.get_episode_metadata(range(ds.total_episodes))]

    assert seeds(both) == seeds(parts[0]) + seeds(parts[1])


def test_medium_expert_collects_anew_when_a_stored_half_has_another_size(policy_dir):
    small = GenConfig(transitions=60, policy_dir=str(policy_dir))
    make_dataset("hopper", "medium", small)
    cfg = GenConfig(transitions=120, policy_dir=str(policy_dir))
    assert make_dataset("hopper", "medium-expert", cfg).total_steps == 240


def test_maze_data_reward_is_sparse_wrt_the_episode_goal():
    ds = make_dataset("fourrooms", "diverse", GenConfig(transitions=1500))
    eps = list(ds.iterate_episodes())
    successes = 0
    for ep in eps:
        goal = ep.observations["desired_goal"]
        assert np.all(goal == goal[0])  # one goal per episode, stored at every step
        dist = np.linalg.norm(ep.observations["achieved_goal"][1:] - goal[1:], axis=1)
        np.testing.assert_array_equal(ep.rewards, (dist <= 0.45).astype(float))
        np.testing.assert_array_equal(ep.terminations, dist <= 0.45)  # terminates at the goal
        successes += ep.terminations[-1]
        start = ep.observations["observation"][0, :2]
        assert np.linalg.norm(start - goal[0]) > 0.45  # start and goal cells differ
    assert successes >= 0.8 * (len(eps) - 1)  # only the last episode may be cut short


def test_noise_free_controller_crosses_the_large_maze():
    ds = make_dataset("pointmaze-large", "diverse", GenConfig(transitions=2000, action_noise=0.0))
    eps = list(ds.iterate_episodes())
    assert all(e.terminations[-1] for e in eps[:-1]) and len(eps) >= 5


def test_bad_env_or_kind_is_named():
    with pytest.raises(ValueError, match=r"'diverse'.*random, medium"):
        dataset_id("hopper", "diverse")
    with pytest.raises(ValueError, match=r"'hoper'.*Did you mean 'hopper'"):
        make_datasets(["hoper"])
    with pytest.raises(ValueError, match="mujoco/hopper/medium-v0"):
        parse_dataset_id("mujoco/hopper/medium-v0")


def test_missing_policy_says_which_command_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="make-policies --env walker2d"):
        make_dataset("walker2d", "expert", GenConfig(policy_dir=str(tmp_path)))


def test_cli_reports_bad_input_in_one_line(capsys):
    from ttlib.cli import main

    assert main(["make-data", "--env", "hopper", "--kind", "medum"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'medum'" in err and "\n" not in err


def test_data_summary_has_a_row_per_local_dataset():
    make_dataset("hopper", "random", GenConfig(transitions=300))
    make_dataset("fourrooms", "diverse", GenConfig(transitions=300))
    table = data_summary()
    assert list(table["dataset_id"]) == ["ttlib/fourrooms/diverse-v0", "ttlib/hopper/random-v0"]
    assert np.isnan(table["normalized_score_mean"][0]) and table["transitions"][1] == 300
