"""Implicit Q-Learning (Kostrikov, Nair, Levine 2022): the critic of TT+Q and a baseline.

IQL never queries actions outside the dataset. V is fit to an upper expectile of Q over the
data's actions, which approaches max_a Q as τ → 1 (τ = 0.5 gives the mean, i.e. SARSA):

    L_V = E |τ - 1(Q̂(s,a) - V(s) < 0)| (Q̂(s,a) - V(s))²        Q̂ = min of twin target Qs
    L_Q = E (r + γ (1 - done) V(s') - Q_i(s,a))²                  i = 1, 2
    L_π = -E exp(β (Q̂(s,a) - V(s))) log π(a|s)                  advantage-weighted regression

Inputs are continuous (no discretisation); states are standardised with the data's mean and
std inside the module, so callers pass raw states.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm  # plain bars: tqdm.auto warns in kernels without ipywidgets

from ttlib.data import Episode
from ttlib.io import ModelFile


@dataclass
class IQLConfig:
    expectile: float = 0.7  # τ
    beta: float = 3.0  # inverse temperature of the advantage weights
    discount: float = 0.99
    tau_target: float = 0.005  # Polyak rate of the target Q networks
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 256
    steps: int = 100_000
    policy: str = "gaussian"  # gaussian | deterministic
    max_weight: float = 100.0  # clip on exp(β A), as in the IQL code
    reward_scale: float = 1.0  # r ← scale·r + bias before learning (IQL uses r - 1 on AntMaze)
    reward_bias: float = 0.0
    normalize_states: bool = True
    seed: int = 0
    log_every: int = 1000

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    layers, d = [], n_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """|τ - 1(diff < 0)| · diff², averaged; diff = target - prediction."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


@dataclass
class Transitions:
    """Flat (s, a, r, s', done) arrays from episodes."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    dones: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)


def transitions_from_episodes(episodes: list[Episode]) -> Transitions:
    """Consecutive steps of every episode (done = 1 at a true terminal); a time-limited
    episode's last step has no s' and is dropped, as in D4RL's q-learning datasets."""
    obs, act, rew, nxt, done = [], [], [], [], []
    for ep in episodes:
        T = len(ep)
        n = T if ep.terminated else T - 1
        if n <= 0:
            continue
        obs.append(ep.observations[:n])
        act.append(ep.actions[:n])
        rew.append(ep.rewards[:n])
        following = np.concatenate([ep.observations[1:], ep.observations[-1:]])[:n]
        nxt.append(following)
        d = np.zeros(n, dtype=np.float32)
        if ep.terminated:
            d[-1] = 1.0
        done.append(d)
    if not obs:
        raise ValueError("no transitions: every episode is a single time-limited step")
    cat = lambda xs: np.concatenate(xs).astype(np.float32)  # noqa: E731
    return Transitions(cat(obs), cat(act), cat(rew), cat(nxt), cat(done))


class IQL(ModelFile, nn.Module):
    """Twin Q, V, target Qs and an AWR policy; ``q_value`` / ``value`` / ``act`` take raw inputs."""

    FORMAT, CONFIG, WHAT = "ttlib-iql-v1", IQLConfig, "IQL model"

    def __init__(self, obs_dim: int, act_dim: int, config: IQLConfig | None = None):
        super().__init__()
        self.config = cfg = config or IQLConfig()
        if cfg.policy not in ("gaussian", "deterministic"):
            raise ValueError(f"policy must be 'gaussian' or 'deterministic', got {cfg.policy!r}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        hidden = tuple(cfg.hidden)
        self.q1 = mlp(obs_dim + act_dim, hidden, 1)
        self.q2 = mlp(obs_dim + act_dim, hidden, 1)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for p in [*self.q1_target.parameters(), *self.q2_target.parameters()]:
            p.requires_grad_(False)
        self.v = mlp(obs_dim, hidden, 1)
        self.pi = mlp(obs_dim, hidden, act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim))  # state-independent, as in IQL
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("act_low", -torch.ones(act_dim))
        self.register_buffer("act_high", torch.ones(act_dim))

    def _norm(self, s: torch.Tensor) -> torch.Tensor:
        return (s - self.obs_mean) / self.obs_std

    def _q(self, nets, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self._norm(s), a], -1)
        return torch.minimum(nets[0](x), nets[1](x)).squeeze(-1)

    def _v(self, s: torch.Tensor) -> torch.Tensor:
        return self.v(self._norm(s)).squeeze(-1)

    def _pi_mean(self, s: torch.Tensor) -> torch.Tensor:
        """Policy mean, squashed into the data's action range."""
        centre = 0.5 * (self.act_high + self.act_low)
        half = 0.5 * (self.act_high - self.act_low)
        return centre + half * torch.tanh(self.pi(self._norm(s)))

    @torch.no_grad()
    def q_value(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """min(Q1, Q2)(s, a) for raw states (B, N) and actions (B, M): the TT+Q heuristic."""
        p = self.obs_mean
        return self._q((self.q1, self.q2), s.to(p), a.to(p))

    @torch.no_grad()
    def value(self, s: torch.Tensor) -> torch.Tensor:
        """V(s) for raw states (B, N), e.g. for a value heat map."""
        return self._v(s.to(self.obs_mean))

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """The policy's mean action for observations (B, N) or (N,)."""
        s = torch.as_tensor(np.asarray(obs), dtype=self.obs_mean.dtype)
        out = self._pi_mean(s.reshape(-1, self.obs_dim)).numpy()
        return out.reshape(*np.shape(obs)[:-1], self.act_dim)

    def losses(self, s, a, r, s2, done) -> dict[str, torch.Tensor]:
        cfg = self.config
        with torch.no_grad():
            q_target = self._q((self.q1_target, self.q2_target), s, a)
            v_next = self._v(s2)
        v = self._v(s)
        adv = q_target - v
        loss_v = expectile_loss(adv, cfg.expectile)
        target = r + cfg.discount * (1.0 - done) * v_next
        x = torch.cat([self._norm(s), a], -1)
        loss_q = 0.5 * (
            F.mse_loss(self.q1(x).squeeze(-1), target) + F.mse_loss(self.q2(x).squeeze(-1), target)
        )
        weight = torch.exp(cfg.beta * adv.detach()).clamp_max(cfg.max_weight)
        mean = self._pi_mean(s)
        if cfg.policy == "gaussian":
            std = self.log_std.clamp(-5.0, 2.0).exp()
            log_prob = torch.distributions.Normal(mean, std).log_prob(a).sum(-1)
            loss_pi = -(weight * log_prob).mean()
        else:
            loss_pi = (weight * (mean - a).pow(2).sum(-1)).mean()
        return {"v": loss_v, "q": loss_q, "pi": loss_pi}

    @torch.no_grad()
    def update_targets(self) -> None:
        rate = self.config.tau_target
        for net, tgt in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
            for p, pt in zip(net.parameters(), tgt.parameters(), strict=True):
                pt.lerp_(p, rate)


def train_iql(
    episodes: list[Episode], config: IQLConfig | None = None, progress: bool = True
) -> tuple[IQL, list[dict]]:
    """Fit IQL on the episodes' transitions; returns the model (eval mode) and a loss log."""
    cfg = config or IQLConfig()
    data = transitions_from_episodes(episodes)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    s, a, s2 = (
        torch.from_numpy(x) for x in (data.observations, data.actions, data.next_observations)
    )
    r = torch.from_numpy(data.rewards) * cfg.reward_scale + cfg.reward_bias
    done = torch.from_numpy(data.dones)
    model = IQL(s.shape[1], a.shape[1], cfg)
    if cfg.normalize_states:
        model.obs_mean.copy_(s.mean(0))
        model.obs_std.copy_(s.std(0).clamp_min(1e-3))
    model.act_low.copy_(a.min(0).values)
    model.act_high.copy_(a.max(0).values)
    critic_opt = torch.optim.Adam([*model.q1.parameters(), *model.q2.parameters()], lr=cfg.lr)
    v_opt = torch.optim.Adam(model.v.parameters(), lr=cfg.lr)
    pi_opt = torch.optim.Adam([*model.pi.parameters(), model.log_std], lr=cfg.lr)
    pi_sched = torch.optim.lr_scheduler.CosineAnnealingLR(pi_opt, max(1, cfg.steps))
    log: list[dict] = []
    start = time.perf_counter()
    model.train()
    for step in tqdm(range(cfg.steps), disable=not progress, desc="iql", unit="step"):
        i = torch.randint(len(r), (cfg.batch_size,), generator=gen)
        loss = model.losses(s[i], a[i], r[i], s2[i], done[i])
        for opt, name in ((v_opt, "v"), (critic_opt, "q"), (pi_opt, "pi")):
            opt.zero_grad(set_to_none=True)
            loss[name].backward()
            opt.step()
        pi_sched.step()
        model.update_targets()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            log.append(
                {
                    "step": step + 1,
                    **{f"loss_{k}": float(v.detach()) for k, v in loss.items()},
                    "seconds": time.perf_counter() - start,
                }
            )
    return model.eval(), log
