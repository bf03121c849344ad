"""Evaluation episodes planned together are the ones planned alone, and are cached one by one."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ttlib.discretize import QuantileDiscretizer
from ttlib.evaluate import evaluate
from ttlib.experiments.cache import EPISODES_USED, cache_dir, config_key, provenance_file
from ttlib.experiments.episodes import episode_scores, seed_batches, tt_agent
from ttlib.model import GPTConfig, TrajectoryGPT
from ttlib.search import PlannerConfig, TTPlanner


@pytest.fixture(scope="module")
def hopper_planner():
    """An untrained Hopper-shaped model: its plans are random enough that any change in the
    samples an episode draws changes its actions, return and length."""
    torch.manual_seed(0)
    config = GPTConfig(observation_dim=11, action_dim=3, n_layer=1, n_head=2, n_embd=16)
    model = TrajectoryGPT(config).eval()
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2000, config.transition_dim))
    disc = QuantileDiscretizer(config.n_bins).fit(data)
    return model, disc, PlannerConfig(horizon=2, beam_width=4, cdf_act=0.6)


def test_seed_batches_are_runs_of_consecutive_seeds():
    assert seed_batches([3, 4, 5, 6, 9, 10, 12], 3) == [[3, 4, 5], [6], [9, 10], [12]]
    assert seed_batches([], 10) == []


@pytest.mark.slow
def test_episodes_planned_together_equal_each_planned_alone(hopper_planner):
    model, disc, planner = hopper_planner
    seeds = [20, 21, 22]
    together = evaluate(tt_agent(model, disc, planner)(seeds), "hopper", 3, 25, 20, progress=False)
    alone = [  # what the D4RL table did before: a fresh planner of seed s for episode s alone
        evaluate(
            TTPlanner(model, disc, replace(planner, seed=s)), "hopper", 1, 25, s, progress=False
        )  # fmt: skip
        for s in seeds
    ]
    assert together.returns.tolist() == [a.returns[0] for a in alone]  # bitwise
    assert together.lengths.tolist() == [a.lengths[0] for a in alone]
    assert len(set(together.lengths.tolist())) > 1  # episodes ended at different steps
    # the reason it needs a generator per episode: with one generator for the batch, an
    # episode's samples depend on the episodes planned beside it
    shared = TTPlanner(model, disc, replace(planner, seed=20))
    mixed = evaluate(shared, "hopper", 3, 25, 20, progress=False)
    assert mixed.returns[1:].tolist() != together.returns[1:].tolist()


@pytest.mark.slow
def test_batched_episodes_are_cached_one_by_one_with_a_share_of_the_time(hopper_planner):
    model, disc, planner = hopper_planner
    key = {"model": "untrained", "planner": "H2B4"}
    calls = []

    def make(seeds):
        calls.append(list(seeds))
        return tt_agent(model, disc, planner)(seeds)

    EPISODES_USED.clear()
    rows = episode_scores(key, make, "hopper", 4, 25, first_seed=20, together=3)
    assert calls == [[20, 21, 22], [23]]
    folder = cache_dir("d4rl", "episodes", config_key(key))
    sides = [
        json.loads(provenance_file(folder / f"seed{s}.json").read_text()) for s in range(20, 23)
    ]
    assert {s["planned_together"] for s in sides} == {3}
    assert len({s["wall_seconds"] for s in sides}) == 1  # equal shares of one batch
    assert [e["computed_in_this_run"] for e in EPISODES_USED] == [True] * 4

    # a longer evaluation plans only the missing episodes; the cached ones are loaded
    more = episode_scores(key, make, "hopper", 6, 25, first_seed=20, together=3)
    assert calls[2:] == [[24, 25]] and more[:4] == rows
    # and the batch layout does not change an episode: one at a time gives the same rows
    alone = episode_scores({**key, "layout": 1}, make, "hopper", 6, 25, first_seed=20, together=1)
    assert [r["return"] for r in alone] == [r["return"] for r in more]
