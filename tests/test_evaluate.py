"""Batched rollouts (returns, early stopping, success, scores, frames) and `ttlib plan`."""

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest

from ttlib.cli import main as plan_main
from ttlib.data import DataConfig, Episode, SequenceDataset
from ttlib.envs import normalized_score
from ttlib.evaluate import evaluate, mean_se
from ttlib.train import TrainConfig, gpt_config_for, train


class CountdownEnv(gym.Env):
    """Episode with reset seed k lasts 2 + k % 3 steps; reward = action; obs = [t, k]."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.k, self.t = seed, 0
        return np.array([0.0, seed]), {}

    def step(self, action):
        self.t += 1
        done = self.t >= 2 + self.k % 3
        return np.array([self.t, self.k], float), float(action[0]), done, False, {}

    def render(self):
        raise RuntimeError("no display")


class RecordingAgent:
    def __init__(self, action=(5.0,)):  # out of range by default: the evaluator must clip
        self.action = np.asarray(action)
        self.calls, self.observed, self.goals = [], [], None

    def reset(self, n_episodes, goals=None):
        self.goals = goals

    def act(self, observations, index):
        self.calls.append((index.tolist(), observations.copy()))
        return np.tile(self.action, (len(index), 1))

    def observe(self, rewards, index):
        self.observed.append(rewards.tolist())


def test_finished_episodes_stop_being_planned_for():
    agent = RecordingAgent()
    res = evaluate(agent, CountdownEnv, n_episodes=4, progress=False)
    assert res.lengths.tolist() == [2, 3, 4, 2]
    assert res.returns.tolist() == [2.0, 3.0, 4.0, 2.0]  # actions clipped to 1
    assert [c[0] for c in agent.calls] == [[0, 1, 2, 3], [0, 1, 2, 3], [1, 2], [2]]
    np.testing.assert_array_equal(agent.calls[0][1][:, 1], [0, 1, 2, 3])  # reset seeds
    assert agent.observed[-1] == [1.0]
    assert res.scores is None and res.success is None


def test_max_steps_caps_every_episode():
    res = evaluate(lambda obs: np.ones((len(obs), 1)), CountdownEnv, 4, max_steps=3, progress=False)
    assert res.lengths.tolist() == [2, 3, 3, 2]


def test_standard_error_is_the_sample_one():
    m, se = mean_se(np.array([1.0, 2.0, 3.0, 6.0]))
    # s^2 = (4 + 1 + 0 + 9) / 3, se = s / 2; the population std would give sqrt(14/4) / 2
    assert m == 3.0 and se == pytest.approx(np.sqrt(14 / 3) / 2)
    m1, se1 = mean_se(np.array([5.0]))
    assert m1 == 5.0 and np.isnan(se1)


class ReachEnv(gym.Env):
    """Dict observations like PointMaze: the action moves the achieved goal; no 'success'."""

    observation_space = gym.spaces.Dict(
        {k: gym.spaces.Box(-10, 10, (2,)) for k in ("observation", "achieved_goal", "desired_goal")}
    )
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def __init__(self, render_mode=None):
        pass

    def _obs(self):
        return {
            "observation": self.p.copy(),
            "achieved_goal": self.p.copy(),
            "desired_goal": self.g,
        }

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.p, self.g = np.zeros(2), np.array([2.0 + seed, 0.0])
        return self._obs(), {}

    def step(self, action):
        self.p = self.p + action
        return self._obs(), 0.0, False, False, {}


def test_goal_tasks_report_success_by_distance_and_pass_goals():
    agent = RecordingAgent(action=(1.0, 0.0))
    res = evaluate(agent, ReachEnv, n_episodes=2, max_steps=2, progress=False)
    assert res.success.tolist() == [True, False]  # 2 steps of +1 reach x = 2, not x = 3
    np.testing.assert_array_equal(agent.goals, [[2.0, 0.0], [3.0, 0.0]])
    assert agent.calls[0][1].shape == (2, 2)  # flattened 'observation' only


def test_halfcheetah_scores_are_d4rl_normalised():
    res = evaluate(lambda o: np.zeros((len(o), 6)), "halfcheetah", 2, max_steps=5, progress=False)
    np.testing.assert_allclose(res.scores, normalized_score("halfcheetah", res.returns))
    s = res.summary()
    assert s["score_mean"] == pytest.approx(res.scores.mean()) and s["env_steps"] == 10


def test_rendering_failure_only_drops_the_frames():
    with pytest.warns(UserWarning, match="rendering failed"):
        res = evaluate(RecordingAgent(), CountdownEnv, 2, video_episodes=1, progress=False)
    assert res.frames == [] and res.lengths.tolist() == [2, 3]


@pytest.mark.slow
def test_frames_are_recorded_when_rendering_works():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evaluate(
            lambda o: np.zeros((len(o), 3)), "hopper", 2, 3, video_episodes=1, progress=False
        )
    if any("rendering failed" in str(w.message) for w in caught):
        pytest.skip("no OpenGL on this machine")
    assert len(res.frames) == 1 and res.frames[0].shape[0] == 4  # reset + 3 steps
    assert res.frames[0].shape[-1] == 3


# ---------------------------------------------------------------- ttlib plan
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A model with Hopper's dimensions, trained for a few steps on random transitions."""
    rng = np.random.default_rng(0)
    episodes = [
        Episode(
            rng.normal(size=(20, 11)).astype(np.float32),
            rng.uniform(-1, 1, (20, 3)).astype(np.float32),
            rng.normal(size=20).astype(np.float32),
            False,
        )
        for _ in range(10)
    ]
    ds = SequenceDataset(episodes, DataConfig("synthetic", n_bins=10, n_transitions=3))
    mcfg = gpt_config_for(ds, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    out = tmp_path_factory.mktemp("ckpt")
    train(ds, mcfg, TrainConfig(max_steps=3, batch_size=8), out, progress=False)
    return out


def test_plan_command_runs_episodes_and_writes_results(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "plan.json"
    args = ["plan", "--checkpoint", str(tiny_checkpoint), "--env", "hopper", "--episodes", "2"]
    args += ["--horizon", "2", "--beam-width", "4", "--max-steps", "3", "--quiet"]
    assert plan_main([*args, "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert len(record["returns"]) == 2 and max(record["lengths"]) <= 3
    assert record["score_mean"] == pytest.approx(np.mean(record["scores"]))
    assert "hopper (reward): return" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--env", "hopper", "--checkpoint", "/nonexistent"], "no checkpoint at"),
        (["--env", "halfcheetah"], "trained on another env"),
        (["--env", "hopperr"], "Did you mean 'hopper'"),
        (["--env", "hopper", "--mode", "q"], "needs --q-checkpoint"),
        (["--env", "hopper", "--mode", "goal"], "goal-conditioned"),
    ],
)
def test_plan_command_reports_bad_input_in_one_line(tiny_checkpoint, capsys, extra, message):
    args = ["plan", "--checkpoint", str(tiny_checkpoint), "--max-steps", "1", *extra]
    assert plan_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ttlib plan: error:") and message in err and "\n" not in err
