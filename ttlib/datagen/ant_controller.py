"""The goal-reaching ant controller behind the AntMaze datasets (`ttlib make-controller`).

D4RL steered a goal-reaching ant policy (SAC, rlkit) with BFS waypoints (d4rl/locomotion/
maze_env.py, ``create_navigation_policy``): the next cell's centre plus U(0, 1 m) noise, given
as a direction (the waypoint vector rescaled to length 10). Ours is a PPO policy trained with
D4RL's ant (:func:`ttlib.envs.d4rl_ant_xml`) in gymnasium-robotics' AntMaze v5 with an open
arena for a maze (the navigator keeps it off inner walls):

* observation (``DESIGN``): the 27-number ant state seen from the torso's heading (yaw taken
  out of the orientation quaternion, x, y velocity rotated by -yaw), the unit direction to
  the target in that frame and its distance clipped to ``target_max``;
* target: ``target_min``-``target_max`` m away in a random direction (cells are 4 m), a new
  one on arrival within D4RL's 0.5 m;
* reward per step: 20 x progress towards the target (m), +5 on arrival, -0.05 x |action|²,
  +``alive_bonus`` while upright; -10 and the end when the ant lies on its back; training
  actions get D4RL's noise (``train_noise``).

How this design came about, with the measurements: results/policies/antmaze_d4rl_ant/README.md.

PPO (SB3's SAC ran 32 steps/s here, PPO 540-650) has rl-baselines3-zoo's Ant-v3 settings (SB3's
defaults, VecNormalize) and log std -1. Each chunk ends with the model in the git-ignored
``cache_dir`` and the success on ``eval_episodes`` fresh targets on the curve; every
``milestone_every`` steps the model, its VecNormalize statistics and ``controller.json`` go to
``out_dir`` (committed), where a fresh machine resumes (not bitwise). Both record ``DESIGN``:
another design is not loaded.
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

# Open arena: 5 x 5 free cells (20 m x 20 m) inside a wall ring; the ant starts in the middle.
ARENA: list[list[int]] = [[1] * 7] + [[1] + [0] * 5 + [1] for _ in range(5)] + [[1] * 7]
ARENA_CENTRE = (3, 3)
ARENA_HALF = 8.0  # targets stay within |x|, |y| <= this (walls at 10 m)
FLIP_PENALTY = 10.0  # reward when an episode ends because the ant lies on its back
DESIGN = "heading-d4rl-ant"  # the observation layout (docstring); unrecorded = the old "world"
CONTROLLER_DIR = "antmaze_d4rl_ant"  # the controller's folder under results/policies


@dataclass
class ControllerConfig:
    total_steps: int = 10_240_000  # env steps of training
    chunk: int = 40_960  # checkpoint + evaluation every this many steps
    milestone_every: int = 409_600  # copy the model to out_dir (committed) this often
    n_envs: int = 2  # PPO: parallel arena envs
    subproc: bool = False  # PPO: envs in worker processes (SubprocVecEnv) instead of in-process
    ppo_n_steps: int = 1024  # PPO: rollout length per env (chunk: a multiple of n_steps x n_envs)
    # PPO: initial log std of the Gaussian policy. SB3's 0 (std 1) flips this ant: uniform
    # random actions put it on its back within 26-114 steps here, half-size ones never in 300
    ppo_log_std_init: float = -1.0
    episode_steps: int = 500  # training episode length (25 s; several targets per episode)
    target_min: float = 1.0  # m; targets are drawn this far from the ant ...
    target_max: float = 6.0  # ... up to this far (and the observed vector is clipped to it)
    eval_episodes: int = 50  # one target per evaluation episode
    eval_steps: int = 300  # an evaluation target counts as reached within this many steps
    target_success: float = 0.9  # training stops once a chunk's success rate reaches it
    # evaluation: sampled actions + D4RL's noise N(0, action_noise^2), clipped; 0: deterministic
    action_noise: float = 0.2
    train_noise: float = 0.2  # the same noise on the training env's actions (0: none)
    alive_bonus: float = 1.0  # reward per upright step (Ant-v5's healthy reward), so a flip
    # forfeits every later one; 0: the first heading run's reward
    upright_steps: int = 1000  # an evaluation episode succeeds only if upright this long
    seed: int = 0
    cache_dir: str = f"cache/{CONTROLLER_DIR}"  # big files: SB3 checkpoints
    out_dir: str = f"results/policies/{CONTROLLER_DIR}"  # small committed files
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
        if not 0 < self.target_min < self.target_max:
            raise ConfigError("ControllerConfig: need 0 < target_min < target_max")


def yaw(state: np.ndarray) -> float:
    """The torso's heading (rad) from AntMaze's ``observation`` (quaternion w, x, y, z at 1-4)."""
    w, x, y, z = state[1:5]
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def goal_obs(obs: dict, target: np.ndarray, target_max: float) -> np.ndarray:
    """The controller's input in the torso's heading frame (module docstring): the 27-number
    state without its yaw, the unit direction to ``target`` and its distance (<= target_max)."""
    state = np.array(obs["observation"], dtype=np.float64)
    psi = yaw(state)
    c, s, ch, sh = np.cos(psi), np.sin(psi), np.cos(psi / 2), np.sin(psi / 2)
    w, x, y, z = state[1:5]
    tilt = np.array([ch * w + sh * z, ch * x + sh * y, ch * y - sh * x, ch * z - sh * w])
    state[1:5] = tilt if tilt[0] >= 0 else -tilt  # q and -q: the same orientation
    to_heading = np.array([[c, s], [-s, c]])  # rotation by -yaw
    state[13:15] = to_heading @ state[13:15]  # the torso's x, y velocity (world frame in MuJoCo)
    delta = to_heading @ (np.asarray(target, dtype=np.float64) - obs["achieved_goal"])
    dist = float(np.linalg.norm(delta))
    direction = delta / dist if dist > 1e-9 else np.zeros(2)
    return np.concatenate([state, direction, [min(dist, target_max)]]).astype(np.float32)


def upside_down(state: np.ndarray) -> bool:
    """Whether the torso's up axis points down; ``state``: AntMaze's ``observation`` (torso
    height, then its orientation quaternion w, x, y, z)."""
    qx, qy = state[2], state[3]
    return bool(1.0 - 2.0 * (qx * qx + qy * qy) < 0.0)


class ArenaTargets(gym.Env):
    """AntMaze v5 in the open arena with our own nearby targets and a dense shaped reward."""

    def __init__(self, cfg: ControllerConfig, max_steps: int | None = None, noise: float = 0.0):
        self.cfg, self.noise = cfg, noise  # N(0, noise^2) added to every action, clipped
        self.env = make_antmaze(layout=ARENA, max_episode_steps=max_steps or cfg.episode_steps)
        n = self.env.observation_space["observation"].shape[0] + 3
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
        self.target = self._new_target(obs["achieved_goal"])
        self._dist = np.linalg.norm(self.target - obs["achieved_goal"])
        return goal_obs(obs, self.target, self.cfg.target_max), info

    def step(self, action):
        """One env step: the dense training reward, a new target on arrival."""
        if self.noise:
            action = action + self.noise * self.np_random.standard_normal(np.shape(action))
            action = np.clip(action, -1.0, 1.0).astype(np.float32)
        obs, _, _, truncated, info = self.env.step(action)
        dist = np.linalg.norm(self.target - obs["achieved_goal"])
        reward = 20.0 * (self._dist - dist) - 0.05 * float(np.square(action).sum())
        info["reached"] = bool(dist <= ANTMAZE_GOAL_RADIUS)
        if info["reached"]:
            reward += 5.0
            self.target = self._new_target(obs["achieved_goal"])
            dist = np.linalg.norm(self.target - obs["achieved_goal"])
        self._dist = dist
        flipped = upside_down(obs["observation"])
        reward += -FLIP_PENALTY if flipped else self.cfg.alive_bonus
        return goal_obs(obs, self.target, self.cfg.target_max), reward, flipped, truncated, info


# ---------------------------------------------------------------- evaluation


class Controller:
    """A trained controller: the SB3 model and the VecNormalize it was trained with (only its
    observation statistics are used; None: raw observations)."""

    def __init__(self, model, vecnorm=None):
        self.model, self.vecnorm = model, vecnorm

    def __call__(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        if self.vecnorm is not None:
            obs = self.vecnorm.normalize_obs(obs)
        return self.model.predict(obs, deterministic=deterministic)[0]


def success_rate(controller: Controller, cfg: ControllerConfig, episodes: int, seed: int) -> float:
    """Fraction of fresh arena episodes whose first target is reached within ``eval_steps``
    and that stay upright for ``upright_steps`` of chained targets (sampled actions +
    ``action_noise``; deterministic ones without noise)."""
    env = ArenaTargets(cfg, max_steps=max(cfg.eval_steps, cfg.upright_steps))
    hits, rng, noise = 0, np.random.default_rng(seed), cfg.action_noise
    with torch.random.fork_rng():  # SB3 samples with torch's generator
        torch.manual_seed(seed)
        for ep in range(episodes):
            hits += _reached(env, controller, seed + ep, rng, noise, cfg)
    env.close()
    return hits / episodes


def _reached(env, controller: Controller, seed: int, rng, noise: float, cfg) -> bool:
    """One evaluation episode: the first target reached within ``eval_steps`` and the ant
    upright for ``upright_steps``."""
    obs, _ = env.reset(seed=seed)
    reached = False
    for t in range(max(cfg.eval_steps, cfg.upright_steps)):
        action = controller(obs, deterministic=not noise)
        action = np.clip(action + noise * rng.standard_normal(action.shape), -1.0, 1.0)
        obs, _, flipped, truncated, info = env.step(action)
        reached |= info["reached"]
        if flipped or truncated or (t + 1 >= cfg.eval_steps and not reached):
            return reached and not flipped and t + 1 >= cfg.upright_steps
    return reached


# ---------------------------------------------------------------- checkpoints


def milestone_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / "milestone.zip"


def read_curve(out_dir: str | Path) -> dict:
    """controller.json: the learning curve, config and commands ({} before the first one)."""
    path = Path(out_dir) / "controller.json"
    return json.loads(path.read_text()) if path.exists() else {}


def check_design(design: str, where: Path) -> None:
    """A clear error for a model of another observation layout than ``DESIGN``."""
    if design != DESIGN:
        raise ConfigError(
            f"{where} holds an ant controller of design {design!r}, not {DESIGN!r} (another "
            "observation layout or ant); use another --out-dir and --cache-dir."
        )


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
    info = read_curve(path.parent)
    check_design(info.get("design", "world"), path)
    vecnorm = None
    if _vecnorm_path(path).exists():
        with open(_vecnorm_path(path), "rb") as f:
            vecnorm = pickle.load(f)  # a VecNormalize without its envs: the statistics
        vecnorm.training = False
    from stable_baselines3 import PPO

    return Controller(PPO.load(path, device="cpu"), vecnorm)


def _save_model(model, path: Path) -> None:
    """model.zip and its observation statistics next to it (model_vecnorm.pkl)."""
    model.save(path)
    model.get_env().save(_vecnorm_path(path))


def _save_checkpoint(model, cfg: ControllerConfig, curve: list[dict]) -> None:
    """Model and curve into the cache; written to a temp folder, then swapped
    in, so a kill mid-save leaves the previous checkpoint whole."""
    cache = Path(cfg.cache_dir)
    tmp, final = cache / "ckpt.tmp", cache / "ckpt"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_model(model, tmp / "model.zip")
    save_json(curve, tmp / "curve.json")
    save_json({"design": DESIGN}, tmp / "controller.json")  # read_curve(ckpt) finds it
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
    info = {"step": model.num_timesteps, "design": DESIGN, "curve": curve, "config": config}
    info["commands"] = commands
    info["gym_id"] = "AntMaze_UMaze-v5 (open arena maze_map)"
    save_json(info, Path(cfg.out_dir) / "controller.json")


def _load(cfg: ControllerConfig, env):
    """(model, curve) from the local checkpoint, else from the committed milestone, else
    (None, []). ``env``: the raw vectorised arena."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    ckpt = Path(cfg.cache_dir) / "ckpt"
    path = ckpt / "model.zip"
    if not path.exists():
        path = milestone_path(cfg.out_dir)
    if not path.exists():
        return None, []
    check_design(read_curve(path.parent).get("design", "world"), path)
    if _vecnorm_path(path).exists():
        env = VecNormalize.load(_vecnorm_path(path), env)
    model = PPO.load(path, env=env, device="cpu")
    if path.parent == ckpt:
        curve = json.loads((ckpt / "curve.json").read_text())
    else:
        curve = read_curve(cfg.out_dir)["curve"]
    model._last_obs = None  # start a fresh episode rather than reuse the pickled observation
    env.seed(cfg.seed + model.num_timesteps)
    return model, curve


def _new(cfg: ControllerConfig, env):
    if cfg.chunk % (cfg.ppo_n_steps * cfg.n_envs):
        raise ConfigError(
            f"PPO chunk {cfg.chunk} is not a multiple of ppo_n_steps x n_envs "
            f"({cfg.ppo_n_steps} x {cfg.n_envs})"
        )
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    return PPO(
        "MlpPolicy",
        VecNormalize(env),  # running normalisation of observations and rewards (rl-zoo's)
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
    n_envs = cfg.n_envs
    vec_cls = SubprocVecEnv if cfg.subproc and n_envs > 1 else DummyVecEnv
    kw = {"cfg": cfg, "noise": cfg.train_noise}
    env = make_vec_env(ArenaTargets, n_envs, cfg.seed, vec_env_cls=vec_cls, env_kwargs=kw)
    model, curve = _load(cfg, env)
    if model is None:
        model = _new(cfg, env)
        print(f"[antmaze] new PPO controller run to {cfg.total_steps}", flush=True)
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
        controller = Controller(model, model.get_env())
        success = success_rate(controller, cfg, cfg.eval_episodes, seed=cfg.seed + 10_000)
        curve = [c for c in curve if c["step"] < step]
        curve.append({"step": step, "success": success, "wall_s": round(time.time() - t0, 1)})
        curve[-1] |= {"upright_steps": cfg.upright_steps, "alive_bonus": cfg.alive_bonus}
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
