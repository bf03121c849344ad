"""Rollouts of a planner or policy in several episodes at once, scored the way the field does.

E gymnasium envs are stepped together: every env step the agent gets the observations of the
episodes still running (one batched plan for all of them), so a planner's batch shrinks as
episodes finish. Returns are D4RL-normalised ×100 (locomotion) and reported as mean ± standard
error, like the original's ``read_results`` (std / √n); goal tasks report success.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np
from tqdm import tqdm  # plain bars: tqdm.auto warns in kernels without ipywidgets

from ttlib.envs import REF_SCORES, make_env, normalized_score
from ttlib.memory import check_planning_memory

SUCCESS_DISTANCE = 0.5  # goal reached when the achieved goal is this close (maze units)


class Agent(Protocol):
    """What :func:`evaluate` drives; :class:`ttlib.search.TTPlanner` is one."""

    def reset(self, n_episodes: int, goals: np.ndarray | None = None) -> None: ...

    def act(self, observations: np.ndarray, index: np.ndarray) -> np.ndarray: ...

    def observe(self, rewards: np.ndarray, index: np.ndarray) -> None: ...


class StatelessAgent:
    """A memoryless policy (``act(observations) -> actions``, or a callable) as an Agent."""

    def __init__(self, policy):
        self.act_fn = getattr(policy, "act", policy)
        if not callable(self.act_fn):
            raise TypeError(f"cannot evaluate a {type(policy).__name__}: it has no act() method")

    def reset(self, n_episodes: int, goals: np.ndarray | None = None) -> None:
        pass

    def act(self, observations: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.asarray(self.act_fn(observations))

    def observe(self, rewards: np.ndarray, index: np.ndarray) -> None:
        pass


def mean_se(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard error s/√n, s with ddof=1 (the original's read_results uses ddof=0,
    which understates the error of a few episodes: 18 % at n = 3); nan where undefined."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan")
    if len(x) == 1:
        return float(x[0]), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))


@dataclass
class EvalResult:
    env_name: str | None
    returns: np.ndarray  # (E,) undiscounted return of every episode
    lengths: np.ndarray  # (E,) env steps taken
    scores: np.ndarray | None  # (E,) D4RL-normalised ×100 (locomotion), else None
    success: np.ndarray | None  # (E,) goal reached (goal tasks), else None
    seconds: float
    frames: list[np.ndarray] = field(default_factory=list)  # (T, H, W, 3) per recorded episode

    def summary(self) -> dict:
        out = {"env": self.env_name, "episodes": len(self.returns)}
        out["return_mean"], out["return_se"] = mean_se(self.returns)
        if self.scores is not None:
            out["score_mean"], out["score_se"] = mean_se(self.scores)
        if self.success is not None:
            out["success_mean"], out["success_se"] = mean_se(self.success.astype(float))
        out["env_steps"] = int(self.lengths.sum())
        out["env_steps_per_s"] = float(self.lengths.sum() / max(self.seconds, 1e-9))
        return out


def flatten_observation(obs, obs_keys: Sequence[str] = ("observation",)) -> np.ndarray:
    """A dict observation (PointMaze) as one vector of ``obs_keys``, as ttlib.data does."""
    if isinstance(obs, dict):
        return np.concatenate([np.asarray(obs[k], dtype=np.float64).ravel() for k in obs_keys])
    return np.asarray(obs, dtype=np.float64).ravel()


def _reached(obs, info: dict) -> bool | None:
    if "success" in info:
        return bool(info["success"])
    if isinstance(obs, dict) and "desired_goal" in obs and "achieved_goal" in obs:
        gap = np.asarray(obs["achieved_goal"]) - np.asarray(obs["desired_goal"])
        return bool(np.linalg.norm(gap) < SUCCESS_DISTANCE)
    return None


def _record(env: gym.Env, frames: list[np.ndarray]) -> bool:
    """Add a frame of ``env`` to ``frames``; False where rendering is impossible."""
    try:
        frames.append(np.asarray(env.render()))
        return True
    except Exception as err:  # no OpenGL here: evaluation goes on without video
        warnings.warn(
            f"rendering failed ({type(err).__name__}: {err}); continuing without frames. "
            "Try MUJOCO_GL=egl or MUJOCO_GL=osmesa.",
            stacklevel=3,
        )
        return False


def evaluate(
    policy,
    env: str | Callable[..., gym.Env],
    n_episodes: int = 10,
    max_steps: int | None = None,
    seed: int = 0,
    obs_keys: Sequence[str] = ("observation",),
    reset_options: Sequence[dict | None] | None = None,
    video_episodes: int = 0,
    frame_every: int = 1,
    progress: bool = True,
) -> EvalResult:
    """Run ``policy`` (an Agent, or a stateless ``act(obs)``) in ``n_episodes`` envs at once.

    ``env`` is a ttlib env name or a factory ``env(**kwargs) -> gym.Env``. Episode i resets
    with seed ``seed + i`` and ``reset_options[i]``; it ends when it terminates, is truncated,
    or after ``max_steps``. The first ``video_episodes`` are rendered every ``frame_every``
    steps where rendering works. A planner above its ``memory_limit`` is refused before any env
    starts (:func:`ttlib.memory.check_planning_memory`).
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    is_agent = all(hasattr(policy, m) for m in ("reset", "act", "observe"))
    agent = policy if is_agent else StatelessAgent(policy)
    if hasattr(agent, "memory_limit"):  # a TTPlanner
        limit = agent.memory_limit
        check_planning_memory(agent.model.config, agent.config, n_episodes, limit, agent.device)
    env_name = env if isinstance(env, str) else None
    if video_episodes > 0:
        os.environ.setdefault("MUJOCO_GL", "egl")

    def build(i: int) -> gym.Env:
        kw = {"render_mode": "rgb_array"} if i < video_episodes else {}
        return make_env(env, **kw) if isinstance(env, str) else env(**kw)

    envs = [build(i) for i in range(n_episodes)]
    options = list(reset_options) if reset_options is not None else [None] * n_episodes
    obs = [e.reset(seed=seed + i, options=options[i])[0] for i, e in enumerate(envs)]
    goals = None
    if isinstance(obs[0], dict) and "desired_goal" in obs[0]:
        goals = np.stack([np.asarray(o["desired_goal"], dtype=np.float64) for o in obs])
    agent.reset(n_episodes, goals=goals)

    frames: list[list[np.ndarray]] = [[] for _ in range(min(video_episodes, n_episodes))]
    for i in range(len(frames)):
        if not _record(envs[i], frames[i]):
            frames = []  # no episode is recorded
            break

    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    success: np.ndarray | None = None
    active = np.ones(n_episodes, dtype=bool)
    limit = max_steps
    if limit is None:
        spec_limits = [e.spec.max_episode_steps for e in envs if e.spec is not None]
        limit = spec_limits[0] if spec_limits and spec_limits[0] else None
    total = n_episodes * limit if limit else None
    bar = tqdm(total=total, disable=not progress, desc="evaluate", unit="step")
    start = time.perf_counter()
    while active.any():
        index = np.flatnonzero(active)
        batch = np.stack([flatten_observation(obs[i], obs_keys) for i in index])
        actions = np.asarray(agent.act(batch, index), dtype=np.float64).reshape(len(index), -1)
        rewards = np.zeros(len(index))
        for k, i in enumerate(index):
            space = envs[i].action_space
            a = np.clip(actions[k], space.low, space.high).astype(space.dtype)
            obs[i], r, terminated, truncated, info = envs[i].step(a)
            rewards[k] = r
            returns[i] += r
            lengths[i] += 1
            reached = _reached(obs[i], info)
            if reached is not None:
                if success is None:
                    success = np.zeros(n_episodes, dtype=bool)
                success[i] |= reached
            if i < len(frames) and lengths[i] % frame_every == 0:
                if not _record(envs[i], frames[i]):
                    frames = []
            if terminated or truncated or (max_steps is not None and lengths[i] >= max_steps):
                active[i] = False
        agent.observe(rewards, index)
        bar.update(len(index))
    bar.close()
    seconds = time.perf_counter() - start
    for e in envs:
        e.close()
    scores = normalized_score(env_name, returns) if env_name in REF_SCORES else None
    videos = [np.stack(f) for f in frames if f]
    return EvalResult(env_name, returns, lengths, scores, success, seconds, videos)


def save_video(frames: np.ndarray, path: str | Path, fps: int = 30) -> Path:
    """Write frames (T, H, W, 3) as an animated GIF (no ffmpeg needed)."""
    import imageio.v2 as imageio

    path = Path(path).with_suffix(".gif")
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, list(frames), duration=1000 / fps, loop=0)
    return path
