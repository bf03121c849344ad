"""The behaviour policies' actor: SB3's SAC actor as a plain module, saved as a state dict.

The datasets are generated from the committed actor files (``results/policies/<env>/*.pt``)
without stable-baselines3, and :func:`evaluate` gives the returns of the stochastic policy,
the way the datasets are collected.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ttlib.envs import make_env
from ttlib.io import load_torch_file, model_file_errors

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's clamp on the actor's log-std


class SACActor(nn.Module):
    """SB3's SAC actor (MLP → mean, log-std; tanh-squashed Gaussian) as a plain module.

    Keeping our own copy means datasets can be generated from a committed state dict without
    SB3's pickled zip files, and the parameter names match SB3's so weights copy over directly.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray, hidden: int = 256
    ):
        super().__init__()
        self.latent_pi = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.mu = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)
        self.register_buffer("action_low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.latent_pi(obs)
        return self.mu(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    @torch.no_grad()
    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Action(s) for observation(s): a sample if `rng` is given, else the mean action."""
        mean, log_std = self(torch.as_tensor(obs, dtype=torch.float32))
        u = mean.numpy()
        if rng is not None:
            u = u + np.exp(log_std.numpy()) * rng.standard_normal(u.shape).astype(np.float32)
        low, high = self.action_low.numpy(), self.action_high.numpy()
        return (low + (np.tanh(u) + 1.0) * 0.5 * (high - low)).astype(np.float32)


def actor_from_sb3(model) -> SACActor:
    """Copy the actor weights out of an SB3 SAC model."""
    space = model.action_space
    actor = SACActor(model.observation_space.shape[0], space.shape[0], space.low, space.high)
    actor.load_state_dict(model.actor.state_dict(), strict=False)
    return actor


def save_actor(actor: SACActor, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(actor.state_dict(), path)


def load_actor(path: str | Path) -> SACActor:
    """Load an actor saved by `save_actor` (or stored in float16 by `save_early`); only tensors
    are stored, so weights_only=True works."""
    state = load_torch_file(path, "policy file")
    with model_file_errors(path, "policy file"):
        state = {k: v.float() for k, v in state.items()}
        hidden, obs_dim = state["latent_pi.0.weight"].shape
        actor = SACActor(
            obs_dim, state["mu.weight"].shape[0], state["action_low"], state["action_high"], hidden
        )
        actor.load_state_dict(state)
    return actor.eval()


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run one-observation forward passes on one thread: on a busy 2-core machine a second
    intra-op thread makes each tiny forward ~30x slower (measured 12 ms vs 0.4 ms)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate(actor: SACActor, env_name: str, episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of `episodes` stochastic-policy episodes (deterministic given seed)."""
    env = make_env(env_name)
    rng = np.random.default_rng(seed)
    returns = np.zeros(episodes)
    with one_torch_thread():
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            done = False
            while not done:
                obs, r, term, trunc, _ = env.step(actor.act(obs, rng))
                returns[i] += r
                done = term or trunc
    env.close()
    return returns
