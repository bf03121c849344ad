"""AntMaze (#23): the arena controller, the BFS navigator and the D4RL-style datasets."""

import json
import re

import numpy as np
import pytest
import torch

from ttlib.datagen.ant_controller import (
    ARENA,
    CONTROLLER_DIR,
    ArenaTargets,
    ControllerConfig,
    goal_obs,
    load_controller,
    milestone_path,
    read_curve,
    success_rate,
    train_controller,
    yaw,
)
from ttlib.datagen.antmaze_gen import PLAY_CELLS, Navigator, episode_cells, split_kind
from ttlib.datagen.datasets_gen import GenConfig, make_dataset, make_datasets
from ttlib.datagen.maze_controller import bfs_distances, xy_to_cell
from ttlib.envs import antmaze_layout, dataset_id, make_antmaze, make_env


def tiny_cfg(root, **kw) -> ControllerConfig:
    """A few hundred steps of PPO in the arena: enough to write and resume checkpoints."""
    base = dict(
        total_steps=128,
        chunk=64,
        milestone_every=64,
        n_envs=1,
        ppo_n_steps=64,
        episode_steps=50,
        eval_episodes=1,
        eval_steps=10,
        cache_dir=str(root / "cache"),
        out_dir=str(root / "out" / CONTROLLER_DIR),
    )
    return ControllerConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """A tiny controller milestone at <policy_dir>/antmaze/milestone.zip."""
    root = tmp_path_factory.mktemp("controller")
    train_controller(tiny_cfg(root, total_steps=64))
    return root / "out"


# ---------------------------------------------------------------- env and arena


def test_arena_is_walled_and_has_no_inner_walls():
    env = ArenaTargets(ControllerConfig())
    layout = np.array(env.env.unwrapped.maze.maze_map)
    assert (layout[1:-1, 1:-1] == 0).all() and layout.shape == (7, 7)
    assert (layout[[0, -1], :] == 1).all() and (layout[:, [0, -1]] == 1).all()
    assert layout.tolist() == ARENA
    obs, _ = env.reset(seed=0)
    assert obs.shape == (30,) and env.observation_space.contains(obs)
    assert 1.0 <= obs[-1] <= 6.0 and np.isclose(np.linalg.norm(obs[-3:-1]), 1.0)  # nearby


def _turned(env, state, angle: float, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """goal_obs after turning the ant's ``state`` (qpos, qvel) by ``angle`` about the vertical
    through its torso (orientation, world-frame linear velocity), ``target`` rotated with it."""
    ant = env.env.unwrapped.ant_env
    qpos, qvel = state[0].copy(), state[1].copy()
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    w, x, y, z = qpos[3:7]
    a, b = np.cos(angle / 2), np.sin(angle / 2)  # (a, 0, 0, b) * q
    qpos[3:7] = [a * w - b * z, a * x - b * y, a * y + b * x, a * z + b * w]
    qvel[0:2] = rot @ qvel[0:2]  # MuJoCo: linear velocity in the world frame, angular in the body
    ant.set_state(qpos, qvel)
    xy = qpos[:2]
    obs = {"observation": np.concatenate([qpos[2:], qvel]), "achieved_goal": xy}  # AntMaze's
    return goal_obs(obs, xy + rot @ (target - xy), 6.0), obs["observation"]


def test_goal_obs_is_seen_from_the_torso_and_turns_with_it():
    env = ArenaTargets(ControllerConfig())
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(30):  # a moving, slightly tilted ant
        env.step(rng.uniform(-1, 1, 8))
    ant = env.env.unwrapped.ant_env
    xy, moving = ant.data.qpos[:2].copy(), (ant.data.qpos.copy(), ant.data.qvel.copy())
    target = xy + np.array([3.0, -8.0])
    base, state = _turned(env, moving, 0.0, target)
    assert base[-1] == 6.0  # the distance is clipped, the direction a unit vector
    psi = yaw(state)
    for angle in (0.7, -2.0, np.pi):
        turned, turned_state = _turned(env, moving, angle, target)
        assert np.isclose((yaw(turned_state) - psi - angle + np.pi) % (2 * np.pi), np.pi)
        assert not np.allclose(turned_state, state, atol=1e-3)  # the world-frame state differs
        np.testing.assert_allclose(turned, base, atol=1e-5)  # the controller's input does not
    # a target straight ahead of the torso's heading is at direction (1, 0)
    ahead = xy + 2.0 * np.array([np.cos(psi), np.sin(psi)])
    obs = {"observation": state, "achieved_goal": xy}
    np.testing.assert_allclose(goal_obs(obs, ahead, 6.0)[-3:], [1.0, 0.0, 2.0], atol=1e-5)


def test_arena_episode_ends_with_a_penalty_only_when_the_ant_lies_on_its_back():
    env = ArenaTargets(ControllerConfig())
    env.reset(seed=0)
    ant = env.env.unwrapped.ant_env
    qpos, qvel = ant.data.qpos.copy(), ant.data.qvel.copy()
    qpos[2] = 1.5  # a jump: high but upright, not an end (an earlier version stopped here)
    ant.set_state(qpos, qvel)
    _, reward, ended, _, _ = env.step(np.zeros(8))
    assert not ended and reward > -1
    qpos[2], qpos[3:7] = 0.5, [0.0, 1.0, 0.0, 0.0]  # rolled half a turn about x: on its back
    ant.set_state(qpos, qvel)
    _, reward, ended, _, _ = env.step(np.zeros(8))
    assert ended and reward < -9


def test_evaluation_acts_as_d4rl_collected_sampled_and_noisy(monkeypatch):
    flags, actions = [], []

    def controller(obs, deterministic):
        flags.append(deterministic)
        return np.full(8, 0.5, dtype=np.float32)

    step = ArenaTargets.step
    monkeypatch.setattr(ArenaTargets, "step", lambda env, a: actions.append(a) or step(env, a))
    cfg = ControllerConfig(eval_steps=5)
    assert success_rate(controller, cfg, 2, seed=3) == 0.0
    noisy = np.stack(actions)
    assert not any(flags) and len(noisy) == 10 and np.abs(noisy).max() <= 1.0
    assert 0.1 < np.std(noisy - 0.5) < 0.3  # D4RL's N(0, 0.2^2)
    actions.clear()
    success_rate(controller, cfg, 2, seed=3)
    np.testing.assert_array_equal(np.stack(actions), noisy)  # seeded
    actions.clear()
    success_rate(controller, ControllerConfig(eval_steps=5, action_noise=0.0), 2, seed=3)
    assert all(flags[-10:]) and (np.stack(actions) == 0.5).all()  # deterministic, no noise


def test_training_env_adds_d4rls_noise_and_pays_for_staying_upright():
    sent = []
    env = ArenaTargets(ControllerConfig(), noise=0.2)
    real = env.env.step
    env.env.step = lambda a: sent.append(a) or real(a)
    env.reset(seed=0)
    for _ in range(40):
        env.step(np.full(8, 0.5, dtype=np.float32))
    assert 0.15 < np.std(np.stack(sent) - 0.5) < 0.25 and np.abs(np.stack(sent)).max() <= 1.0
    rewards = []
    for bonus in (1.0, 0.0):  # the same noiseless step, with and without the alive bonus
        env = ArenaTargets(ControllerConfig(alive_bonus=bonus))
        env.reset(seed=0)
        rewards.append(env.step(np.zeros(8))[1])
    assert np.isclose(rewards[0] - rewards[1], 1.0)


def test_an_evaluation_episode_that_arrives_then_flips_fails(monkeypatch):
    t = {"n": 0}

    def scripted(env, action, flip_at):
        t["n"] += 1
        obs = np.zeros(env.observation_space.shape, dtype=np.float32)
        return obs, 0.0, t["n"] == flip_at, False, {"reached": t["n"] == 2}

    cfg = ControllerConfig(eval_steps=5, upright_steps=20)
    controller = lambda obs, deterministic: np.zeros(8, dtype=np.float32)  # noqa: E731
    for flip_at, expected in ((10, 0.0), (-1, 1.0)):
        monkeypatch.setattr(ArenaTargets, "step", lambda env, a, f=flip_at: scripted(env, a, f))
        t["n"] = 0
        assert success_rate(controller, cfg, 1, seed=0) == expected
        assert t["n"] == (10 if expected == 0.0 else 20)  # it ran until the flip / the end


def test_local_antmaze_is_d4rls_ant_and_the_remote_one_gymnasiums():
    d4rl = make_antmaze("umaze").unwrapped.ant_env
    gymnasium = make_antmaze("umaze", ant="gymnasium").unwrapped.ant_env
    assert (d4rl.model.actuator_gear[:, 0] == 30).all() and np.isclose(d4rl.dt, 0.1)
    assert (gymnasium.model.actuator_gear[:, 0] == 150).all() and np.isclose(gymnasium.dt, 0.05)
    assert d4rl.model.nq == gymnasium.model.nq  # the same body: only the motors and step differ
    with pytest.raises(ValueError, match="ant="):
        make_antmaze("umaze", ant="mujoco")


def test_sparse_reward_is_one_exactly_within_half_a_metre():
    env = make_antmaze("umaze")
    obs, _ = env.reset(seed=0)
    for _ in range(20):  # let the ant settle so a zero action barely moves it
        obs, *_ = env.step(np.zeros(8))
    seen = set()
    for offset in (0.3, 0.48, 0.52, 0.7):
        env.unwrapped.goal = obs["achieved_goal"] + np.array([offset, 0.0])
        obs, reward, term, trunc, _ = env.step(np.zeros(8))
        dist = np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"])
        assert reward == float(dist <= 0.5) and not term  # D4RL's radius; the task continues
        np.testing.assert_array_equal(env.unwrapped.goal, obs["desired_goal"])  # goal is kept
        seen.add((round(offset, 2), reward))
    assert seen == {(0.3, 1.0), (0.48, 1.0), (0.52, 0.0), (0.7, 0.0)}  # 0.48: not the env's 0.45


def test_antmaze_time_limits_and_bad_maze_names():
    assert make_env("antmaze").spec.max_episode_steps == 700  # umaze
    assert make_antmaze("medium").env.spec.max_episode_steps == 1000
    with pytest.raises(ValueError, match="Unknown AntMaze maze 'huge'"):
        make_antmaze("huge")


# ---------------------------------------------------------------- navigator and goals


@pytest.mark.parametrize("maze", ["umaze", "medium", "large"])
def test_navigator_follows_the_bfs_path_and_never_enters_a_wall(maze):
    layout = antmaze_layout(maze)
    free = np.array(layout) == 0
    nav = Navigator(layout)
    goal = tuple(np.argwhere(free)[-1])
    nav.set_goal(goal)
    dist = bfs_distances(layout, goal)
    for start in map(tuple, np.argwhere(free)):
        cell, steps = start, 0
        while cell != goal:
            nxt = nav.next_cell(cell)
            assert free[nxt] and abs(nxt[0] - cell[0]) + abs(nxt[1] - cell[1]) == 1
            assert dist[nxt] == dist[cell] - 1
            cell, steps = nxt, steps + 1
        assert steps == dist[start]
    # from a position, the waypoint is the next cell's centre (4 m cells), the goal at the end
    start = tuple(np.argwhere(free)[0])
    xy = nav.waypoint(np.zeros(2) + _centre(layout, start), np.array([9.0, 9.0]))
    assert tuple(xy_to_cell(layout, xy, 4.0)) == nav.next_cell(start)
    goal_xy = _centre(layout, goal) + 0.3
    np.testing.assert_array_equal(nav.waypoint(goal_xy, goal_xy), goal_xy)


def _centre(layout, cell):
    from ttlib.datagen.maze_controller import cell_to_xy

    return cell_to_xy(layout, cell, 4.0)


def test_play_goals_are_hand_picked_and_diverse_goals_are_random():
    rng = np.random.default_rng(0)
    play = [episode_cells("medium-play", rng) for _ in range(200)]
    diverse = [episode_cells("medium-diverse", rng) for _ in range(200)]
    assert all(s in PLAY_CELLS["medium"] and g in PLAY_CELLS["medium"] for s, g in play)
    assert all(s != g for s, g in play + diverse)
    assert len({g for _, g in diverse}) > 2 * len(PLAY_CELLS["medium"])
    free = np.array(antmaze_layout("medium")) == 0
    assert all(free[s] and free[g] for s, g in diverse)
    assert {episode_cells("umaze", rng) for _ in range(10)} == {((1, 1), (3, 1))}
    assert split_kind("large-play") == ("large", "play")
    with pytest.raises(ValueError, match="valid kinds are umaze"):
        split_kind("medium-ply")


# ---------------------------------------------------------------- controller training


@pytest.mark.slow
def test_controller_chunks_write_milestones_and_resume(tmp_path, capsys):
    def chunks_run() -> list[str]:
        return re.findall(r"\[antmaze\] step \d+: success [\d.]+", capsys.readouterr().out)

    cfg = tiny_cfg(tmp_path, total_steps=64)
    curve = train_controller(cfg)
    assert [c["step"] for c in curve] == [64]
    info = read_curve(cfg.out_dir)
    assert info["step"] == 64
    # the second call resumes from the local checkpoint and carries on
    chunks_run()
    curve = train_controller(tiny_cfg(tmp_path, total_steps=128))
    assert [c["step"] for c in curve] == [64, 128]
    assert chunks_run() == ["[antmaze] step 128: success 0.00"]  # one new chunk, not two
    assert read_curve(cfg.out_dir)["step"] == 128
    # a fresh machine (no cache) resumes from the committed milestone
    import shutil

    shutil.rmtree(tmp_path / "cache")
    curve = train_controller(tiny_cfg(tmp_path, total_steps=192))
    assert [c["step"] for c in curve] == [64, 128, 192]
    assert chunks_run() == ["[antmaze] step 192: success 0.00"]
    controller = load_controller(tmp_path / "out" / CONTROLLER_DIR / "milestone.zip")
    assert controller.model.num_timesteps == 192
    # PPO's observation statistics travel with the milestone and are used when acting
    assert controller.vecnorm is not None and controller.vecnorm.obs_rms.count > 192


def test_bad_controller_settings_and_missing_controller(tmp_path):
    from ttlib.errors import ConfigError

    with pytest.raises(ConfigError, match="target_min"):
        ControllerConfig(target_min=7.0)
    with pytest.raises(ConfigError, match="multiple"):
        train_controller(tiny_cfg(tmp_path, chunk=100))
    with pytest.raises(FileNotFoundError, match="make-controller"):
        make_dataset("antmaze", "umaze", GenConfig(transitions=10, policy_dir=str(tmp_path)))


@pytest.mark.slow
def test_a_controller_of_another_design_is_neither_resumed_nor_used(tmp_path):
    from ttlib.errors import ConfigError

    cfg = tiny_cfg(tmp_path, total_steps=64)
    train_controller(cfg)
    assert read_curve(cfg.out_dir)["design"] == "heading-d4rl-ant"
    # a milestone from before the design was recorded (the world-frame layout)
    path = tmp_path / "out" / CONTROLLER_DIR / "controller.json"
    info = json.loads(path.read_text())
    del info["design"]
    path.write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="design 'world'"):
        load_controller(milestone_path(cfg.out_dir))
    (tmp_path / "cache" / "ckpt" / "controller.json").write_text('{"design": "world"}')
    with pytest.raises(ConfigError, match="design 'world'.*--out-dir"):
        train_controller(tiny_cfg(tmp_path, total_steps=128))


# ---------------------------------------------------------------- datasets


def _gen(policy_dir, kind="umaze", seed=0, **kw):
    cfg = GenConfig(
        transitions=130,
        seed=seed,
        policy_dir=str(policy_dir),
        overwrite=True,
        antmaze_episode_steps=50,
        **kw,
    )
    return make_dataset("antmaze", kind, cfg)


def test_tiny_dataset_loads_back_with_d4rl_antmaze_structure(policy_dir):
    import minari

    from ttlib.data import load_episodes
    from ttlib.experiments.maze_q import Maze

    _gen(policy_dir, "medium-play")
    ds = minari.load_dataset(dataset_id("antmaze", "medium-play"))
    assert ds.total_steps == 130
    eps = list(ds.iterate_episodes())
    assert [len(e.rewards) for e in eps] == [50, 50, 30]
    for ep in eps:
        assert set(ep.observations) == {"observation", "achieved_goal", "desired_goal"}
        assert ep.observations["observation"].shape == (len(ep.rewards) + 1, 27)
        assert ep.observations["desired_goal"].shape == (len(ep.rewards) + 1, 2)
        assert ep.actions.shape == (len(ep.rewards), 8) and np.abs(ep.actions).max() <= 1
        assert set(np.unique(ep.rewards)) <= {0.0, 1.0}
        assert ep.truncations[-1] and not ep.truncations[:-1].any() and not ep.terminations.any()
        goal = ep.observations["desired_goal"][0]
        assert tuple(xy_to_cell(antmaze_layout("medium"), goal, 4.0)) in PLAY_CELLS["medium"]
    assert "reached its goal" in ds.storage.metadata["description"]
    eval_env = ds.recover_environment(eval_env=True)
    assert eval_env.spec.max_episode_steps == 1000
    # maze_q reads it with its AntMaze observation layout: position, state, goal
    maze = Maze("antmaze-medium-play", "antmaze", dataset_id("antmaze", "medium-play"))
    from ttlib.data import DataConfig

    episodes = load_episodes(DataConfig(dataset_id=maze.dataset_id, obs_keys=maze.obs_keys))
    assert episodes[0].observations.shape[1] == 31


def test_same_seed_same_dataset_other_seed_differs(policy_dir):
    def arrays(seed):
        eps = list(_gen(policy_dir, seed=seed).iterate_episodes())
        return np.concatenate([e.actions for e in eps])

    a = arrays(0)
    torch.rand(3)  # the global torch RNG moved on: the dataset must not depend on it
    b, c = arrays(0), arrays(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_antmaze_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="valid kinds are umaze, umaze-diverse, medium-play"):
        dataset_id("antmaze", "medium-ply")
    with pytest.raises(ValueError, match="valid kinds"):
        make_datasets(["antmaze"], ["medium-ply"])


@pytest.mark.slow
def test_console_script_trains_the_controller_and_makes_a_dataset(tmp_path, capsys):
    from ttlib import cli

    out = tmp_path / "policies" / CONTROLLER_DIR
    args = ["make-controller", "--total-steps", "1024", "--chunk", "1024", "--n-envs", "1"]
    args += ["--eval-episodes", "1", "--cache-dir", str(tmp_path / "c"), "--out-dir", str(out)]
    assert cli.main(args) == 0
    assert read_curve(out)["curve"][0]["step"] == 1024
    assert (out / "milestone.zip").exists() and (out / "milestone_vecnorm.pkl").exists()
    args = ["make-data", "--env", "antmaze", "--kind", "umaze", "--transitions", "120"]
    assert cli.main([*args, "--policy-dir", str(tmp_path / "policies")]) == 0
    assert capsys.readouterr().out.strip().endswith("ttlib/antmaze/umaze-v0")
    from ttlib.datagen.datasets_gen import data_summary

    row = data_summary(["ttlib/antmaze/umaze-v0"]).iloc[0]
    assert row["transitions"] == 120 and row["episodes"] == 1  # D4RL's 1000-step episodes
    assert row["success_rate"] in (0.0, 1.0)  # the controller's own success, one episode
    from ttlib.datagen.report import compact_table

    shown = compact_table(
        data_summary(["ttlib/antmaze/umaze-v0"]).assign(
            d4rl_transitions=np.nan, d4rl_normalized_mean=np.nan
        )
    ).iloc[0]
    assert shown["goal reached (%)"] == f"{100 * row['success_rate']:.1f}"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["make-controller", "--chunk", "0"])
    assert exit_.value.code == 2 and "--chunk" in capsys.readouterr().err
