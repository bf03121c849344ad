"""TT(+Q) on local AntMaze data (#23): the namespace knob, D4RL's evaluation task, and the
experiment's whole path on a tiny generated dataset."""

import numpy as np
import pytest

from ttlib.datagen.ant_controller import CONTROLLER_DIR, ControllerConfig, train_controller
from ttlib.datagen.antmaze_gen import EVAL_GOALS, START, UMAZE_GOAL
from ttlib.datagen.maze_controller import xy_to_cell
from ttlib.envs import ANTMAZE_MAX_EPISODE_STEPS, antmaze_layout
from ttlib.experiments import maze_q, runs
from ttlib.experiments import maze_q_antmaze as ant
from ttlib.experiments.cache import cached
from ttlib.experiments.presets import preset_params

MAZE_IDS = {
    "umaze": "ttlib/antmaze/umaze-v0",
    "medium": "ttlib/antmaze/medium-play-v0",
    "large": "ttlib/antmaze/large-diverse-v0",
}


def params(**kw) -> dict:
    """The smoke block on AntMaze: local umaze data, a few steps of everything."""
    base = preset_params("antmaze", "smoke")
    tiny = {"antmaze_datasets": ["umaze"], "antmaze_transitions": 60, "dataset_transitions": 60}
    tiny |= {"train_steps": 4, "iql_steps": 4, "bc_steps": 4, "episodes": 2}
    return {**base, "max_episode_steps": 5, **tiny, **kw}


def test_namespace_knob_picks_local_or_d4rl_ids_and_presets_default_to_local():
    def ids(namespace):
        two = params(antmaze_namespace=namespace, antmaze_datasets=["umaze", "large-play"])
        return [m.dataset_id for m in maze_q.mazes_for(two)]

    assert ids("ttlib") == ["ttlib/antmaze/umaze-v0", "ttlib/antmaze/large-play-v0"]
    assert ids("D4RL") == ["D4RL/antmaze/umaze-v1", "D4RL/antmaze/large-play-v1"]
    with pytest.raises(ValueError, match="antmaze_namespace"):
        ids("mujoco")
    # local at smoke and cpu, today's remote datasets at paper; D4RL-sized local data at cpu
    namespace = {p: preset_params("antmaze", p)["antmaze_namespace"] for p in ("smoke", "cpu")}
    assert namespace == {"smoke": "ttlib", "cpu": "ttlib"}
    assert preset_params("antmaze", "paper")["antmaze_namespace"] == "D4RL"
    assert preset_params("antmaze", "cpu")["antmaze_transitions"] == 1_000_000
    # both namespaces read the first dataset_transitions transitions (the remote meaning)
    for ns in ("ttlib", "D4RL"):
        (maze,) = maze_q.mazes_for(params(antmaze_namespace=ns))
        assert maze_q.data_config(maze, params(antmaze_namespace=ns)).max_transitions == 60


@pytest.mark.parametrize("maze", ["umaze", "medium", "large"])
def test_local_evaluation_is_d4rls_fixed_start_and_far_goal(maze):
    dataset_id = MAZE_IDS[maze]
    layout = antmaze_layout(maze)
    goal_cell = {"umaze": UMAZE_GOAL, "medium": (6, 6), "large": (7, 9)}[maze]
    assert EVAL_GOALS[maze] == goal_cell  # D4RL's *_TEST maps
    env = ant.eval_factory(dataset_id, 5000)()
    assert env.spec.max_episode_steps == ANTMAZE_MAX_EPISODE_STEPS[maze]  # D4RL: 700 / 1000
    assert ANTMAZE_MAX_EPISODE_STEPS[maze] == (700 if maze == "umaze" else 1000)
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        assert tuple(xy_to_cell(layout, obs["achieved_goal"], 4.0)) == START
        assert tuple(xy_to_cell(layout, obs["desired_goal"], 4.0)) == goal_cell
    assert ant.eval_factory(dataset_id, 20)().spec.max_episode_steps == 20  # a shorter run
    assert ant.layout(dataset_id) == (layout, 4.0)


def test_local_evaluation_ends_with_success_within_half_a_metre():
    env = ant.eval_factory(MAZE_IDS["umaze"], 100)()
    obs, _ = env.reset(seed=0)
    _, reward, terminated, _, info = env.step(np.zeros(8, dtype=np.float32))
    assert (reward, terminated, info["success"]) == (0.0, False, False)
    inner = env.unwrapped
    qpos, qvel = inner.data.qpos.copy(), inner.data.qvel.copy()
    qpos[:2] = obs["desired_goal"] + [0.48, 0.0]  # inside D4RL's 0.5, outside the env's 0.45
    inner.ant_env.set_state(qpos, qvel)
    obs, reward, terminated, _, info = env.step(np.zeros(8, dtype=np.float32))
    assert np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"]) > 0.45
    assert (reward, terminated, info["success"]) == (1.0, True, True)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A checkout whose results/policies holds a tiny (untrained) ant controller."""
    root = tmp_path_factory.mktemp("checkout")
    cfg = ControllerConfig(
        total_steps=64, chunk=64, milestone_every=64, n_envs=1, ppo_n_steps=64,
        episode_steps=50, eval_episodes=1, eval_steps=10, cache_dir=str(root / "cache"),
        out_dir=str(root / "results" / "policies" / CONTROLLER_DIR),
    )  # fmt: skip
    train_controller(cfg)
    return root


@pytest.mark.slow
def test_smoke_antmaze_run_generates_local_data_and_evaluates_d4rls_task(checkout, monkeypatch):
    import minari

    monkeypatch.setattr(runs, "repo_root", lambda: checkout)  # where ensure_dataset finds it
    p = params()
    (maze,) = maze_q.mazes_for(p)
    assert maze.dataset_id == "ttlib/antmaze/umaze-v0"
    models = maze_q.train_maze(maze, p)
    assert minari.load_dataset(maze.dataset_id).total_steps == 60  # antmaze_transitions
    assert models.episodes[0].observations.shape[1] == 2 + 27 + 2  # position, ant, goal

    def no_env(*a, **kw):
        raise AssertionError("a local maze needs neither Minari's stored env nor an env at all")

    monkeypatch.setattr(maze_q, "load_minari", no_env)
    with monkeypatch.context() as m:
        m.setattr(maze_q, "make_maze_env", no_env)
        assert maze_q.maze_layout(maze) == (antmaze_layout("umaze"), 4.0)
    keys = []
    spy = lambda kind, identity, *a, **kw: keys.append(identity) or cached(kind, identity, *a, **kw)  # noqa: E731
    monkeypatch.setattr(maze_q, "cached", spy)
    evaluations = maze_q.evaluate_maze(models, p, methods=("BC", "TT(+Q)"))
    for ev in evaluations:
        assert ev["lengths"] == [5, 5] and ev["tasks"] is None
        for path, goal in zip(ev["paths"], ev["goals"], strict=True):
            assert tuple(xy_to_cell(antmaze_layout("umaze"), path[0], 4.0)) == START
            assert tuple(xy_to_cell(antmaze_layout("umaze"), goal, 4.0)) == UMAZE_GOAL
    # the evaluations' cache keys say which task they evaluated (PointMaze's keys are
    # unchanged: tests/test_provenance.py finds them under their old names)
    assert [k["maze"] for k in keys] == ["ttlib/antmaze/umaze-v0"] * 2
    assert all(k["eval_task"] == "d4rl-antmaze" and k["episode_limit"] == 5 for k in keys)


def test_video_factory_renders_small_frames_only_when_asked():
    factory = ant.video_factory(MAZE_IDS["umaze"], 5)
    plain = factory()
    assert plain.render_mode is None and plain.spec.max_episode_steps == 5
    filmed = factory(render_mode="rgb_array")
    filmed.reset(seed=0)
    try:
        frame = filmed.render()
    except Exception as err:  # no OpenGL context on this machine
        pytest.skip(f"MuJoCo cannot render here: {err}")
    assert frame.shape == (160, 160, 3)
