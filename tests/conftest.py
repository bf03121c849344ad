"""Shared fixtures: tiny synthetic datasets, and a Minari data dir that is never the user's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ttlib.data import Episode
from ttlib.model import GPTConfig, TrajectoryGPT


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models on a shared 2-core machine: one thread avoids synchronisation stalls, and
    a test that changes the thread count cannot leak it into the next one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test caches models and evaluations in a temporary folder, never <repo>/cache."""
    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _private_minari_dir(tmp_path_factory, monkeypatch):
    """Every test writes Minari datasets into a temporary folder, never ~/.minari."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("minari")))


def linear_episodes(n_episodes=40, length=50, obs_dim=2, act_dim=1, seed=0, terminate_every=0):
    """Episodes of s' = A s + B a with a = K s + noise; reward = -|s|^2."""
    rng = np.random.default_rng(seed)
    A = np.array([[0.9, 0.2], [-0.2, 0.9]])[:obs_dim, :obs_dim]
    B = np.ones((obs_dim, act_dim)) * 0.5
    K = -np.ones((act_dim, obs_dim)) * 0.3
    eps = []
    for i in range(n_episodes):
        s = rng.uniform(-1, 1, obs_dim)
        obs, act, rew = [], [], []
        for _ in range(length):
            a = np.clip(K @ s + 0.3 * rng.normal(size=act_dim), -1, 1)
            obs.append(s)
            act.append(a)
            rew.append(-float(s @ s))
            s = A @ s + B @ a
        term = bool(terminate_every and i % terminate_every == 0)
        eps.append(
            Episode(
                observations=np.array(obs, np.float32),
                actions=np.array(act, np.float32),
                rewards=np.array(rew, np.float32),
                terminated=term,
            )
        )
    return eps


def hopper_like_episodes(n_episodes=6, length=30, seed=0) -> list[Episode]:
    """Random episodes with Hopper's shapes (11-d states, 3-d actions in [-1, 1])."""
    rng = np.random.default_rng(seed)
    return [
        Episode(
            observations=rng.normal(size=(length, 11)).astype(np.float32),
            actions=rng.uniform(-1, 1, (length, 3)).astype(np.float32),
            rewards=rng.normal(1.0, 0.5, length).astype(np.float32),
            terminated=bool(i % 3 == 0),
        )
        for i in range(n_episodes)
    ]


def write_minari_dataset(dataset_id: str, episodes: list[Episode], env_id="Pendulum-v1"):
    """Store episodes as a real Minari dataset (the same path make-data uses)."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    obs_dim, act_dim = episodes[0].observations.shape[1], episodes[0].actions.shape[1]
    buffers = []
    for i, ep in enumerate(episodes):
        T = len(ep)
        last = ep.observations[-1] + 0.1
        obs = np.concatenate([ep.observations, last[None]])
        term = np.zeros(T, bool)
        trunc = np.zeros(T, bool)
        (term if ep.terminated else trunc)[-1] = True
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations=list(obs),
                actions=list(ep.actions),
                rewards=list(ep.rewards.astype(np.float64)),
                terminations=list(term),
                truncations=list(trunc),
                infos={},
            )
        )
    space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    aspace = gym.spaces.Box(-1, 1, (act_dim,), np.float32)
    return minari.create_dataset_from_buffers(
        dataset_id,
        buffers,
        env=None,
        observation_space=space,
        action_space=aspace,
        algorithm_name="synthetic",
        description="test data",
    )


def tiny_params(**kw) -> dict:
    """A D4RL table of one Hopper dataset (180 transitions), models and searches of a few steps."""
    params = {
        "envs": ["hopper"], "kinds": ["medium"], "discretizers": ["uniform", "quantile"],
        "dataset_namespace": "ttlib", "dataset_transitions": 180, "train_steps": 4,
        "batch_size": 4, "n_layer": 1, "n_head": 1, "n_embd": 16, "horizon": 1, "beam_width": 2,
        "episodes": 2, "max_episode_steps": 3, "baseline_steps": 5, "seeds": 1, "seed": 0,
    }  # fmt: skip
    return {**params, **kw}


@pytest.fixture
def episodes():
    return linear_episodes()


def tiny_gpt(n_transitions=4, n_head=2, n_embd=16, goal_dim=0, seed=0, **kw) -> TrajectoryGPT:
    """An untrained 2-layer TrajectoryGPT over 3 state and 2 action dims with 10 bins, seeded."""
    torch.manual_seed(seed)
    cfg = GPTConfig(
        observation_dim=3,
        action_dim=2,
        n_bins=10,
        n_transitions=n_transitions,
        n_layer=2,
        n_head=n_head,
        n_embd=n_embd,
        dropout=0.0,
        goal_dim=goal_dim,
        **kw,
    )
    return TrajectoryGPT(cfg).eval()


def tiny_sac_config(root, **kw):
    """A Hopper SAC run of a few hundred steps whose files all go under ``root``."""
    from ttlib.datagen.policies import PolicyConfig

    defaults = dict(
        env="hopper",
        total_steps=300,
        checkpoint_every=100,
        learning_starts=250,
        eval_episodes=1,
        final_eval_episodes=1,
        cache_dir=str(root / "cache"),
        out_dir=str(root / "out"),
    )
    return PolicyConfig(**(defaults | kw))


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the folder is not a package)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the module look themselves up here
    spec.loader.exec_module(module)
    return module
