"""Env names, the four-rooms layout and D4RL score normalisation."""

from collections import deque

import numpy as np
import pytest

from ttlib.envs import (
    ENV_NAMES,
    FOUR_ROOMS_MAP,
    REF_SCORES,
    make_env,
    maze_map,
    normalized_score,
)


def _components(free: np.ndarray) -> int:
    """Number of 4-connected regions of free cells."""
    seen = np.zeros_like(free)
    count = 0
    for start in zip(*np.nonzero(free), strict=True):
        if seen[start]:
            continue
        count += 1
        seen[start] = True
        queue = deque([start])
        while queue:
            r, c = queue.popleft()
            for n in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if free[n] and not seen[n]:
                    seen[n] = True
                    queue.append(n)
    return count


@pytest.mark.parametrize("name", ENV_NAMES)
def test_every_env_name_builds_and_steps(name):
    env = make_env(name)
    obs, _ = env.reset(seed=0)
    obs2, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs2)
    assert np.isfinite(reward) and not truncated
    env.close()


def test_maze_envs_use_sparse_goal_reward_and_terminate_at_goal():
    env = make_env("fourrooms")
    obs, _ = env.reset(
        seed=0, options={"reset_cell": np.array([1, 1]), "goal_cell": np.array([1, 1])}
    )
    _, reward, terminated, _, _ = env.step(np.zeros(2, dtype=np.float32))
    assert reward == 1.0 and terminated  # start and goal share a cell (noise ≤ 0.25 each)


def test_four_rooms_is_four_rooms_joined_by_four_doorways():
    free = np.array(FOUR_ROOMS_MAP) == 0
    assert free.shape == (11, 11)
    assert not free[0].any() and not free[-1].any() and not free[:, 0].any()
    assert _components(free) == 1
    # a doorway is a free cell on the cross-shaped wall (row 5 or column 5)
    doors = [(r, c) for r, c in zip(*np.nonzero(free), strict=True) if r == 5 or c == 5]
    assert len(doors) == 4
    walled = free.copy()
    for d in doors:
        walled[d] = False
    assert _components(walled) == 4


def test_maze_map_has_no_reset_or_goal_markers():
    for name in ("pointmaze-medium", "pointmaze-large"):
        assert {c for row in maze_map(name) for c in row} == {0, 1}


def test_unknown_env_name_is_named_with_a_suggestion():
    with pytest.raises(ValueError, match=r"'halfcheeta'.*Did you mean 'halfcheetah'"):
        make_env("halfcheeta")


def test_normalized_score_maps_reference_returns_to_0_and_100():
    lo, hi = REF_SCORES["hopper"]
    np.testing.assert_allclose(normalized_score("hopper", [lo, hi, (lo + hi) / 2]), [0, 100, 50])
    with pytest.raises(ValueError, match="fourrooms"):
        normalized_score("fourrooms", 1.0)
