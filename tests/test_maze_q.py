"""TT(+Q) on mazes: geometry of the value map, the evaluation tasks, success aggregation,
the AntMaze ids and the paper's AntMaze table."""

import numpy as np
import pandas as pd
import pytest
import torch

from ttlib.datagen.maze_controller import bfs_distances, cell_to_xy
from ttlib.envs import make_env, maze_map
from ttlib.evaluate import evaluate
from ttlib.experiments import maze_q
from ttlib.experiments import maze_q_report as report
from ttlib.experiments.mazes import PathRecorder
from ttlib.iql import IQL, IQLConfig

# A 4 x 5 maze: walls around, one inner wall, six free cells in a U.
U_MAZE = [
    [1, 1, 1, 1, 1],
    [1, 0, 0, 0, 1],
    [1, 0, 1, 0, 1],
    [1, 1, 1, 1, 1],
]


class PositionCritic:
    """A stand-in critic whose V is 100·x + y of the state, and Q the sum of its inputs."""

    def __init__(self):
        self.config = IQLConfig(reward_bias=-1.0)

    def value(self, s: torch.Tensor) -> torch.Tensor:
        return 100 * s[:, 0] + s[:, 1]

    def q_value(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return s.sum(-1) + a.sum(-1)


# ------------------------------------------------------------------ geometry
def test_value_map_covers_exactly_the_free_cells():
    layout = maze_map("pointmaze-medium")
    vm = report.value_map(PositionCritic(), layout, np.zeros(2), np.zeros(6), per_cell=3)
    free = np.kron(np.asarray(layout) == 0, np.ones((3, 3), bool))
    assert vm.values.shape == (8 * 3, 8 * 3)
    np.testing.assert_array_equal(np.isfinite(vm.values), free)


def test_value_map_points_lie_inside_their_cells_and_get_the_goal():
    seen = []

    class Recorder(PositionCritic):
        def value(self, s):
            seen.append(s.clone())
            return super().value(s)

    goal = np.array([0.7, -0.3])
    vm = report.value_map(Recorder(), U_MAZE, goal, np.zeros(4), per_cell=2)
    states = seen[0]
    np.testing.assert_allclose(states[:, -2:].numpy(), np.tile(goal, (len(states), 1)), 1e-6)
    # The top-left free cell (row 1, col 1) has its centre at (-1.0, 0.5); its 2 x 2 points
    # lie a quarter cell away from it. V = 100 x + y reveals where each point was.
    centre = cell_to_xy(U_MAZE, (1, 1))
    np.testing.assert_allclose(centre, [-1.0, 0.5])
    block = vm.values[2:4, 2:4]
    expected = [
        [100 * (centre[0] + dx) + centre[1] + dy for dx in (-0.25, 0.25)] for dy in (0.25, -0.25)
    ]
    np.testing.assert_allclose(block, expected, atol=1e-4)
    assert vm.extent == (-2.5, 2.5, -2.0, 2.0)


def test_cell_centres_match_the_simulator():
    env = make_env("pointmaze-large")
    layout = maze_map("pointmaze-large")
    for cell in np.argwhere(np.asarray(layout) == 0)[::7]:
        np.testing.assert_allclose(
            cell_to_xy(layout, cell), env.unwrapped.maze.cell_rowcol_to_xy(cell)
        )


def test_bfs_distances_follow_corridors_not_walls():
    d = bfs_distances(U_MAZE, (2, 1))
    assert d[2, 3] == 4  # around the inner wall, not 2 through it
    assert d[2, 2] == -1 and d[0, 0] == -1


# ------------------------------------------------------------------ evaluation tasks
def test_evaluation_tasks_are_far_apart_seeded_and_in_free_cells():
    layout = maze_map("pointmaze-large")
    tasks = maze_q.evaluation_tasks(layout, 30, seed=3)
    again = maze_q.evaluation_tasks(layout, 30, seed=3)
    other = maze_q.evaluation_tasks(layout, 30, seed=4)
    key = lambda ts: [(tuple(t["reset_cell"]), tuple(t["goal_cell"])) for t in ts]  # noqa: E731
    assert key(tasks) == key(again) and key(tasks) != key(other)
    longest = max(
        bfs_distances(layout, tuple(c)).max() for c in np.argwhere(np.asarray(layout) == 0)
    )
    grid = np.asarray(layout)
    for t in tasks:
        start, goal = tuple(t["reset_cell"]), tuple(t["goal_cell"])
        assert grid[start] == 0 and grid[goal] == 0
        assert bfs_distances(layout, start)[goal] >= np.ceil(longest / 2)


def test_evaluation_tasks_repeat_only_when_too_few_pairs():
    tasks = maze_q.evaluation_tasks(U_MAZE, 4, min_fraction=1.0)
    pairs = {(tuple(t["reset_cell"]), tuple(t["goal_cell"])) for t in tasks}
    assert pairs == {((2, 1), (2, 3)), ((2, 3), (2, 1))}  # the only pairs 4 cells apart


# ------------------------------------------------------------------ aggregation
def _evaluation(maze, method, success):
    return {"maze": maze, "method": method, "success": success, "lengths": [5] * len(success)}


def test_success_rate_is_mean_times_100_with_standard_error():
    evs = [
        _evaluation("m", "TT", [True, False, False, False]),
        _evaluation("m", "TT(+Q)", [True, True, True, False]),
    ]
    table = report.success_table(report.episode_table(evs)).set_index("method")
    assert table.loc["TT", "success"] == pytest.approx(25.0)
    assert table.loc["TT(+Q)", "success"] == pytest.approx(75.0)
    # sample (ddof=1) std of {1, 0, 0, 0} is 1/2; s.e. = std / sqrt(4)
    assert table.loc["TT", "se"] == pytest.approx(100 * 0.5 / 2)
    assert list(table["episodes"]) == [4, 4]
    wide = report.wide_table(table.reset_index())
    assert wide.loc["m", "TT(+Q)"] == "75.0 ± 25.0"
    gain = report.q_gain(table.reset_index()).iloc[0]
    assert gain["gain"] == pytest.approx(50.0)
    assert gain["se"] == pytest.approx(np.hypot(25.0, 25.0))
    assert gain["z"] == pytest.approx(50.0 / np.hypot(25.0, 25.0))  # < 2: unclear


def test_q_gain_is_the_difference_in_units_of_its_standard_error():
    s = pd.DataFrame(
        {"maze": ["m", "m"], "method": ["TT", "TT(+Q)"], "success": [10.0, 60.0], "se": [3.0, 4.0]}
    )
    gain = report.q_gain(s).iloc[0]
    assert (gain["gain"], gain["se"], gain["z"]) == pytest.approx((50.0, 5.0, 10.0))
    only_tt = s[s["method"] == "TT"]
    assert report.q_gain(only_tt).empty  # no TT(+Q) row: no gain to report


def test_path_recorder_keeps_every_position_and_the_goal_of_each_episode():
    factory, recorders = PathRecorder.around(lambda **kw: make_env("fourrooms", **kw))
    result = evaluate(lambda obs: np.ones((len(obs), 2)), factory, 2, max_steps=3, progress=False)
    assert len(recorders) == 2
    for i, rec in enumerate(recorders):
        assert len(rec.positions) == result.lengths[i] + 1  # the reset position, then each step
        assert not np.allclose(rec.positions[0], rec.positions[-1])  # pushed by the action
    # each episode's own reset: different start noise, the goal its observation named
    assert not np.allclose(recorders[0].positions[0], recorders[1].positions[0])
    env = make_env("fourrooms")
    obs, _ = env.reset(seed=1)
    np.testing.assert_allclose(recorders[1].goal, obs["desired_goal"])
    np.testing.assert_allclose(recorders[1].positions[0], obs["achieved_goal"])


# ------------------------------------------------------------------ configs and the critic
def test_q_heuristic_maps_the_r_minus_1_critic_to_the_planners_reward_scale():
    q = maze_q.q_heuristic(PositionCritic(), discount=0.99)
    s, a = torch.tensor([[-50.0, 0.0]]), torch.tensor([[0.0]])
    # Q_{r-1} = -50 → 1 + 0.01 · (-50) = 0.5; Q_{r-1} = 0 (at the goal) → 1
    assert q(s, a).item() == pytest.approx(0.5)
    assert q(torch.zeros(1, 2), a).item() == pytest.approx(1.0)


def test_real_iql_critic_runs_through_the_heuristic_and_value_map():
    iql = IQL(6, 2, IQLConfig(hidden=(8,), reward_bias=-1.0)).eval()
    q = maze_q.q_heuristic(iql, 0.99)
    assert q(torch.zeros(3, 6), torch.zeros(3, 2)).shape == (3,)
    vm = report.value_map(iql, U_MAZE, np.zeros(2), np.zeros(6), per_cell=1)
    assert np.isfinite(vm.values).sum() == 5


def test_maze_data_has_no_terminal_penalty_and_the_goal_in_the_state():
    params = {
        "mazes": ["pointmaze-large"],
        "discretizer": "uniform",
        "dataset_transitions": 1000,
    }
    (maze,) = maze_q.mazes_for(params)
    cfg = maze_q.data_config(maze, params)
    assert cfg.dataset_id == "ttlib/pointmaze-large/diverse-v0"
    assert cfg.termination_penalty is None
    assert cfg.obs_keys == ["observation", "desired_goal"]


def test_unknown_maze_is_rejected_by_name():
    with pytest.raises(ValueError, match="pointmaze-huge"):
        maze_q.mazes_for({"mazes": ["pointmaze-huge"]})


def test_glue_names_are_identifiers():
    assert report.glue_name("pointmaze-large", "TT(+Q)") == "pointmaze_large_tt_q"
    assert report.glue_name("pointmaze-medium", "BC") == "pointmaze_medium_bc"


# ------------------------------------------------------------------ AntMaze
def test_antmaze_names_map_to_minari_d4rl_ids():
    assert maze_q.antmaze_dataset_id("umaze") == "D4RL/antmaze/umaze-v1"
    assert maze_q.antmaze_dataset_id("antmaze-large-diverse") == "D4RL/antmaze/large-diverse-v1"
    assert maze_q.antmaze_dataset_id("medium-play-v1") == "D4RL/antmaze/medium-play-v1"
    with pytest.raises(ValueError, match="huge-play"):
        maze_q.antmaze_dataset_id("huge-play")


def test_antmaze_family_uses_position_first_goal_last():
    params = {"antmaze_datasets": ["umaze", "large-play"]}
    params["antmaze_namespace"] = "D4RL"  # Minari's remote datasets
    mazes = maze_q.mazes_for(params)
    assert [m.dataset_id for m in mazes] == ["D4RL/antmaze/umaze-v1", "D4RL/antmaze/large-play-v1"]
    assert [m.name for m in mazes] == ["antmaze-umaze", "antmaze-large-play"]
    assert mazes[0].obs_keys == ["achieved_goal", "observation", "desired_goal"]


def test_paper_antmaze_table_holds_the_papers_numbers():
    t = report.paper_antmaze_table().set_index("dataset")
    assert list(t.index) == [
        "umaze",
        "medium-play",
        "medium-diverse",
        "large-play",
        "large-diverse",
    ]
    assert t.loc["large-diverse", "TT(+Q)"] == 60.0 and t.loc["large-diverse", "TT(+Q) se"] == 12.7
    assert t.loc["medium-play", "IQL"] == 71.2 and t.loc["umaze", "BC"] == 54.6
    assert t["source"].str.contains("secondary source").all()
    # The five rows reproduce the printed averages, except CQL (printed 44.9, rows 43.9).
    for method, printed in report.PAPER_PRINTED_AVERAGES.items():
        mean = round(float(t[method].mean()), 1)
        if method == "CQL":
            assert (mean, printed) == (43.9, 44.9)
        else:
            assert mean == printed, method


def test_value_by_distance_averages_cells_by_their_path_length_to_the_goal():
    # V = 100 x + y; goal in cell (2, 1) of the U maze, at its centre (-1.0, -0.5).
    vm = report.value_map(PositionCritic(), U_MAZE, np.array([-1.0, -0.5]), np.zeros(4), 2)
    table = report.value_by_distance(vm, U_MAZE).set_index("cells to goal")["V"]
    assert list(table.index) == [0, 1, 2, 3, 4]
    # d = 0: cell (2, 1) centre (-1, -0.5); d = 2: cell (1, 2) centre (0, 0.5);
    # d = 4: cell (2, 3) centre (1, -0.5) — means over a cell equal the centre's value.
    assert table[0] == pytest.approx(-100.5)
    assert table[2] == pytest.approx(0.5)
    assert table[4] == pytest.approx(99.5)


def test_closest_approach_counts_cells_along_the_maze_not_through_walls():
    # D4RL's umaze: the start (1, 1) and the goal (3, 1) are 2 rows apart, 6 cells by the corridor
    from ttlib.datagen.maze_controller import cell_to_xy

    layout = [[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 1, 1, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]]
    xy = lambda *cells: [list(cell_to_xy(layout, c)) for c in cells]  # noqa: E731
    goal = cell_to_xy(layout, (3, 1)).tolist()
    evaluations = [
        {"maze": "u", "method": "stuck", "paths": [xy((1, 1))], "goals": [goal]},
        {"maze": "u", "method": "halfway", "paths": [xy((1, 1), (1, 2), (1, 3), (2, 3))],
         "goals": [goal]},
        {"maze": "u", "method": "there", "paths": [xy((1, 1), (1, 2), (1, 3), (2, 3), (3, 3),
         (3, 2), (3, 1)), xy((1, 1))], "goals": [goal, goal]},
    ]  # fmt: skip
    table = report.closest_approach(evaluations, {"u": (layout, 1.0)}).set_index("method")
    assert (table["start (cells to goal)"] == 6).all()
    assert table["closest (cells, median)"].to_dict() == {"stuck": 6, "halfway": 3, "there": 3}
    assert table["entered the goal's cell (%)"].to_dict() == {"stuck": 0, "halfway": 0, "there": 50}
