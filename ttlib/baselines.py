"""What the Trajectory Transformer is compared with: behaviour cloning and a one-step model.

:class:`BehaviourCloning` is the paper's BC row (MSE or Gaussian likelihood);
:class:`ProbabilisticDynamics` the PETS/MBPO-style Gaussian MLP over (Δs, r) of the paper's
long-horizon prediction figure, whose open-loop ``rollout`` shows compounding errors. Both
standardise with the training data's statistics internally, so they take raw values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm  # plain bars: tqdm.auto warns in kernels without ipywidgets

from ttlib.data import Episode
from ttlib.io import ModelFile
from ttlib.iql import mlp


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(0), x.std(0).clamp_min(1e-6)


def _fit(model: nn.Module, opt, loss, n: int, cfg, desc: str, progress: bool):
    """``cfg.steps`` optimiser steps on ``loss(index)`` of minibatches drawn from n samples."""
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in tqdm(range(cfg.steps), disable=not progress, desc=desc, unit="step"):
        value = loss(torch.randint(n, (cfg.batch_size,), generator=gen))
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return model.eval()


@dataclass
class BCConfig:
    hidden: tuple[int, ...] = (256, 256)
    loss: str = "mse"  # mse | gaussian
    lr: float = 3e-4
    batch_size: int = 256
    steps: int = 20_000
    seed: int = 0


class BehaviourCloning(ModelFile, nn.Module):
    """π(s) = MLP(s); with the Gaussian loss a state-dependent std is learned as well."""

    FORMAT, CONFIG, WHAT = "ttlib-bc-v1", BCConfig, "BC model"

    def __init__(self, obs_dim: int, act_dim: int, config: BCConfig | None = None):
        super().__init__()
        self.config = cfg = config or BCConfig()
        if cfg.loss not in ("mse", "gaussian"):
            raise ValueError(f"BC loss must be 'mse' or 'gaussian', got {cfg.loss!r}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        n_out = act_dim * (2 if cfg.loss == "gaussian" else 1)
        self.net = mlp(obs_dim, tuple(cfg.hidden), n_out)
        for name, dim in (("obs", obs_dim), ("act", act_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised action mean (and log-std for the Gaussian loss)."""
        out = self.net((s - self.obs_mean) / self.obs_std)
        if self.config.loss == "gaussian":
            mean, log_std = out.chunk(2, -1)
            return mean, log_std.clamp(-5.0, 2.0)
        return out, None

    def loss(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        target = (a - self.act_mean) / self.act_std
        mean, log_std = self(s)
        if log_std is None:
            return F.mse_loss(mean, target)
        return -torch.distributions.Normal(mean, log_std.exp()).log_prob(target).sum(-1).mean()

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Mean action for observations (B, N) or (N,)."""
        s = torch.as_tensor(np.asarray(obs), dtype=self.obs_mean.dtype).reshape(-1, self.obs_dim)
        a = self(s)[0] * self.act_std + self.act_mean
        return a.numpy().reshape(*np.shape(obs)[:-1], self.act_dim)


def train_bc(
    episodes: list[Episode], config: BCConfig | None = None, progress: bool = True
) -> BehaviourCloning:
    cfg = config or BCConfig()
    s = torch.from_numpy(np.concatenate([ep.observations for ep in episodes]).astype(np.float32))
    a = torch.from_numpy(np.concatenate([ep.actions for ep in episodes]).astype(np.float32))
    torch.manual_seed(cfg.seed)
    model = BehaviourCloning(s.shape[1], a.shape[1], cfg)
    model.obs_mean, model.obs_std = _stats(s)
    model.act_mean, model.act_std = _stats(a)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return _fit(model, opt, lambda i: model.loss(s[i], a[i]), len(s), cfg, "bc", progress)


@dataclass
class DynamicsConfig:
    hidden: tuple[int, ...] = (200, 200, 200)
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    steps: int = 20_000
    seed: int = 0


class ProbabilisticDynamics(ModelFile, nn.Module):
    """p(Δs, r | s, a) = N(μ, diag σ²) from one MLP; log-variance soft-bounded as in PETS."""

    FORMAT, CONFIG, WHAT = "ttlib-dynamics-v1", DynamicsConfig, "dynamics model"

    def __init__(self, obs_dim: int, act_dim: int, config: DynamicsConfig | None = None):
        super().__init__()
        self.config = cfg = config or DynamicsConfig()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        n_out = obs_dim + 1
        self.net = mlp(obs_dim + act_dim, tuple(cfg.hidden), 2 * n_out)
        # Learned bounds keep the variance from collapsing or exploding off the data.
        self.max_logvar = nn.Parameter(torch.full((n_out,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((n_out,), -10.0))
        for name, dim in (("in", obs_dim + act_dim), ("out", n_out)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised mean and log-variance of [Δs, r]."""
        x = (torch.cat([s, a], -1) - self.in_mean) / self.in_std
        mean, logvar = self.net(x).chunk(2, -1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def loss(self, s, a, target) -> torch.Tensor:
        y = (target - self.out_mean) / self.out_std
        mean, logvar = self(s, a)
        nll = ((mean - y).pow(2) * torch.exp(-logvar) + logvar).sum(-1).mean()
        return nll + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())

    @torch.no_grad()
    def predict(
        self, s: torch.Tensor, a: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean next state (B, N), mean reward (B,) and the variance of [Δs, r] (B, N+1)."""
        mean, logvar = self(s, a)
        out = mean * self.out_std + self.out_mean
        var = logvar.exp() * self.out_std**2
        return s + out[..., :-1], out[..., -1], var

    @torch.no_grad()
    def rollout(
        self, s0: np.ndarray | torch.Tensor, actions: np.ndarray | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Open-loop mean rollout: states (..., H+1, N) and rewards (..., H) from s0 (..., N)
        and an action sequence (..., H, M)."""
        p = self.in_mean
        s = torch.as_tensor(np.asarray(s0), dtype=p.dtype)
        a = torch.as_tensor(np.asarray(actions), dtype=p.dtype)
        states, rewards = [s], []
        for t in range(a.shape[-2]):
            s, r, _ = self.predict(s, a[..., t, :])
            states.append(s)
            rewards.append(r)
        return torch.stack(states, -2), torch.stack(rewards, -1)


def dynamics_pairs(episodes: list[Episode]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, a, [Δs, r]) of consecutive steps inside episodes (the last step has no s')."""
    s, a, y = [], [], []
    for ep in episodes:
        if len(ep) < 2:
            continue
        s.append(ep.observations[:-1])
        a.append(ep.actions[:-1])
        delta = ep.observations[1:] - ep.observations[:-1]
        y.append(np.concatenate([delta, ep.rewards[:-1, None]], 1))
    if not s:
        raise ValueError("dynamics model needs episodes of at least two steps")
    return tuple(np.concatenate(x).astype(np.float32) for x in (s, a, y))


def train_dynamics(
    episodes: list[Episode], config: DynamicsConfig | None = None, progress: bool = True
) -> ProbabilisticDynamics:
    cfg = config or DynamicsConfig()
    s, a, y = (torch.from_numpy(x) for x in dynamics_pairs(episodes))
    torch.manual_seed(cfg.seed)
    model = ProbabilisticDynamics(s.shape[1], a.shape[1], cfg)
    model.in_mean, model.in_std = _stats(torch.cat([s, a], 1))
    model.out_mean, model.out_std = _stats(y)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss = lambda i: model.loss(s[i], a[i], y[i])  # noqa: E731
    return _fit(model, opt, loss, len(s), cfg, "dynamics", progress)
