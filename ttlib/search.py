"""Beam search over a Trajectory Transformer: the paper's planner, one algorithm, four scores.

Every step of the plan (paper §3.2, the original ``beam_plan``): repeat each beam ``n_expand``
times, sample the action tokens (top-``cdf_act`` filtered), read r and V from the model, score
every candidate, keep the best ``beam_width`` per episode, then fill in the next observation
greedily. Only the score differs between the uses of the paper:

* ``reward`` (offline RL): Σ_{i≤t} γ^i r_i + γ^{t+1} V_t, with r and V the expectations under
  the model's (unfiltered) distributions;
* ``likelihood`` (imitation): the log-probability of the sequence so far;
* ``goal``: the same, for a model that sees a goal prefix (passed as ``goal`` bins);
* ``q`` (TT+Q): Σ_{i<t} γ^i r_i + γ^t Q(s_t, a_t), a learned Q-function in place of V.

All episodes and beams are rows of one batch (``episodes × candidates``), and the model's KV
cache means every sampled token costs one single-token forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ttlib.discretize import Discretizer, relative_goal_bins
from ttlib.memory import check_planning_memory
from ttlib.window import Window

MODES = ("reward", "likelihood", "goal", "q")

QFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PlannerConfig:
    mode: str = "reward"  # reward | likelihood | goal | q
    horizon: int = 15  # planned transitions
    beam_width: int = 128  # candidates kept per episode after each step
    n_expand: int = 2  # copies of every beam, each sampling its own actions
    max_context_transitions: int = 5  # real transitions before the current observation
    cdf_act: float | None = 0.6  # drop the unlikely action tokens holding this much mass
    k_act: int | None = None  # keep only the k most likely action tokens
    discount: float = 0.99
    deterministic: bool = False  # rank-based choices instead of sampling (tests, equivalence)
    use_cache: bool = True  # False: recompute the whole window for every token (reference)
    seed: int = 0

    def validate(self) -> PlannerConfig:
        if self.mode not in MODES:
            raise ValueError(f"unknown planning mode {self.mode!r}; choose one of {MODES}")
        for name in ("horizon", "beam_width", "n_expand"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_context_transitions < 0:
            raise ValueError("max_context_transitions must be >= 0")
        if self.cdf_act is not None and not 0.0 <= self.cdf_act < 1.0:
            raise ValueError(f"cdf_act must be in [0, 1) or None, got {self.cdf_act}")
        return self


@dataclass
class Plan:
    """The best plan of every episode (E of them), decoded to bin centres."""

    action: torch.Tensor  # (E, M) first action: what the agent executes
    sequence: torch.Tensor  # (E, H, N+M+2) the plan's transitions [s, a, r, V], decoded
    tokens: torch.Tensor  # (E, H, N+M+2) the same as raw bins
    score: torch.Tensor  # (E,) the score the plan won with


def filter_top_k(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the ``k`` largest logits of every row, set the rest to -inf."""
    if k is None or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_cdf(logits: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """Drop the least likely tokens that together hold less than ``threshold`` of the mass.

    As the original ``filter_cdf``: p* is the largest probability whose ascending cumulative
    mass is below ``threshold``; every token with p ≤ p* goes. The most likely token always
    stays (the original then falls back to uniform over all tokens).
    """
    if threshold is None or threshold <= 0.0:
        return logits
    probs = logits.softmax(-1)
    ascending = probs.sort(-1).values
    below = ascending.cumsum(-1) < threshold
    p_star = torch.where(below, ascending, torch.full_like(ascending, -1.0)).amax(-1, True)
    drop = (probs <= p_star) & (probs < probs.amax(-1, keepdim=True))
    return logits.masked_fill(drop, float("-inf"))


Generators = torch.Generator | Sequence[torch.Generator] | None


def sample_rows(probs: torch.Tensor, generator: Generators) -> torch.Tensor:
    """One token per row of ``probs`` (R, V). A list of E generators draws the e-th of E
    equal blocks of rows (an episode's beams) from generator e alone, so an episode's samples
    do not depend on which other episodes share the batch."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    blocks = probs.view(len(generator), -1, probs.shape[-1])
    draws = [torch.multinomial(b, 1, generator=g) for b, g in zip(blocks, generator, strict=True)]
    return torch.cat(draws).squeeze(-1)


def choose_tokens(
    logits: torch.Tensor,
    rank: torch.Tensor | None,
    generator: Generators,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row from filtered logits (R, V), and whether that choice is valid:
    sampled, or (deterministic mode) the ``rank``-th most likely allowed token, invalid past
    the allowed ones, so copies of a beam explore distinct tokens instead of duplicates."""
    if rank is None:
        tokens = sample_rows(logits.softmax(-1), generator)
        return tokens, torch.ones_like(tokens, dtype=torch.bool)
    order = logits.argsort(dim=-1, descending=True, stable=True)
    n_allowed = torch.isfinite(logits).sum(-1)
    pick = torch.minimum(rank, n_allowed - 1).clamp_min(0)
    return order.gather(-1, pick[:, None]).squeeze(-1), rank < n_allowed


def _decode(table: torch.Tensor, tokens: torch.Tensor, dims: slice) -> torch.Tensor:
    """Bin centres of tokens (R, D') for transition dimensions ``dims``; stop → last bin."""
    t = table[dims]
    ids = tokens.clamp(0, t.shape[1] - 1)
    return t.gather(1, ids.T).T


@torch.no_grad()
def beam_search(
    model,
    discretizer: Discretizer,
    context: torch.Tensor,
    config: PlannerConfig,
    goal: torch.Tensor | None = None,
    q_function: QFunction | None = None,
    generator: Generators = None,
) -> Plan:
    """Plan ``config.horizon`` transitions for E episodes at once and return the best of each.

    ``context`` (E, n·td + N) raw bins: n whole transitions then the current observation.
    ``goal`` (E, goal_dim) bins for goal-conditioned models; ``q_function(s, a) -> (R,)`` on
    continuous inputs for mode ``q``; ``generator`` one, or one per episode.
    """
    cfg = config.validate()
    c = model.config
    N, M, td = c.observation_dim, c.action_dim, c.transition_dim
    E, L0 = context.shape
    if L0 % td != N:
        raise ValueError(
            f"context of {L0} tokens is not whole transitions ({td} tokens each) plus one "
            f"observation ({N} tokens)"
        )
    if cfg.mode == "q" and q_function is None:
        raise ValueError("mode 'q' needs a q_function(states, actions), e.g. IQL.q_value")
    if cfg.mode == "goal" and (c.goal_dim == 0 or goal is None):
        raise ValueError("mode 'goal' needs a goal-conditioned model (goal_dim > 0) and goal bins")
    n_context = L0 // td
    H, W, X, gamma = cfg.horizon, cfg.beam_width, cfg.n_expand, cfg.discount
    anchor = next(model.parameters())  # the model's dtype and device
    table = torch.as_tensor(discretizer.centres, dtype=anchor.dtype, device=anchor.device)
    r_dim, v_dim = [td - 2], [td - 1]

    def action_token(logits: torch.Tensor, rank: torch.Tensor | None):
        return choose_tokens(
            filter_top_k(filter_cdf(logits, cfg.cdf_act), cfg.k_act), rank, generator
        )

    window = Window(model, E, goal, cfg.max_context_transitions, cfg.use_cache)
    logits = window.feed(context)

    # Every episode starts with W·X copies of its context; at t = 0 they differ only by the
    # actions they sample (in deterministic mode: the 0th, 1st, ... most likely first token).
    per_episode = W * X
    rows = torch.arange(E, device=context.device).repeat_interleave(per_episode)
    window.share(rows, per_episode)
    logits = logits[rows]
    rank0 = torch.arange(per_episode, device=context.device).repeat(E)
    R = E * per_episode
    dtype = logits.dtype
    cum_reward = torch.zeros(R, dtype=dtype, device=logits.device)
    log_prob = torch.zeros_like(cum_reward)
    scores_log_prob = cfg.mode in ("likelihood", "goal")
    alive = torch.ones(R, dtype=torch.bool, device=logits.device)

    def add_log_prob(logits: torch.Tensor, tok: torch.Tensor) -> None:
        nonlocal log_prob
        if not scores_log_prob:  # reward and q modes never read it: skip the work
            return
        log_prob = log_prob + logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)

    def read(logits: torch.Tensor, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward or value: its expectation under the raw distribution scores the candidate;
        the most likely token continues the sequence (top-1, as in the original)."""
        probs = logits.softmax(-1)
        tok = probs.argmax(-1)
        add_log_prob(logits, tok)
        return discretizer.expectation(probs[:, None, :], dims)[:, 0], tok

    for t in range(H):
        if t > 0:  # expand: every surviving beam gets X copies
            rows = torch.arange(R, device=logits.device).repeat_interleave(X)
            if X > 1:
                window.select(rows)
            state = (logits, cum_reward, log_prob, alive)
            logits, cum_reward, log_prob, alive = (x[rows] for x in state)
            R = R * X
        rank = rank0 if t == 0 else torch.arange(R, device=logits.device) % X

        for j in range(M):
            # Deterministic copies differ in the first action token, then follow the argmax.
            r_j = None if not cfg.deterministic else rank if j == 0 else torch.zeros_like(rank)
            tok, valid = action_token(logits, r_j)
            alive = alive & valid
            add_log_prob(logits, tok)
            logits = window.feed(tok[:, None])

        r, r_tok = read(logits, r_dim)
        logits = window.feed(r_tok[:, None])
        v, v_tok = read(logits, v_dim)

        if cfg.mode == "reward":
            score = cum_reward + gamma**t * r + gamma ** (t + 1) * v
        elif cfg.mode == "q":
            s_t = _decode(table, window.seq[:, -(N + M + 1) : -(M + 1)], slice(0, N))
            a_t = _decode(table, window.seq[:, -(M + 1) : -1], slice(N, N + M))
            q = q_function(s_t, a_t).reshape(R).to(dtype)
            score = cum_reward + gamma**t * q
        else:
            score = log_prob
        score = score.masked_fill(~alive, float("-inf"))
        cum_reward = cum_reward + gamma**t * r

        # Prune to the best W candidates of every episode (sorted: column 0 is the best).
        C = R // E
        keep = min(W, C)
        top = score.view(E, C).topk(keep, dim=1).indices
        rows = (top + torch.arange(E, device=top.device)[:, None] * C).flatten()
        window.select(rows)
        state = (logits, cum_reward, log_prob, score, v_tok, alive)
        logits, cum_reward, log_prob, score, v_tok, alive = (x[rows] for x in state)
        R = E * keep

        if t == H - 1:
            window.append(v_tok[:, None])
            break
        logits = window.feed(v_tok[:, None])
        for _ in range(N):
            tok = logits.argmax(-1)  # observations are greedy, as in the paper
            add_log_prob(logits, tok)
            logits = window.feed(tok[:, None])

    best = torch.arange(E, device=logits.device) * (R // E)
    tokens = window.seq[best, n_context * td :].reshape(E, H, td)
    decoded = torch.as_tensor(
        discretizer.decode(tokens.cpu().numpy()), dtype=dtype, device=tokens.device
    )
    return Plan(
        action=decoded[:, 0, N : N + M],
        sequence=decoded,
        tokens=tokens,
        score=score[best],
    )


class TTPlanner:
    """A Trajectory Transformer agent: context buffers for E episodes and replanning each step.

    ``reset(E)`` starts E episodes; ``act(obs, index)`` plans for those still running and
    returns the first action of every best plan; ``observe(r, index)`` stores the executed
    transition as context. ``episode_seeds`` gives episode i its own generator: it then plans
    what a planner with ``seed = episode_seeds[i]`` planning it alone would (up to float
    rounding), so episodes planned together can be cached one by one.
    """

    def __init__(
        self,
        model,
        discretizer: Discretizer,
        config: PlannerConfig | None = None,
        goal_dims: Sequence[int] | None = None,
        q_function: QFunction | None = None,
        memory_limit: int | str | None = None,
        episode_seeds: Sequence[int] | None = None,
        goal_relative: bool = False,
    ):
        self.model = model.eval()
        self.memory_limit = memory_limit  # reset()'s (and evaluate()'s early check's)
        self.discretizer = discretizer
        self.config = (config or PlannerConfig()).validate()
        self.goal_dims = list(goal_dims) if goal_dims is not None else None
        self.q_function = q_function
        c = model.config
        if discretizer.dim != c.transition_dim:
            raise ValueError(
                f"discretizer has {discretizer.dim} dimensions, the model's transitions "
                f"{c.transition_dim}: they come from different checkpoints"
            )
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(self.device).manual_seed(self.config.seed)
        self.episode_seeds = None if episode_seeds is None else [int(x) for x in episode_seeds]
        self.generators: list[torch.Generator] = []
        if c.goal_dim > 0 and self.goal_dims is None:
            raise ValueError("this model is goal-conditioned: pass goal_dims (the data config's)")
        # goal_relative: the model was trained with DataConfig(goal_relative=True), its goal
        # relative to the first state of its sequence; that state must not leave the window
        self.goal_relative = goal_relative
        seen = self.config.max_context_transitions + self.config.horizon
        if goal_relative and seen > c.n_transitions:
            raise ValueError(
                f"a relative goal needs context + horizon ({seen} transitions) within the "
                f"model's window ({c.n_transitions}): the sequence's first state must stay in it"
            )
        self.plans: list[Plan] = []
        self.n_episodes = 0

    def reset(self, n_episodes: int, goals: np.ndarray | None = None) -> None:
        """Forget all context; ``goals`` (E, G) for goal-conditioned models. A
        :class:`ttlib.errors.PlanningMemoryError` now if the plans would not fit in memory."""
        check_planning_memory(
            self.model.config, self.config, n_episodes, self.memory_limit, device=self.device
        )
        if self.episode_seeds is not None:
            if len(self.episode_seeds) != n_episodes:
                raise ValueError(
                    f"reset({n_episodes}) but the planner has {len(self.episode_seeds)} "
                    "episode_seeds: give one seed per episode"
                )
            self.generators = [
                torch.Generator(self.device).manual_seed(s) for s in self.episode_seeds
            ]
        self.n_episodes = n_episodes
        self.context: list[list[np.ndarray]] = [[] for _ in range(n_episodes)]
        self._pending: dict[int, np.ndarray] = {}
        self.goal_tokens: torch.Tensor | None = None
        if self.model.config.goal_dim > 0:
            if goals is None:
                raise ValueError("this model is goal-conditioned: reset(n_episodes, goals=...)")
            goals = np.asarray(goals, dtype=np.float64).reshape(n_episodes, -1)
            self.goal_tokens = torch.as_tensor(
                self.discretizer.encode(goals, dims=self.goal_dims), device=self.device
            )

    def _index(self, index, n: int) -> np.ndarray:
        index = np.arange(n) if index is None else np.asarray(index, dtype=np.int64)
        if len(index) != n or (n > 0 and (index.min() < 0 or index.max() >= self.n_episodes)):
            raise ValueError(
                f"got {n} rows for episodes {index.tolist()}, but reset() started "
                f"{self.n_episodes} episodes: call reset(n_episodes) first"
            )
        return index

    def act(self, observations: np.ndarray, index: Sequence[int] | None = None) -> np.ndarray:
        """Plan for episodes ``index`` (default: all) from their observations (len(index), N)."""
        c = self.model.config
        N = c.observation_dim
        observations = np.asarray(observations, dtype=np.float64).reshape(-1, N)
        index = self._index(index, len(observations))
        obs_tokens = self.discretizer.encode(observations, dims=slice(0, N))
        actions = np.zeros((len(index), c.action_dim), dtype=np.float32)
        self.plans = []
        # Episodes with the same number of context transitions are planned in one batch.
        lengths = np.array([len(self.context[i]) for i in index])
        for n in np.unique(lengths):
            rows = np.flatnonzero(lengths == n)
            prefix = [np.concatenate([*self.context[index[r]], obs_tokens[r]]) for r in rows]
            context = torch.as_tensor(np.stack(prefix), device=self.device).reshape(len(rows), -1)
            goal = None if self.goal_tokens is None else self.goal_tokens[index[rows]]
            if goal is not None and self.goal_relative:  # as trained: from the first state
                goal = relative_goal_bins(goal, context[:, self.goal_dims], c.n_bins)
            generator = self.generator
            if self.episode_seeds is not None:
                generator = [self.generators[index[r]] for r in rows]
            plan = beam_search(
                self.model, self.discretizer, context, self.config, goal, self.q_function, generator
            )
            self.plans.append(plan)
            actions[rows] = plan.action.float().cpu().numpy()
            first = plan.tokens[:, 0].cpu().numpy()
            for k, r in enumerate(rows):
                self._pending[int(index[r])] = first[k].copy()
        return actions

    def observe(self, rewards: np.ndarray, index: Sequence[int] | None = None) -> None:
        """Store the last planned transitions with their real rewards as context."""
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        index = self._index(index, len(rewards))
        td = self.model.config.transition_dim
        r_tokens = self.discretizer.encode(rewards[:, None], dims=[td - 2])[:, 0]
        for i, r_tok in zip(index, r_tokens, strict=True):
            transition = self._pending.pop(int(i), None)
            if transition is None:
                raise RuntimeError(f"observe() for episode {i} without a preceding act()")
            # The value token is a placeholder (the original stores 1e6, i.e. the top bin):
            # no query attends to value keys, so it cannot change any prediction we use.
            transition[td - 2] = r_tok
            transition[td - 1] = self.discretizer.n_bins - 1
            buf = self.context[i]
            buf.append(transition)
            if len(buf) > self.config.max_context_transitions:
                buf.pop(0)
