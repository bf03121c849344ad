"""Beam search: each scoring mode on toy models whose next-token distributions are known,
batching and caching equivalences on a real (random) TrajectoryGPT."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from ttlib.discretize import UniformDiscretizer
from ttlib.model import GPTConfig
from ttlib.search import PlannerConfig, TTPlanner, beam_search, filter_cdf, filter_top_k

from conftest import tiny_gpt

NEG = float("-inf")


class ToyCache:
    """Remembers the tokens (and goal) fed so far; the toy recomputes from them."""

    def __init__(self, rows: int):
        self.tokens = torch.zeros((rows, 0), dtype=torch.long)
        self.goal = None
        self.length = 0

    def select(self, index):
        self.tokens = self.tokens[index]
        self.goal = None if self.goal is None else self.goal[index]
        return self

    def share_prefix(self, copies):  # the toy keeps no keys: sharing is copying
        return self.select(torch.arange(self.tokens.shape[0]).repeat_interleave(copies))


class ToyModel(nn.Module):
    """Same interface as TrajectoryGPT; the logits of every next token come from ``rule``.

    ``rule(prefix (R, L), goal)`` sees the window so far, which must start at s^0 of a
    transition and fit ``block_size``, as for the real model; otherwise the toy raises.
    """

    def __init__(self, config: GPTConfig, rule):
        super().__init__()
        self.config = config
        self.rule = rule
        self.anchor = nn.Parameter(torch.zeros(1))  # device / dtype for the planner
        self.full_forwards = 0

    def new_cache(self, batch_size: int) -> ToyCache:
        return ToyCache(batch_size)

    def forward(self, idx, targets=None, loss_mask=None, goal=None, cache=None):
        c = self.config
        if cache is not None and cache.length > 0:
            history, goal = torch.cat([cache.tokens, idx], 1), cache.goal
        else:
            self.full_forwards += 1
            if c.goal_dim > 0 and goal is None:
                raise ValueError("goal-conditioned toy called without a goal")
            history = idx
        if history.shape[1] > c.block_size:
            raise ValueError("window longer than block_size")
        if cache is not None:
            cache.tokens, cache.goal, cache.length = history, goal, history.shape[1]
        T0 = history.shape[1] - idx.shape[1]
        out = [self.rule(history[:, : T0 + p + 1], goal) for p in range(idx.shape[1])]
        return torch.stack(out, 1), None


def toy_discretizer(dim: int, K: int) -> UniformDiscretizer:
    """Bin b of every dimension decodes to b + 0.5."""
    return UniformDiscretizer(K).fit(np.array([[0.0] * dim, [float(K)] * dim]))


def one_hot_logits(R: int, K: int, token: torch.Tensor) -> torch.Tensor:
    out = torch.full((R, K + 1), NEG)
    out[torch.arange(R), token] = 0.0
    return out


K = 10
CHAIN = GPTConfig(observation_dim=1, action_dim=1, n_bins=K, n_transitions=3, dropout=0.0)


def chain_rule(prefix, goal, pay_now=False):
    """A 1-D chain: a ∈ {0 (p=0.7), 1 (p=0.3)}, s' = s + a, r = 1 for a = 0, 0 for a = 1,
    but 9 in any state s ≥ 2; V always bin 0. Myopically a = 0 is best, with lookahead 1.
    ``pay_now``: a = 1 pays 9 at once instead."""
    R, L = prefix.shape
    td = CHAIN.transition_dim
    pos = L % td  # index-in-transition of the token to predict
    start = (L - 1) // td * td
    s = prefix[:, start]
    if pos == 1:
        out = torch.full((R, K + 1), NEG)
        out[:, 0], out[:, 1] = math.log(0.7), math.log(0.3)
        return out
    a = prefix[:, start + 1]
    if pos == 2:
        r = torch.where(s >= 2, 9, torch.where(a == 0, 1, 9 if pay_now else 0))
        return one_hot_logits(R, K, r)
    if pos == 3:
        return one_hot_logits(R, K, torch.zeros(R, dtype=torch.long))
    return one_hot_logits(R, K, (s + a).clamp_max(K - 1))  # pos 0: next state


def plan_chain(
    mode, horizon, q_function=None, deterministic=True, pay_now=False, beam_width=4, k_act=None
):
    model = ToyModel(CHAIN, lambda prefix, goal: chain_rule(prefix, goal, pay_now))
    cfg = PlannerConfig(
        mode=mode,
        horizon=horizon,
        beam_width=beam_width,
        n_expand=2,
        cdf_act=None,
        k_act=k_act,
        deterministic=deterministic,
        discount=1.0,
    )
    context = torch.zeros((1, 1), dtype=torch.long)  # no past transitions, s = 0
    disc = toy_discretizer(CHAIN.transition_dim, K)
    gen = torch.Generator().manual_seed(0)
    return beam_search(model, disc, context, cfg, q_function=q_function, generator=gen), model


def test_reward_mode_takes_the_less_likely_branch_that_pays_later():
    plan, model = plan_chain("reward", horizon=4)
    assert plan.tokens[0, :, 1].tolist()[:2] == [1, 1]  # climb to s = 2, then collect 9s
    assert plan.action.item() == pytest.approx(1.5)  # bin 1 decodes to its centre
    assert plan.score.item() == pytest.approx(0.5 + 0.5 + 9.5 + 9.5 + 0.5)  # Σ r + V_last
    assert model.full_forwards > 1  # the 3-transition block forced re-encoding


def test_reward_mode_is_myopic_with_horizon_one():
    plan, _ = plan_chain("reward", horizon=1)
    assert plan.tokens[0, 0, 1].item() == 0


def test_likelihood_mode_follows_the_most_probable_actions():
    plan, _ = plan_chain("likelihood", horizon=4)
    assert plan.tokens[0, :, 1].tolist() == [0, 0, 0, 0]
    assert plan.score.item() == pytest.approx(4 * math.log(0.7))


def test_sampled_reward_mode_prefers_the_rarer_high_reward_action():
    plan, _ = plan_chain("reward", 1, deterministic=False, pay_now=True, beam_width=8)
    assert plan.tokens[0, 0, 1].item() == 1
    plan, _ = plan_chain("likelihood", 1, deterministic=False, pay_now=True, beam_width=8)
    assert plan.tokens[0, 0, 1].item() == 0


def test_q_mode_ranks_by_the_q_function_at_the_planned_state():
    seen = []

    def q(s, a):  # pays 10 for being in state 1 (decoded 1.5), whatever the action
        seen.append(s.clone())
        return 10.0 * (s[:, 0] == 1.5).to(s.dtype)

    plan, _ = plan_chain("q", horizon=2, q_function=q)
    assert plan.tokens[0, :, 1].tolist()[0] == 1  # a_0 = 1 reaches s_1 = 1
    assert plan.score.item() == pytest.approx(0.5 + 10.0)  # r_0 + Q(s_1, a_1)
    assert torch.cat(seen).unique().tolist() == [0.5, 1.5]  # decoded planned states
    reward_plan, _ = plan_chain("reward", horizon=2)
    assert reward_plan.tokens[0, 0, 1].item() == 0  # the value token alone says otherwise


# ---------------------------------------------------------------- goal reaching
GRID = 5
MOVES = torch.tensor([[1, 0], [-1, 0], [0, 1], [0, -1], [0, 0]])
GRID_CFG = GPTConfig(
    observation_dim=2, action_dim=1, n_bins=K, n_transitions=3, goal_dim=2, dropout=0.0
)


def grid_step(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return (s + MOVES[a.clamp_max(4)]).clamp(0, GRID - 1)


def grid_rule(prefix, goal):
    """An imitation model of goal-reaching data: p(a | s, g) puts 0.6 on the moves that get
    closer to g (0.9 on staying once there); states follow the moves deterministically.
    Transition layout: [x, y, a, r, V]."""
    R, L = prefix.shape
    td = GRID_CFG.transition_dim
    pos = L % td  # index-in-transition of the token to predict
    zeros = torch.zeros(R, dtype=torch.long)
    if pos == 2:  # the action, given the state just written
        s = prefix[:, L - 2 : L]
        moved = grid_step(s[:, None], torch.arange(5)[None].expand(R, 5))
        closer = (moved - goal[:, None]).abs().sum(-1) < (s - goal).abs().sum(-1, keepdim=True)
        n_closer = closer.sum(-1, keepdim=True).clamp_min(1)
        p = torch.where(closer, 0.6 / n_closer, 0.4 / (5 - n_closer))
        at_goal = (s == goal).all(-1, keepdim=True)
        p = torch.where(at_goal, torch.tensor([0.025] * 4 + [0.9]).expand(R, 5), p)
        out = torch.full((R, K + 1), NEG)
        out[:, :5] = p.log()
        return out
    if pos in (0, 1):  # a state token: where the previous transition's move leads
        prev = L - pos - td
        if prev < 0:  # inside the context's first state: nothing to predict from
            return one_hot_logits(R, K, zeros)
        nxt = grid_step(prefix[:, prev : prev + 2], prefix[:, prev + 2])
        return one_hot_logits(R, K, nxt[:, pos])
    return one_hot_logits(R, K, zeros)  # r and V: bin 0


@pytest.mark.parametrize("goal", [(4, 4), (0, 3)])
def test_goal_mode_reaches_the_goal_in_a_grid(goal):
    model = ToyModel(GRID_CFG, grid_rule)
    disc = toy_discretizer(GRID_CFG.transition_dim, K)
    cfg = PlannerConfig(
        mode="goal", horizon=3, beam_width=4, n_expand=2, cdf_act=None, deterministic=True
    )
    planner = TTPlanner(model, disc, cfg, goal_dims=[0, 1])
    goal_state = np.array([goal], dtype=float) + 0.5  # bin centres encode to the cells
    planner.reset(1, goals=goal_state)
    s = torch.tensor([[2, 0]])
    path = [tuple(s[0].tolist())]
    for _ in range(8):
        a = planner.act(s.numpy() + 0.5)
        s = grid_step(s, torch.as_tensor(disc.encode(a, dims=[2]))[:, 0])
        planner.observe(np.zeros(1))
        path.append(tuple(s[0].tolist()))
    assert path[-1] == goal, path
    assert len(planner.context[0]) == cfg.max_context_transitions


def relative_grid_rule(prefix, goal):
    """grid_rule for a model trained with relative goals: its goal tokens are the goal's cells
    minus those of the sequence's first state, shifted by K // 2."""
    return grid_rule(prefix, goal - K // 2 + prefix[:, :2])


@pytest.mark.parametrize("relative", [True, False])
def test_a_relative_goal_model_is_given_the_goal_from_the_sequences_first_state(relative):
    model = ToyModel(GRID_CFG, relative_grid_rule)
    disc = toy_discretizer(GRID_CFG.transition_dim, K)
    cfg = PlannerConfig(mode="goal", horizon=3, beam_width=4, n_expand=2, cdf_act=None,
                        deterministic=True, max_context_transitions=0)  # fmt: skip
    planner = TTPlanner(model, disc, cfg, goal_dims=[0, 1], goal_relative=relative)
    planner.reset(1, goals=np.array([[4.5, 4.5]]))
    s = torch.tensor([[2, 0]])
    for _ in range(8):
        a = planner.act(s.numpy() + 0.5)
        s = grid_step(s, torch.as_tensor(disc.encode(a, dims=[2]))[:, 0])
        planner.observe(np.zeros(1))
    # given absolute bins, the model reads the goal (4, 4) as 5 + (4, 4) - s: off the grid
    assert (tuple(s[0].tolist()) == (4, 4)) is relative


def test_a_relative_goal_planner_refuses_a_window_its_first_state_would_leave():
    with pytest.raises(ValueError, match="relative goal"):
        TTPlanner(ToyModel(GRID_CFG, relative_grid_rule), toy_discretizer(5, K),
                  PlannerConfig(mode="goal", horizon=3, max_context_transitions=1),
                  goal_dims=[0, 1], goal_relative=True)  # fmt: skip


# ---------------------------------------------------------------- real model equivalences
def random_gpt(n_transitions=4):
    model = tiny_gpt(n_transitions).double()
    nn.init.normal_(model.head, std=0.5)  # peaked distributions: plans differ by context
    disc = UniformDiscretizer(10).fit(np.random.default_rng(0).normal(size=(500, 7)))
    return model, disc


def random_context(E, n_ctx, td=7, N=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (E, n_ctx * td + N), generator=g)


PLAN = dict(horizon=4, beam_width=3, n_expand=3, k_act=5, cdf_act=None, discount=0.99)


@pytest.mark.parametrize("mode", ["reward", "likelihood"])
def test_batched_planning_equals_planning_each_episode_alone(mode):
    model, disc = random_gpt()
    ctx = random_context(3, 2)
    cfg = PlannerConfig(mode=mode, deterministic=True, **PLAN)
    together = beam_search(model, disc, ctx, cfg)
    for e in range(3):
        alone = beam_search(model, disc, ctx[e : e + 1], cfg)
        torch.testing.assert_close(alone.action[0], together.action[e])
        assert torch.equal(alone.tokens[0], together.tokens[e])
    assert len({tuple(t.flatten().tolist()) for t in together.tokens}) > 1


@pytest.mark.parametrize("deterministic", [True, False])
def test_cached_planning_equals_full_recomputation(deterministic):
    model, disc = random_gpt(n_transitions=4)  # block of 27 tokens: re-encodes several times
    ctx = random_context(2, 2)
    plans = []
    for use_cache in (True, False):
        cfg = PlannerConfig(**PLAN | dict(cdf_act=0.6, deterministic=deterministic))
        cfg.use_cache = use_cache
        plans.append(beam_search(model, disc, ctx, cfg, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(plans[0].tokens, plans[1].tokens)
    torch.testing.assert_close(plans[0].score, plans[1].score)


def test_planner_batches_episodes_with_different_context_lengths():
    model, disc = random_gpt(n_transitions=5)
    cfg = PlannerConfig(deterministic=True, max_context_transitions=2, **PLAN)
    obs = np.random.default_rng(0).normal(size=(2, 3))
    both, first = TTPlanner(model, disc, cfg), TTPlanner(model, disc, cfg)
    both.reset(2)
    first.reset(1)
    for step in range(3):  # episode 0 gets one transition of context more than episode 1
        index = [0] if step == 0 else [0, 1]
        a_both = both.act(obs[index] + step, index=index)
        a_first = first.act(obs[:1] + step)
        np.testing.assert_allclose(a_both[0], a_first[0])
        both.observe(np.ones(len(index)), index=index)
        first.observe(np.ones(1))
    assert [len(c) for c in both.context] == [2, 2]
    assert len(both.plans) == 2  # context lengths 2 and 1 differed on the last step


def test_filter_cdf_keeps_the_most_likely_tokens_covering_the_top_mass():
    p = torch.tensor([[0.05, 0.1, 0.2, 0.3, 0.35]])
    kept = torch.isfinite(filter_cdf(p.log(), 0.6))
    assert kept.tolist() == [[False, False, False, True, True]]
    uniform = torch.zeros(1, 8)
    assert torch.isfinite(filter_cdf(uniform, 0.6)).all()


def test_bad_context_and_mode_are_named():
    model, disc = random_gpt()
    with pytest.raises(ValueError, match="whole transitions"):
        beam_search(model, disc, torch.zeros((1, 5), dtype=torch.long), PlannerConfig())
    with pytest.raises(ValueError, match="q_function"):
        beam_search(model, disc, random_context(1, 0), PlannerConfig(mode="q"))
    with pytest.raises(ValueError, match="unknown planning mode"):
        PlannerConfig(mode="greedy").validate()


@pytest.mark.parametrize("n_expand", [2, 3])
@pytest.mark.parametrize("deterministic", [True, False])
def test_expanded_beams_plan_as_full_recomputation(n_expand, deterministic, monkeypatch):
    """Several episodes, beams expanded and pruned in the cache, windows that jump: the same
    plans as without a cache."""
    # A block of 41 tokens: the window jumps once or twice in 6 planned transitions, and
    # pruned rows are decoded over for a few transitions between jumps.
    model, disc = random_gpt(n_transitions=6)
    model = model.float()
    calls = {"windows": 0}
    forward = model.forward

    def counted_forward(idx, *args, **kwargs):
        calls["windows"] += idx.shape[1] > 1 and kwargs.get("cache") is not None
        return forward(idx, *args, **kwargs)

    monkeypatch.setattr(model, "forward", counted_forward)
    ctx = random_context(3, 2)
    plans = []
    for use_cache in (True, False):
        cfg = PlannerConfig(
            **PLAN | dict(horizon=6, n_expand=n_expand, cdf_act=0.6, deterministic=deterministic),
            use_cache=use_cache,
        )
        plans.append(beam_search(model, disc, ctx, cfg, generator=torch.Generator().manual_seed(3)))
        if use_cache:
            # The window jumped at least once after the context (each jump re-encodes the
            # window in one multi-token pass).
            assert calls["windows"] >= 2
    assert torch.equal(plans[0].tokens, plans[1].tokens)
    torch.testing.assert_close(plans[0].score, plans[1].score, rtol=0, atol=1e-5)
    assert len({tuple(t.flatten().tolist()) for t in plans[0].tokens}) > 1


def test_k_act_keeps_only_the_k_most_likely_action_tokens():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0], [0.0, 0.0, 2.0, -1.0]])
    kept = torch.isfinite(filter_top_k(logits, 2))
    assert kept.tolist() == [[False, True, False, True], [True, True, True, False]]  # ties stay
    assert torch.equal(filter_top_k(logits, None), logits)
    # in the planner: the chain's best plan starts with the less likely action (p = 0.3);
    # with k_act = 1 only the most likely one (p = 0.7) may be sampled
    assert plan_chain("reward", horizon=4)[0].tokens[0, :2, 1].tolist() == [1, 1]
    for deterministic in (True, False):
        plan, _ = plan_chain("reward", horizon=4, deterministic=deterministic, k_act=1)
        assert plan.tokens[0, :, 1].tolist() == [0, 0, 0, 0]
