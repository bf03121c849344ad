"""The four-rooms goal classifier: numbers or bins in, TT's action bins out."""

import numpy as np
import pytest

from ttlib.data import Episode
from ttlib.discretize import UniformDiscretizer
from ttlib.experiments.goal_tokens import (
    ClassifierAgent,
    ClassifierConfig,
    GoalClassifier,
    train_goal_classifier,
)


def straight_episodes(n=60, T=12, seed=0):
    """Each episode moves the point in a straight line with a constant ±1 action per axis, so
    every later position (a hindsight goal) lies on the side the action pushes to."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        d = rng.choice([-1.0, 1.0], size=2)
        xy = rng.uniform(-1, 1, 2) + 0.15 * np.arange(T)[:, None] * d
        obs = np.c_[xy, np.repeat(d[None] * 0.0, T, 0)].astype(np.float32)  # velocity says nothing
        eps.append(Episode(obs, np.repeat(d[None], T, 0).astype(np.float32), np.zeros(T), True))
    return eps


def fitted_discretizer(eps, n_bins=20):
    joined = np.concatenate([np.c_[e.observations, e.actions, e.rewards, e.rewards] for e in eps])
    return UniformDiscretizer(n_bins).fit(joined)


@pytest.mark.parametrize("tokens", [False, True])
@pytest.mark.slow
def test_the_classifier_learns_to_push_towards_the_goal(tokens):
    eps = straight_episodes()
    disc = fitted_discretizer(eps)
    model = train_goal_classifier(eps, disc, tokens, ClassifierConfig(steps=300, seed=0))
    rng = np.random.default_rng(1)
    d = rng.choice([-1.0, 1.0], size=(200, 2))
    states = np.c_[rng.uniform(-0.5, 0.5, (200, 2)), np.zeros((200, 2))]
    goals = states[:, :2] + 0.9 * d  # a goal some steps ahead along each diagonal
    actions = model.act(states, goals)
    assert actions.shape == (200, 2) and actions.dtype == np.float32
    # the action's sign follows the goal: with the goal swapped to the other side it flips
    assert (np.sign(actions) == d).mean() > 0.9
    assert (np.sign(model.act(states, states[:, :2] - 0.9 * d)) == -d).mean() > 0.9


def test_token_inputs_are_each_numbers_own_bins():
    eps = straight_episodes(n=5)
    disc = fitted_discretizer(eps, n_bins=10)
    model = GoalClassifier(disc, 4, 2, tokens=True, cfg=ClassifierConfig())
    states = np.c_[np.full((3, 2), 0.3), np.zeros((3, 2))]
    x = model.inputs(states, states[:, :2]).numpy()
    bins = disc.encode(np.c_[states, states[:, :2]], dims=[0, 1, 2, 3, 0, 1])
    # the goal's x and y use the bins of the state's x and y, each in its own embedding range
    assert (x == bins + np.arange(6) * 10).all()
    assert (x[:, 4:] - 40 == x[:, :2]).all()
    # actions decode to bin centres of the action dims
    a = model.act(states, states[:, :2])
    centres = disc.centres[4:6]
    assert all(np.isclose(a[:, j, None], centres[j][None]).any(1).all() for j in range(2))


def test_the_agent_needs_goals():
    eps = straight_episodes(n=5)
    model = GoalClassifier(fitted_discretizer(eps), 4, 2, tokens=False, cfg=ClassifierConfig())
    agent = ClassifierAgent(model)
    with pytest.raises(ValueError, match="goals"):
        agent.reset(2)
    agent.reset(2, goals=np.zeros((2, 2)))
    assert agent.act(np.zeros((1, 4)), np.array([1])).shape == (1, 2)
