"""Four rooms: does a policy that reads the goal as bins follow it? (issue #25)

TT reads the state and the goal as bins (one token per number) and mostly ignores the goal.
To tell what the tokens cost from what the sequence model, its history and its search cost, we
train the simplest policy that differs from TT only in its inputs: an MLP classifier of TT's
action bins (cross-entropy, as TT's action loss) from the state and a hindsight goal, without
history, decoded as TT's greedy policy (the most likely bin of each action number, at its
centre). It is trained twice on the same pairs:

* ``tokens=False``: the state and goal as numbers (standardised), as goal-conditioned BC sees
  them;
* ``tokens=True``: the state and goal as TT's bins, each number's bin an embedding of its own
  (the embeddings concatenated), as TT's token embedding sees them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ttlib.data import Episode
from ttlib.discretize import Discretizer
from ttlib.experiments.goals import GOAL_DIMS, GoalPolicyAgent, hindsight_goal_episodes


@dataclass
class ClassifierConfig:
    steps: int = 4000
    batch_size: int = 256
    lr: float = 1e-3
    hidden: int = 256
    embd: int = 64  # per input number, tokens=True
    copies: int = 4  # hindsight goals per step
    seed: int = 0


class GoalClassifier(nn.Module):
    """Logits over the action bins of each action number, from [state, goal xy]."""

    def __init__(self, discretizer: Discretizer, obs_dim: int, act_dim: int, tokens: bool,
                 cfg: ClassifierConfig):  # fmt: skip
        super().__init__()
        self.discretizer, self.tokens = discretizer, tokens
        self.obs_dim, self.act_dim = obs_dim, act_dim
        n_in, K = obs_dim + len(GOAL_DIMS), discretizer.n_bins
        if tokens:
            embed = nn.Embedding(n_in * K, cfg.embd)
            first = nn.Sequential(embed, nn.Flatten(), nn.Linear(n_in * cfg.embd, cfg.hidden))
        else:
            first = nn.Linear(n_in, cfg.hidden)
        self.net = nn.Sequential(first, nn.ReLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(),
                                 nn.Linear(cfg.hidden, act_dim * K))  # fmt: skip
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))

    def inputs(self, states: np.ndarray, goals: np.ndarray) -> torch.Tensor:
        x = np.concatenate([states, goals], axis=1).astype(np.float64)
        if not self.tokens:
            return (torch.as_tensor(x, dtype=torch.float32) - self.mean) / self.std
        dims = [*range(self.obs_dim), *GOAL_DIMS]  # the goal's bins are those of its state dims
        bins = (
            self.discretizer.encode(x, dims=dims) + np.arange(len(dims)) * self.discretizer.n_bins
        )
        return torch.as_tensor(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(len(x), self.act_dim, self.discretizer.n_bins)

    @torch.no_grad()
    def act(self, states: np.ndarray, goals: np.ndarray) -> np.ndarray:
        bins = self(self.inputs(states, goals)).argmax(-1).numpy()
        actions = slice(self.obs_dim, self.obs_dim + self.act_dim)
        return self.discretizer.decode(bins, dims=actions).astype(np.float32)


def train_goal_classifier(episodes: Sequence[Episode], discretizer: Discretizer, tokens: bool,
                          cfg: ClassifierConfig | None = None) -> GoalClassifier:  # fmt: skip
    """Fit on ``cfg.copies`` hindsight goals per step (those of :func:`goals.train_goal_bc`)."""
    cfg = cfg or ClassifierConfig()
    relabelled = hindsight_goal_episodes(episodes, cfg.copies, cfg.seed)
    obs_dim, act_dim = episodes[0].observations.shape[1], episodes[0].actions.shape[1]
    sg = np.concatenate([e.observations for e in relabelled]).astype(np.float64)
    actions = np.concatenate([e.actions for e in relabelled]).astype(np.float64)
    target = torch.as_tensor(discretizer.encode(actions, dims=slice(obs_dim, obs_dim + act_dim)))
    torch.manual_seed(cfg.seed)
    model = GoalClassifier(discretizer, obs_dim, act_dim, tokens, cfg)
    model.mean.copy_(torch.as_tensor(sg.mean(0), dtype=torch.float32))
    model.std.copy_(torch.as_tensor(sg.std(0) + 1e-6, dtype=torch.float32))
    x = model.inputs(sg[:, :obs_dim], sg[:, obs_dim:])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.steps):
        i = torch.randint(len(x), (cfg.batch_size,), generator=g)
        loss = F.cross_entropy(model(x[i]).flatten(0, 1), target[i].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


class ClassifierAgent(GoalPolicyAgent):
    """A :class:`GoalClassifier` as an Agent (given each episode's goal xy at reset)."""

    needs = "a goal classifier"

    def __init__(self, model: GoalClassifier):
        super().__init__(model.act)
        self.model = model
