"""The goal-reaching ant controller behind the AntMaze datasets (`ttlib make-controller`).

D4RL collected AntMaze data with a goal-reaching ant policy (trained with SAC in rlkit) steered
by a BFS waypoint planner over the maze cells (`create_navigation_policy` in
d4rl/locomotion/maze_env.py; scripts/generation/generate_ant_maze_datasets.py). Its policy saw
the ant's own state without x, y plus the vector to the waypoint rescaled to length 10, i.e. it
was conditioned on a *direction*. We train the same kind of controller for gymnasium-robotics'
AntMaze v5 ant, in an open arena (a `maze_map` with walls only around it, so the policy never
learns about inner walls; the navigator keeps it away from them):

* observation: the 27 numbers of AntMaze's ``observation`` (torso height, orientation, joint
  angles, all velocities; x, y are ``achieved_goal``) and the vector from the torso to the
  target, its length clipped to ``target_max`` (far targets differ only in direction);
* target: a point ``target_min``-``target_max`` m from the ant in a random direction (the
  navigator's waypoints are the next cell centre, at most ~1.5 cells = 6 m away, cells being
  ``maze_size_scaling`` = 4 m); a new one is drawn on arrival (within 0.5 m, D4RL's radius);
* dense training reward: 20 x (progress towards the target in m) per step (= 1 at 1 m/s, the
  env step being 0.05 s), +5 on arrival, a small control cost; the episode ends with -10 when
  the ant lies on its back. (A first try ended it, without penalty, when the torso left Ant-v5's
  healthy height range 0.2-1.0 m: in 164k PPO steps the ant learnt to jump above 1 m within
  ~10 steps, ending each episode before its negative rewards; success 0.10 -> 0.00.)

Training is SB3 SAC (D4RL's algorithm) or PPO in resumable chunks: after each chunk the full
SB3 model (+ SAC's replay buffer) goes to the git-ignored ``cache_dir`` and the success rate on
``eval_episodes`` fresh targets is appended to the learning curve; every ``milestone_every``
steps the model (networks + optimisers, no buffer) is copied to ``out_dir/milestone.zip`` with
the curve in ``out_dir/controller.json`` (both small, committed), so a fresh machine resumes
from the last milestone with an empty buffer. PPO's VecNormalize statistics travel with each
(``*_vecnorm.pkl``). A resumed run is not bitwise equal to an uninterrupted one: SB3 restarts
the env episode and the RNG streams at the resume (the tests check the step count and curve).

Measured here with the other core busy (one torch thread): the arena env alone 1.4k steps/s;
PPO 540 (1 env) / 650 (2 envs, DummyVecEnv) steps/s, ~600 with the chunk evaluations; SAC
(256, 256) 32 steps/s. Hence PPO by default. 164k PPO steps (4.6 min): no flips, the mean
action closes half the distance to 2-4 m targets, success 0-5 %; the 90 % is a run of hours.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from ttlib.envs import ANTMAZE_GOAL_RADIUS, make_antmaze
from ttlib.errors import ConfigError, check_positive
from ttlib.io import save_json

ALGOS = ("sac", "ppo")
# Open arena: 5 x 5 free cells (20 m x 20 m) inside a wall ring; the ant starts in the middle.
ARENA: list[list[int]] = [[1] * 7] + [[1] + [0] * 5 + [1] for _ in range(5)] + [[1] * 7]
ARENA_CENTRE = (3, 3)
ARENA_HALF = 8.0  # targets stay within |x|, |y| <= this (walls at 10 m)
FLIP_PENALTY = 10.0  # reward when an episode ends because the ant lies on its back


@dataclass
class ControllerConfig:
    # PPO: SAC (D4RL's choice) ran 32 env steps/s here against PPO's 540-650 (one shared core)
    algo: str = "ppo"
    total_steps: int = 10_240_000  # env steps of training
    chunk: int = 40_960  # checkpoint + evaluation every this many steps
    milestone_every: int = 409_600  # copy the model to out_dir (committed) this often
    learning_starts: int = 10_000  # SAC: uniform-random warm-up steps
    n_envs: int = 2  # PPO: parallel arena envs
    subproc: bool = False  # PPO: envs in worker processes (SubprocVecEnv) instead of in-process
    ppo_n_steps: int = 1024  # PPO: rollout length per env (chunk: a multiple of n_steps x n_envs)
    # PPO: running normalisation of observations and rewards (SB3 VecNormalize), as is usual
    # for PPO on MuJoCo (rl-zoo's `normalize: true`, cleanrl's wrappers)
    normalize: bool = True
    # PPO: initial log std of the Gaussian policy. SB3's 0 (std 1) flips this ant: uniform
    # random actions put it on its back within 26-114 steps here, half-size ones never in 300
    ppo_log_std_init: float = -1.0
    episode_steps: int = 500  # training episode length (25 s; several targets per episode)
    target_min: float = 1.0  # m; targets are drawn this far from the ant ...
    target_max: float = 6.0  # ... up to this far (and the observed vector is clipped to it)
    eval_episodes: int = 20  # one target per evaluation episode
    eval_steps: int = 300  # an evaluation target counts as reached within this many steps
    target_success: float = 0.9  # training stops once a chunk's success rate reaches it
    seed: int = 0
    cache_dir: str = "cache/antmaze"  # big files: SB3 checkpoints and replay buffer
    out_dir: str = "results/policies/antmaze"  # small committed files
    command: str = ""  # the command line, recorded in controller.json

    def __post_init__(self):
        check_positive(
            "ControllerConfig",
            total_steps=self.total_steps,
            chunk=self.chunk,
            milestone_every=self.milestone_every,
            n_envs=self.n_envs,
            eval_episodes=self.eval_episodes,
            eval_steps=self.eval_steps,
            episode_steps=self.episode_steps,
        )
        if self.algo not in ALGOS:
            raise ConfigError(f"ControllerConfig algo={self.algo!r}: choose from {ALGOS}")
        if not 0 < self.target_min < self.target_max:
            raise ConfigError("ControllerConfig: need 0 < target_min < target_max")


def goal_obs(obs: dict, target: np.ndarray, target_max: float) -> np.ndarray:
    """The controller's input: the ant's state (no x, y) and the clipped vector to ``target``."""
    delta = np.asarray(target, dtype=np.float64) - obs["achieved_goal"]
    norm = np.linalg.norm(delta)
    if norm > target_max:
        delta = delta * (target_max / norm)
    return np.concatenate([obs["observation"], delta]).astype(np.float32)


def upside_down(state: np.ndarray) -> bool:
    """Whether the torso's up axis points down; ``state``: AntMaze's ``observation`` (torso
    height, then its orientation quaternion w, x, y, z)."""
    qx, qy = state[2], state[3]
    return bool(1.0 - 2.0 * (qx * qx + qy * qy) < 0.0)


class ArenaTargets(gym.Env):
    """AntMaze v5 in the open arena with our own nearby targets and a dense shaped reward."""

    def __init__(self, cfg: ControllerConfig, max_steps: int | None = None):
        self.cfg = cfg
        self.env = make_antmaze(layout=ARENA, max_episode_steps=max_steps or cfg.episode_steps)
        n = self.env.observation_space["observation"].shape[0] + 2
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)
        self.action_space = self.env.action_space
        self.target = np.zeros(2)

    def _new_target(self, xy: np.ndarray) -> np.ndarray:
        while True:  # rejection: stay clear of the arena's walls
            angle = self.np_random.uniform(0, 2 * np.pi)
            dist = self.np_random.uniform(self.cfg.target_min, self.cfg.target_max)
            target = xy + dist * np.array([np.cos(angle), np.sin(angle)])
            if np.all(np.abs(target) <= ARENA_HALF):
                return target

    def reset(self, *, seed=None, options=None):
        """The ant at the arena's centre, a first target around it."""
        super().reset(seed=seed)
        cell = np.array(ARENA_CENTRE)
        obs, info = self.env.reset(seed=seed, options={"reset_cell": cell, "goal_cell": cell})
        self._obs = obs
        self.target = self._new_target(obs["achieved_goal"])
        self._dist = np.linalg.norm(self.target - obs["achieved_goal"])
        return goal_obs(obs, self.target, self.cfg.target_max), info

    def step(self, action):
        """One env step: the dense training reward, a new target on arrival."""
        obs, _, _, truncated, info = self.env.step(action)
        self._obs = obs
        dist = np.linalg.norm(self.target - obs["achieved_goal"])
        reward = 20.0 * (self._dist - dist) - 0.05 * float(np.square(action).sum())
        info["reached"] = bool(dist <= ANTMAZE_GOAL_RADIUS)
        if info["reached"]:
            reward += 5.0
            self.target = self._new_target(obs["achieved_goal"])
            dist = np.linalg.norm(self.target - obs["achieved_goal"])
        self._dist = dist
        flipped = upside_down(obs["observation"])
        reward -= FLIP_PENALTY * flipped
        return goal_obs(obs, self.target, self.cfg.target_max), reward, flipped, truncated, info


# ---------------------------------------------------------------- evaluation


class Controller:
    """A trained controller: the SB3 model and the observation normaliser it was trained with
    (a VecNormalize, only its statistics used; None without normalisation)."""

    def __init__(self, model, vecnorm=None):
        self.model, self.vecnorm = model, vecnorm

    def __call__(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        if self.vecnorm is not None:
            obs = self.vecnorm.normalize_obs(obs)
        return self.model.predict(obs, deterministic=deterministic)[0]


def success_rate(controller: Controller, cfg: ControllerConfig, episodes: int, seed: int) -> float:
    """Fraction of fresh arena episodes whose first target is reached within ``eval_steps``
    (deterministic actions)."""
    env = ArenaTargets(cfg, max_steps=cfg.eval_steps)
    hits = 0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        for _ in range(cfg.eval_steps):
            action = controller(obs, deterministic=True)
            obs, _, flipped, truncated, info = env.step(action)
            if info["reached"] or flipped or truncated:
                hits += info["reached"]
                break
    env.close()
    return hits / episodes


# ---------------------------------------------------------------- checkpoints


def _algo_class(algo: str):
    from stable_baselines3 import PPO, SAC

    return {"sac": SAC, "ppo": PPO}[algo]


def milestone_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / "milestone.zip"


def read_curve(out_dir: str | Path) -> dict:
    """controller.json: the learning curve, config and commands ({} before the first one)."""
    path = Path(out_dir) / "controller.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _vecnorm_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.stem + "_vecnorm.pkl")


def load_controller(path: str | Path) -> Controller:
    """The controller of a milestone: ``controller(goal_obs(...), deterministic)`` acts."""
    import pickle

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"No ant controller at {path}; run `ttlib make-controller` first or pass --policy-dir."
        )
    algo = read_curve(path.parent).get("config", {}).get("algo", "ppo")
    vecnorm = None
    if _vecnorm_path(path).exists():
        with open(_vecnorm_path(path), "rb") as f:
            vecnorm = pickle.load(f)  # a VecNormalize without its envs: the statistics
        vecnorm.training = False
    return Controller(_algo_class(algo).load(path, device="cpu"), vecnorm)


def _save_model(model, path: Path) -> None:
    """model.zip and, with normalisation, its statistics next to it (model_vecnorm.pkl)."""
    model.save(path)
    if _normalized(model):
        model.get_env().save(_vecnorm_path(path))


def _normalized(model) -> bool:
    from stable_baselines3.common.vec_env import VecNormalize

    return isinstance(model.get_env(), VecNormalize)


def _save_checkpoint(model, cfg: ControllerConfig, curve: list[dict]) -> None:
    """Model (+ replay buffer) and curve into the cache; written to a temp folder, then swapped
    in, so a kill mid-save leaves the previous checkpoint whole."""
    cache = Path(cfg.cache_dir)
    tmp, final = cache / "ckpt.tmp", cache / "ckpt"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_model(model, tmp / "model.zip")
    if cfg.algo == "sac":
        model.save_replay_buffer(tmp / "replay.pkl")
    save_json(curve, tmp / "curve.json")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _save_milestone(model, cfg: ControllerConfig, curve: list[dict]) -> None:
    out = milestone_path(cfg.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("milestone_tmp.zip")
    _save_model(model, tmp)
    if _vecnorm_path(tmp).exists():
        os.replace(_vecnorm_path(tmp), _vecnorm_path(out))
    os.replace(tmp, out)
    commands = read_curve(cfg.out_dir).get("commands", [])
    if cfg.command and cfg.command not in commands[-1:]:
        commands.append(cfg.command)
    config = {k: v for k, v in asdict(cfg).items() if k != "command"}
    info = {"step": model.num_timesteps, "curve": curve, "config": config, "commands": commands}
    info["gym_id"] = "AntMaze_UMaze-v5 (open arena maze_map)"
    save_json(info, Path(cfg.out_dir) / "controller.json")


def _load(cfg: ControllerConfig, env):
    """(model, curve) from the local checkpoint, else from the committed milestone (SAC with an
    empty replay buffer), else (None, []). ``env``: the raw vectorised arena."""
    from stable_baselines3.common.vec_env import VecNormalize

    algo, ckpt = _algo_class(cfg.algo), Path(cfg.cache_dir) / "ckpt"
    path = ckpt / "model.zip"
    if not path.exists():
        path = milestone_path(cfg.out_dir)
    if not path.exists():
        return None, []
    if _vecnorm_path(path).exists():
        env = VecNormalize.load(_vecnorm_path(path), env)
    model = algo.load(path, env=env, device="cpu")
    if path.parent == ckpt:
        if cfg.algo == "sac":
            model.load_replay_buffer(ckpt / "replay.pkl")
        curve = json.loads((ckpt / "curve.json").read_text())
    else:
        curve = read_curve(cfg.out_dir)["curve"]
    model._last_obs = None  # start a fresh episode rather than reuse the pickled observation
    env.seed(cfg.seed + model.num_timesteps)
    return model, curve


def _new(cfg: ControllerConfig, env):
    if cfg.algo == "sac":
        return _algo_class("sac")(
            "MlpPolicy",
            env,
            buffer_size=min(cfg.total_steps, 1_000_000),  # D4RL-scale runs; 1M x 29 floats
            learning_starts=cfg.learning_starts,
            seed=cfg.seed,
            device="cpu",
        )
    if cfg.chunk % (cfg.ppo_n_steps * cfg.n_envs):
        raise ConfigError(
            f"PPO chunk {cfg.chunk} is not a multiple of ppo_n_steps x n_envs "
            f"({cfg.ppo_n_steps} x {cfg.n_envs})"
        )
    from stable_baselines3.common.vec_env import VecNormalize

    if cfg.normalize:
        env = VecNormalize(env)
    return _algo_class("ppo")(
        "MlpPolicy",
        env,
        n_steps=cfg.ppo_n_steps,
        policy_kwargs={"log_std_init": cfg.ppo_log_std_init},
        seed=cfg.seed,
        device="cpu",
    )


# ---------------------------------------------------------------- training


def train_controller(cfg: ControllerConfig) -> list[dict]:
    """Train (or resume) to ``total_steps`` or until ``target_success``; the learning curve."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    torch.set_num_threads(1)
    n_envs = cfg.n_envs if cfg.algo == "ppo" else 1
    vec_cls = SubprocVecEnv if cfg.subproc and n_envs > 1 else DummyVecEnv
    env = make_vec_env(ArenaTargets, n_envs, cfg.seed, vec_env_cls=vec_cls, env_kwargs={"cfg": cfg})
    model, curve = _load(cfg, env)
    if model is None:
        model = _new(cfg, env)
        print(f"[antmaze] new {cfg.algo.upper()} controller run to {cfg.total_steps}", flush=True)
    else:
        print(f"[antmaze] resumed at step {model.num_timesteps}", flush=True)
    bar = tqdm(
        total=cfg.total_steps,
        initial=model.num_timesteps,
        desc="antmaze controller",
        unit="step",
        mininterval=30,
        file=sys.stdout,
    )
    while model.num_timesteps < cfg.total_steps:
        if curve and curve[-1]["success"] >= cfg.target_success:
            print(f"[antmaze] success {curve[-1]['success']:.2f} reached", flush=True)
            break
        t0 = time.time()
        model.learn(
            min(cfg.chunk, cfg.total_steps - model.num_timesteps), reset_num_timesteps=False
        )
        step = model.num_timesteps
        controller = Controller(model, model.get_env() if _normalized(model) else None)
        success = success_rate(controller, cfg, cfg.eval_episodes, seed=cfg.seed + 10_000)
        curve = [c for c in curve if c["step"] < step]
        curve.append({"step": step, "success": success, "wall_s": round(time.time() - t0, 1)})
        _save_checkpoint(model, cfg, curve)
        if step - read_curve(cfg.out_dir).get("step", 0) >= cfg.milestone_every:
            _save_milestone(model, cfg, curve)
        bar.update(step - bar.n)
        print(f"[antmaze] step {step}: success {success:.2f}", flush=True)
    bar.close()
    if model.num_timesteps > read_curve(cfg.out_dir).get("step", -1):
        _save_milestone(model, cfg, curve)  # the end of the run is always a milestone
    model.get_env().close()
    return curve
