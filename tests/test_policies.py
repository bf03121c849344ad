"""make-policies: SB3 SAC training that resumes, checkpoint selection and the small output files."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ttlib.datagen.actor import actor_from_sb3, load_actor, save_actor
from ttlib.datagen.policies import PolicyConfig, finalize, select_checkpoints, train
from ttlib.datagen.replay import compress_transitions

from conftest import tiny_sac_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Hopper SAC: 200 steps, then a separate `train` call to 400 that must resume from disk."""
    root = tmp_path_factory.mktemp("policies")
    cfg = tiny_sac_config(
        root,
        total_steps=200,
        checkpoint_every=200,
        learning_starts=300,
        eval_episodes=2,
        final_eval_episodes=3,
        command="pytest",
    )
    train(cfg)
    cfg = replace(cfg, total_steps=400)
    train(cfg)
    return cfg, finalize(cfg)


@pytest.mark.slow
def test_training_resumes_from_the_last_checkpoint(tiny_run):
    cfg, _ = tiny_run
    from stable_baselines3 import SAC

    cache = Path(cfg.cache_dir) / "hopper"
    evals = json.loads((cache / "evals.json").read_text())
    assert [e["step"] for e in evals] == [200, 400]
    assert (cache / "latest").read_text() == "ckpt_0000400"
    assert sorted(p.name for p in cache.glob("ckpt_*")) == ["ckpt_0000400"]  # older pruned
    model = SAC.load(cache / "ckpt_0000400" / "model.zip")
    model.load_replay_buffer(cache / "ckpt_0000400" / "replay.pkl")
    rb = model.replay_buffer
    # the buffer was sized for 200 steps and grown when the run was extended to 400
    assert model.num_timesteps == 400 and rb.buffer_size == 400 and rb.full
    # only the resume path closes the episode interrupted at step 200, as a time-out
    assert rb.dones[199, 0] == 1 and rb.timeouts[199, 0] == 1
    # every chunk's actor is kept for the medium/expert choice
    assert sorted(p.name for p in (cache / "actors").iterdir()) == [
        "step_0000200.pt",
        "step_0000400.pt",
    ]


@pytest.mark.slow
def test_finalize_writes_small_weights_only_files(tiny_run):
    cfg, info = tiny_run
    out = Path(cfg.out_dir) / "hopper"
    saved = json.loads((out / "policies.json").read_text())
    assert saved["command"] == "pytest"
    assert saved["train_commands"] == ["pytest", "pytest"]  # the first run and the resume
    for name in ("medium", "expert"):
        assert saved[name]["episodes"] == 3
        assert np.isfinite(saved[name]["return_mean"])
        state = torch.load(out / f"{name}.pt", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        assert (out / f"{name}.pt").stat().st_size < 1_000_000
    assert saved["medium"]["step"] <= saved["expert"]["step"]
    replay = np.load(out / "medium_replay.npz")
    assert replay["observations"].dtype == np.float16
    assert len(replay["rewards"]) == saved["medium"]["step"]  # tiny: nothing subsampled
    ends = replay["terminations"] | replay["truncations"]
    assert ends[-1] and ends.sum() == len(replay["final_observations"])


def test_actor_copy_acts_like_the_sb3_policy():
    from stable_baselines3 import SAC

    model = SAC("MlpPolicy", "Hopper-v5", buffer_size=100, seed=0, device="cpu")
    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    ours = actor_from_sb3(model).act(obs)  # mean action
    sb3, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(ours, sb3, atol=1e-5)


def test_saved_actor_round_trips(tmp_path):
    from stable_baselines3 import SAC

    actor = actor_from_sb3(SAC("MlpPolicy", "Hopper-v5", buffer_size=100, seed=1, device="cpu"))
    save_actor(actor, tmp_path / "a.pt")
    obs = np.ones((2, 11), np.float32)
    np.testing.assert_array_equal(load_actor(tmp_path / "a.pt").act(obs), actor.act(obs))
    a = load_actor(tmp_path / "a.pt").act(obs, np.random.default_rng(0))
    b = load_actor(tmp_path / "a.pt").act(obs, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert np.all(np.abs(a) <= 1.0)


def test_medium_is_the_earlier_checkpoint_nearest_to_40_percent_of_best():
    evals = [
        {"step": s, "mean": m}
        for s, m in [(10, -200.0), (20, 1000.0), (30, 2000.0), (40, 4000.0), (50, 1400.0)]
    ]
    # target = -280.18 + 0.4 * (4000 + 280.18) = 1431.9 → 1000 at step 20 (not 1400 after the best)
    assert select_checkpoints(evals, "halfcheetah", 0.4) == (20, 40)
    with pytest.raises(ValueError, match="hopper"):
        select_checkpoints([], "hopper", 0.4)


def test_medium_leaves_at_least_min_step_transitions_for_medium_replay():
    evals = [{"step": s, "mean": m} for s, m in [(10, 1000.0), (20, 3000.0), (30, 4000.0)]]
    # nearest to the target is step 10, but medium-replay would then hold 10 transitions
    assert select_checkpoints(evals, "halfcheetah", 0.4, min_step=20) == (20, 30)
    # no checkpoint before the best is late enough: the nearest earlier one still wins
    assert select_checkpoints(evals, "halfcheetah", 0.4, min_step=25) == (10, 30)


def test_compress_keeps_whole_episodes_under_the_budget():
    n_eps, length = 20, 500
    rng = np.random.default_rng(0)
    term = np.zeros(n_eps * length, bool)
    term[length - 1 :: length] = True
    data = {
        "observations": rng.normal(size=(n_eps * length, 17)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n_eps * length, 6)).astype(np.float32),
        "rewards": np.repeat(np.arange(n_eps, dtype=np.float32), length),
        "terminations": term,
        "truncations": np.zeros(n_eps * length, bool),
        "final_observations": rng.normal(size=(n_eps, 17)).astype(np.float32),
    }
    full = compress_transitions(data, budget_mb=100, seed=0)
    assert len(full["rewards"]) == n_eps * length and full["kept_episode_fraction"] == 1
    small = compress_transitions(data, budget_mb=0.2, seed=0)
    kept = np.unique(small["rewards"])
    assert 0 < len(kept) < n_eps
    assert len(small["rewards"]) == len(kept) * length  # whole episodes only
    np.testing.assert_array_equal(
        small["final_observations"], data["final_observations"][kept.astype(int)].astype(np.float16)
    )


def test_make_policies_rejects_maze_envs(tmp_path):
    with pytest.raises(ValueError, match="fourrooms"):
        train(PolicyConfig(env="fourrooms", cache_dir=str(tmp_path)))
