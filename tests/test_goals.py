"""Four-rooms helpers: rooms, cross-room pairs, BFS path lengths, recorded rollouts."""

import numpy as np
import pytest
import torch

from ttlib.data import Episode
from ttlib.datagen.datasets_gen import GenConfig, maze_episodes
from ttlib.datagen.maze_controller import WaypointController, bfs_distances, cell_to_xy, xy_to_cell
from ttlib.discretize import UniformDiscretizer
from ttlib.envs import make_env, maze_map
from ttlib.experiments.goals import (
    GREEDY,
    ControllerAgent,
    GoalBCAgent,
    cell_path_length,
    doorways,
    goal_following,
    hindsight_goal_episodes,
    room_ids,
    run_from_cells,
    sample_pairs,
    shortest_path_length,
    success_summary,
    tt_greedy_actions,
)
from ttlib.search import TTPlanner

from conftest import tiny_gpt

FOUR = maze_map("fourrooms")


def path_length_ratio(layout, cells: np.ndarray) -> float:
    """Moves the path took over the shortest possible (the ratio of GoalRollouts.table)."""
    best = shortest_path_length(layout, tuple(cells[0]), tuple(cells[-1]))
    return cell_path_length(cells) / best if best > 0 else float("nan")


# Two 2x2 rooms joined by one doorway at (2, 3); (1, 3) and (3, 3) are walls.
TINY = [
    [1, 1, 1, 1, 1, 1, 1],
    [1, 0, 0, 1, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 1],
    [1, 1, 1, 1, 1, 1, 1],
]


def test_four_rooms_has_four_rooms_of_sixteen_cells_and_four_doorways():
    rooms = room_ids(FOUR)
    assert sorted(doorways(FOUR)) == [(3, 5), (5, 2), (5, 8), (8, 5)]
    assert rooms.max() == 3
    assert [int((rooms == k).sum()) for k in range(4)] == [16, 16, 16, 16]
    assert rooms[1, 1] == rooms[4, 4] != rooms[1, 6]  # top-left vs top-right
    assert rooms[6, 1] != rooms[6, 6] and rooms[9, 9] == rooms[6, 6]
    assert rooms[0, 0] == -1 and rooms[3, 5] == -1  # wall, doorway


def test_sampled_pairs_always_cross_rooms_and_avoid_doorways():
    rooms = room_ids(FOUR)
    pairs = sample_pairs(FOUR, 200, seed=3)
    assert len(pairs) == 200
    for start, goal in pairs:
        assert rooms[start] >= 0 and rooms[goal] >= 0
        assert rooms[start] != rooms[goal]
    assert pairs == sample_pairs(FOUR, 200, seed=3)
    assert pairs != sample_pairs(FOUR, 200, seed=4)


def test_pairs_need_two_rooms():
    with pytest.raises(ValueError, match="fewer than two rooms"):
        sample_pairs([[1, 1, 1], [1, 0, 1], [1, 1, 1]], 1)


def test_bfs_goes_round_the_wall_through_the_doorway():
    d = bfs_distances(TINY, (1, 1))
    assert d[1, 2] == 1 and d[2, 3] == 3
    assert d[1, 4] == 5  # (1,1)→(2,1)/(1,2)→(2,2)→(2,3)→(2,4)→(1,4)
    assert d[1, 3] == -1 and d[0, 0] == -1  # walls
    assert shortest_path_length(TINY, (1, 1), (2, 5)) == 5
    assert shortest_path_length(FOUR, (1, 1), (9, 9)) == 16
    with pytest.raises(ValueError, match="wall"):
        bfs_distances(TINY, (1, 3))


def test_path_length_ratio_is_at_least_one_for_random_valid_paths():
    rng = np.random.default_rng(0)
    free = np.array(FOUR) == 0
    for _ in range(200):
        cell = tuple(map(int, np.argwhere(free)[rng.integers(free.sum())]))
        path = [cell]
        for _ in range(rng.integers(1, 60)):
            r, c = path[-1]
            moves = [(r + dr, c + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))]
            moves = [m for m in moves if free[m]]
            path.append(moves[rng.integers(len(moves))])
            if rng.random() < 0.3:  # staying in a cell costs nothing
                path.append(path[-1])
        ratio = path_length_ratio(FOUR, np.array(path))
        assert np.isnan(ratio) or ratio >= 1.0


def test_shortest_path_has_ratio_one_and_detours_cost():
    straight = [(1, 1), (1, 2), (2, 2), (2, 3), (2, 4), (2, 5)]
    assert cell_path_length(np.array(straight)) == 5
    assert path_length_ratio(TINY, np.array(straight)) == 1.0
    detour = [(1, 1), (2, 1), (1, 1), *straight[1:]]
    assert path_length_ratio(TINY, np.array(detour)) == pytest.approx(7 / 5)
    assert cell_path_length(np.array([(1, 1), (2, 2)])) == 2  # diagonal = two moves


def test_cell_and_xy_conversions_match_pointmaze():
    maze = make_env("fourrooms").unwrapped.maze
    for cell in [(1, 1), (3, 5), (9, 9), (5, 8), (6, 2)]:
        xy = cell_to_xy(FOUR, cell)
        np.testing.assert_allclose(xy, maze.cell_rowcol_to_xy(np.array(cell)))
        for jitter in ([0.3, -0.2], [-0.45, 0.45]):
            p = xy + np.array(jitter)
            assert tuple(xy_to_cell(FOUR, p)) == tuple(maze.cell_xy_to_rowcol(p))


def test_controller_reaches_goals_in_other_rooms_and_paths_are_recorded():
    pairs = sample_pairs(FOUR, 3, seed=0)
    out = run_from_cells(ControllerAgent("fourrooms", seed=0), "fourrooms", pairs, max_steps=300)
    assert out.success.all()
    for (start, goal), path, g in zip(out.pairs, out.paths, out.goals, strict=True):
        assert tuple(xy_to_cell(FOUR, path[0])) == start
        assert tuple(xy_to_cell(FOUR, g)) == goal
        assert np.linalg.norm(path[-1] - g) < 0.5
    table = out.table()
    assert (table["ratio"] >= 1.0).all()
    summary = success_summary(out)
    assert summary["success"] == 1.0 and summary["ratio_mean"] < 2.0
    assert [len(p) - 1 for p in out.paths] == out.result.lengths.tolist()


# ------------------------------------------------------------------ goal-conditioned BC
def controller_episodes(transitions: int = 800) -> list[Episode]:
    """A few four-rooms episodes of the data's noisy controller, as the loader gives them."""
    buffers = maze_episodes("fourrooms", GenConfig(transitions=transitions))
    return [
        Episode(
            b.observations["observation"][:-1].astype(np.float32),
            b.actions,
            b.rewards,
            bool(b.terminations[-1]),
            b.observations["desired_goal"][:-1].astype(np.float32),
        )
        for b in buffers
    ]


def test_controller_command_is_its_action_before_noise_and_clipping():
    env = make_env("fourrooms")
    quiet = WaypointController(
        env, "fourrooms", GenConfig(action_noise=0.0), np.random.default_rng(0)
    )
    quiet.set_goal((9, 9))
    goal = cell_to_xy(FOUR, (9, 9))
    for state in ([-4.0, 4.0, 0.0, 0.0], [3.2, -3.1, 1.5, -0.5], [0.1, 3.0, -5.0, 0.2]):
        obs = {"observation": np.array(state), "desired_goal": goal}
        u = quiet.command(np.array(state), goal)
        np.testing.assert_allclose(quiet(obs), np.clip(u, -1, 1).astype(np.float32))


def test_hindsight_goal_episodes_append_a_later_position_of_the_same_episode():
    T = 30
    obs = np.stack([np.arange(T), 100 + np.arange(T), np.zeros(T), np.zeros(T)], 1)
    ep = Episode(obs.astype(np.float32), np.zeros((T, 2), np.float32), np.zeros(T), False)
    out = hindsight_goal_episodes([ep, ep], copies=3, seed=0)
    assert len(out) == 6
    for e in out:
        assert e.observations.shape == (T, 6)
        np.testing.assert_array_equal(e.observations[:, :4], obs)
        k = e.observations[:, 4]
        assert (k >= np.arange(T)).all() and (k <= T - 1).all()  # a later step (or this one)
        np.testing.assert_array_equal(e.observations[:, 5], 100 + k)  # x and y of one state
    assert not np.array_equal(out[0].observations, out[1].observations)  # copies differ


def test_goal_bc_agent_gives_each_episode_its_own_goal():
    class Echo:  # a "policy" that returns the last two inputs: the goal it was given
        def act(self, x):
            return x[:, -2:]

    agent = GoalBCAgent(Echo())
    goals = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    agent.reset(3, goals)
    np.testing.assert_array_equal(agent.act(np.zeros((2, 4)), np.array([2, 0])), goals[[2, 0]])
    with pytest.raises(ValueError, match="needs the goals"):
        agent.reset(3)


def test_goal_following_scores_the_controller_fully_and_a_goal_blind_policy_near_chance():
    episodes = controller_episodes()
    maze = make_env("fourrooms").unwrapped.maze
    controller = WaypointController(make_env("fourrooms"), "fourrooms", GenConfig(), None)

    def follows(states, goals):
        out = []
        for s, g in zip(states, goals, strict=True):
            controller.set_goal(tuple(int(v) for v in maze.cell_xy_to_rowcol(g)))
            out.append(np.clip(controller.command(s, g), -1, 1))
        return np.array(out)

    def keeps_going(states, goals):  # ignores the goal: pushes the way the point moves
        return states[:, 2:4]

    assert goal_following(follows, episodes, n=200) == {"states": 200, "own": 1.0, "swapped": 1.0}
    blind = goal_following(keeps_going, episodes, n=200)
    assert blind["own"] > 0.6  # along the data's own path, velocity predicts the action ...
    assert blind["swapped"] < blind["own"] - 0.1  # ... but not towards another goal


def test_tt_greedy_actions_are_the_planners_horizon_one_beam_one_actions():
    model = tiny_gpt(goal_dim=2).double()
    torch.nn.init.normal_(model.head, std=0.5)
    disc = UniformDiscretizer(10).fit(np.random.default_rng(0).normal(size=(500, 7)))
    rng = np.random.default_rng(1)
    states, goals = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    planner = TTPlanner(model, disc, GREEDY, goal_dims=[0, 1])
    planner.reset(6, goals)
    expected = planner.act(states)
    np.testing.assert_allclose(tt_greedy_actions(model, disc, [0, 1])(states, goals), expected)
