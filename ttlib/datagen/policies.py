"""Behaviour policies for the locomotion datasets (`ttlib make-policies`), the D4RL recipe.

D4RL trained one SAC agent per env: the final policy is `expert`, an earlier checkpoint at about
a third of its return `medium`, the replay buffer up to it `medium-replay`. We do the same with
stable-baselines3 SAC, in resumable chunks of `checkpoint_every` steps (full SB3 model and
replay buffer in the git-ignored cache; every chunk's actor kept and evaluated with the
*stochastic* policy, the way the datasets are collected). `finalize` picks expert and medium,
evaluates both on fresh episodes and writes the small committed files under
`results/policies/<env>/`: `{medium,expert}.pt` (actor state dicts), `medium_replay.npz`
(float16 observations and actions under `replay_budget_mb`) and `policies.json`.

The local cache does not survive a fresh machine, so `save_early` (called at every milestone)
copies next to the committed files what `finalize` needs from it: the replay buffer up to the
first chunk that reaches `prefix_score` (`early/replay_prefix.npz`), the actors up to there
(`early/step_*.pt`: the medium candidates) and the best actor so far (`early/best.pt`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ttlib.datagen.actor import actor_from_sb3, evaluate, load_actor, save_actor
from ttlib.datagen.replay import (
    compress_transitions,
    cut_transitions,
    grow_buffer,
    replay_transitions,
)
from ttlib.envs import LOCOMOTION_ENVS, REF_SCORES, check_env_name, make_env, normalized_score
from ttlib.errors import ConfigError, check_positive, is_int
from ttlib.io import load_torch_file, save_json


@dataclass
class PolicyConfig:
    env: str = "halfcheetah"
    total_steps: int = 200_000  # env steps of SAC training (D4RL used 1M; we are on 2 CPU cores)
    checkpoint_every: int = 10_000  # chunk size: checkpoint + evaluation every this many steps
    learning_starts: int = 5_000  # uniform-random warm-up steps (they start the replay buffer)
    eval_episodes: int = 10  # episodes per chunk evaluation (used for the medium/expert choice)
    final_eval_episodes: int = 20  # fresh episodes for the numbers in policies.json
    # medium = the checkpoint whose return is closest to random + fraction * (best - random):
    # D4RL's "about a third of the expert"
    medium_fraction: float = 1 / 3
    # ... among the checkpoints at or after this step, so that medium-replay (the replay buffer
    # up to medium) holds at least this many transitions, as D4RL's (202k-402k) do
    min_replay_steps: int = 100_000
    replay_budget_mb: float = 20.0  # medium_replay.npz must stay small enough to commit
    prefix_score: float = 45.0  # normalised return up to which the replay prefix is kept
    seed: int = 0
    stop_score: float | None = None  # stop once a chunk's D4RL-normalised return (x100) reaches it
    milestone_every: int = 100_000  # copy the full SAC state to out_dir (committed) this often
    cache_dir: str = "cache/policies"  # big files: SB3 checkpoints, replay buffers, all actors
    out_dir: str = "results/policies"  # small committed files
    command: str = ""  # the command line that produced the run, recorded in policies.json

    def __post_init__(self):
        # a zero or negative budget would "finish" at once and select from nothing
        check_positive(
            "PolicyConfig",
            total_steps=self.total_steps,
            checkpoint_every=self.checkpoint_every,
            eval_episodes=self.eval_episodes,
            final_eval_episodes=self.final_eval_episodes,
            milestone_every=self.milestone_every,
        )
        if not (is_int(self.learning_starts) and self.learning_starts >= 0):
            starts = self.learning_starts
            raise ConfigError(f"PolicyConfig learning_starts={starts!r}: must be an integer >= 0")


def check_locomotion(env: str) -> None:
    """A ValueError unless `env` is a locomotion env, the only kind with SAC policies."""
    if env not in LOCOMOTION_ENVS:
        raise ValueError(
            f"make-policies trains locomotion policies only, got {env!r}; "
            f"choose from {', '.join(LOCOMOTION_ENVS)}."
        )


def _env_cache(cfg: PolicyConfig) -> Path:
    return Path(cfg.cache_dir) / cfg.env


def _read_evals(cache: Path) -> list[dict]:
    path = cache / "evals.json"
    return json.loads(path.read_text()) if path.exists() else []


def _save_checkpoint(model, cache: Path, step: int) -> None:
    """Save model + replay buffer into ckpt_<step>/, then point `latest` at it, then prune."""
    folder = cache / f"ckpt_{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.zip")
    model.save_replay_buffer(folder / "replay.pkl")
    (cache / "latest.tmp").write_text(folder.name)
    os.replace(cache / "latest.tmp", cache / "latest")
    for old in cache.glob("ckpt_*"):
        if old != folder:
            shutil.rmtree(old)


def _load_latest(cache: Path, env=None, replay: bool = True):
    """The SB3 model of the newest local checkpoint, with its replay buffer if `replay`."""
    from stable_baselines3 import SAC

    folder = cache / (cache / "latest").read_text().strip()
    model = SAC.load(folder / "model.zip", env=env, device="cpu")
    if replay:
        model.load_replay_buffer(folder / "replay.pkl")
    return model


def _milestone(cfg: PolicyConfig) -> Path:
    """The committed copy of the full SAC state (networks, optimisers, entropy coefficient)."""
    return Path(cfg.out_dir) / cfg.env / "sac_milestone.zip"


def _milestone_info(cfg: PolicyConfig) -> dict:
    """The milestone's step, learning curve and commands ({} where none was written)."""
    path = _milestone(cfg).with_suffix(".json")
    return json.loads(path.read_text()) if path.exists() else {}


def _commands(cfg: PolicyConfig) -> list[str]:
    """Every command line that trained this env's run (kept in the cache)."""
    path = _env_cache(cfg) / "commands.txt"
    return path.read_text().splitlines() if path.exists() else []


def _load_checkpoint(cfg: PolicyConfig, env):
    """Load the newest local checkpoint; else the committed milestone (with an empty replay
    buffer: a fresh machine has none, so training continues on newly collected data); else None.
    """
    from stable_baselines3 import SAC

    cache = _env_cache(cfg)
    if (cache / "latest").exists():
        model = _load_latest(cache, env)
        rb = model.replay_buffer
        # The episode running at the kill is lost: close it as a time-out (bootstrapped, like a
        # time limit); below, SB3 resets the fresh env instead of reusing the pickled last obs.
        if rb.pos > 0 or rb.full:
            last = (rb.pos - 1) % rb.buffer_size
            rb.dones[last] = 1.0
            rb.timeouts[last] = 1.0
    elif _milestone(cfg).exists():
        model = SAC.load(_milestone(cfg), env=env, device="cpu")
        milestone = _milestone_info(cfg)
        save_json(milestone["evaluations"], cache / "evals.json")
        with open(cache / "commands.txt", "a") as f:
            f.write("".join(c + "\n" for c in milestone["train_commands"]))
            f.write(
                f"# resumed from {_milestone(cfg)} at step {model.num_timesteps}, empty buffer\n"
            )
        # this buffer starts here, not at step 0: save_early must not cut a prefix from it
        (cache / "buffer_starts_at").write_text(str(model.num_timesteps))
    else:
        return None
    model._last_obs = None
    env.seed(cfg.seed + model.num_timesteps)
    return model


def train(cfg: PolicyConfig) -> Path:
    """Train SAC on `cfg.env` to `cfg.total_steps`, resuming from the cache if possible."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env

    check_locomotion(cfg.env)
    torch.set_num_threads(1)  # two trainers share a 2-core machine
    cache = _env_cache(cfg)
    cache.mkdir(parents=True, exist_ok=True)
    if cfg.command:  # a run may be resumed or extended several times: keep every command
        with open(cache / "commands.txt", "a") as f:
            f.write(cfg.command + "\n")
    env = make_vec_env(lambda: make_env(cfg.env), n_envs=1, seed=cfg.seed)
    model = _load_checkpoint(cfg, env)
    if model is None:
        model = SAC(
            "MlpPolicy",
            env,
            buffer_size=cfg.total_steps,
            learning_starts=cfg.learning_starts,
            seed=cfg.seed,
            device="cpu",
            verbose=0,
        )
        print(f"[{cfg.env}] new SAC run to {cfg.total_steps} steps", flush=True)
    else:
        print(f"[{cfg.env}] resumed at step {model.num_timesteps}", flush=True)
    if model.replay_buffer.buffer_size < cfg.total_steps:
        grow_buffer(model, cfg.total_steps)
    evals = _read_evals(cache)
    bar = tqdm(
        total=cfg.total_steps,
        initial=model.num_timesteps,
        desc=cfg.env,
        unit="step",
        mininterval=30,
        file=sys.stdout,
    )
    while model.num_timesteps < cfg.total_steps:
        if cfg.stop_score is not None and evals:
            if normalized_score(cfg.env, evals[-1]["mean"]) >= cfg.stop_score:
                print(f"[{cfg.env}] stop score {cfg.stop_score} reached", flush=True)
                break
        t0 = time.time()
        chunk = min(cfg.checkpoint_every, cfg.total_steps - model.num_timesteps)
        model.learn(chunk, reset_num_timesteps=False)
        step = model.num_timesteps
        actor = actor_from_sb3(model)
        save_actor(actor, cache / "actors" / f"step_{step:07d}.pt")
        returns = evaluate(actor, cfg.env, cfg.eval_episodes, seed=cfg.seed + 1000)
        _save_checkpoint(model, cache, step)
        record = {"step": step, "mean": float(returns.mean()), "std": float(returns.std())}
        record["wall_s"] = round(time.time() - t0, 1)
        evals = [e for e in evals if e["step"] < step] + [record]
        save_json(evals, cache / "evals.json")
        if step % cfg.milestone_every == 0 or step >= cfg.total_steps:
            _save_milestone(cfg, model, evals)
            save_early(cfg, model)
        bar.update(step - bar.n)
        print(
            f"[{cfg.env}] step {step}: return {returns.mean():.1f} ± {returns.std():.1f} "
            f"({chunk / (time.time() - t0):.0f} steps/s incl. eval)",
            flush=True,
        )
    bar.close()
    env.close()
    return cache


def _save_milestone(cfg: PolicyConfig, model, evals: list[dict]) -> None:
    """Copy the full SAC state and the learning curve so far next to the committed policies,
    so a fresh machine resumes training from here (`_load_checkpoint`)."""
    path = _milestone(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path.with_suffix(".tmp.zip"))
    os.replace(path.with_suffix(".tmp.zip"), path)
    info = {"step": model.num_timesteps, "evaluations": evals, "train_commands": _commands(cfg)}
    save_json(info, path.with_suffix(".json"))


def _early(cfg: PolicyConfig) -> Path:
    return Path(cfg.out_dir) / cfg.env / "early"


def _prefix_end(evals: list[dict], env_name: str, score: float) -> int:
    """The first evaluated step whose normalised return reaches `score` (else the last one)."""
    reached = (e["step"] for e in evals if normalized_score(env_name, e["mean"]) >= score)
    return next(reached, evals[-1]["step"])


def save_early(cfg: PolicyConfig, model=None) -> dict:
    """Copy what `finalize` needs from the local cache into `<out_dir>/<env>/early/` (see the
    module docstring). `model` is the SB3 model with its replay buffer; read from the latest
    local checkpoint when not given."""
    cache = _env_cache(cfg)
    evals = _read_evals(cache)
    if not evals:
        raise ValueError(f"No evaluated checkpoints for {cfg.env!r}; run make-policies first.")
    out = _early(cfg)
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "early.json"
    old = json.loads(info_path.read_text()) if info_path.exists() else {"prefix_end": 0}
    end = _prefix_end(evals, cfg.env, cfg.prefix_score)
    # A prefix only grows, and never from a buffer that restarted at a milestone (the steps
    # before the resume are not in it).
    grow = end > old["prefix_end"] and not (cache / "buffer_starts_at").exists()
    if not grow:
        end = old["prefix_end"]
    if model is None:  # called by hand before leaving a machine: read the latest checkpoint
        model = _load_latest(cache, replay=grow)
        if _milestone_info(cfg).get("step", -1) < model.num_timesteps:
            _save_milestone(cfg, model, evals)  # so training resumes from here, not 100k back
    if grow:
        prefix = replay_transitions(model, end)
        for k in ("observations", "actions", "final_observations"):
            prefix[k] = prefix[k].astype(np.float16)
        np.savez_compressed(out / "replay_prefix.npz", **prefix)
    # Actors missing locally were copied before the machine changed (resumed runs).
    actors = cache / "actors"
    for e in evals:
        name = f"step_{e['step']:07d}.pt"
        if e["step"] <= end and not (out / name).exists() and (actors / name).exists():
            _save_half(actors / name, out / name)
    best = max(evals, key=lambda e: e["mean"])
    if (actors / f"step_{best['step']:07d}.pt").exists():
        _save_half(actors / f"step_{best['step']:07d}.pt", out / "best.pt")
    else:
        best = {"step": old.get("best_step", best["step"])}
    info = {"prefix_end": end, "best_step": best["step"], "prefix_score": cfg.prefix_score}
    save_json(info, info_path)
    return info


def _save_half(src: Path, dst: Path) -> None:
    state = load_torch_file(src, "policy file")
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, dst)


def _actor_path(cfg: PolicyConfig, step: int) -> Path:
    """A chunk's actor: the local cache's, else the committed early copy."""
    local = _env_cache(cfg) / "actors" / f"step_{step:07d}.pt"
    if local.exists():
        return local
    early = _early(cfg) / f"step_{step:07d}.pt"
    if early.exists():
        return early
    info = json.loads((_early(cfg) / "early.json").read_text())
    if info["best_step"] == step:
        return _early(cfg) / "best.pt"
    raise FileNotFoundError(f"no actor of step {step} for {cfg.env!r} (local cache or early/)")


def select_checkpoints(
    evals: list[dict], env_name: str, fraction: float, min_step: int = 0
) -> tuple[int, int]:
    """(medium_step, expert_step): expert = best mean return; medium = the checkpoint before it,
    at step >= ``min_step`` where there is one, whose return is closest to
    random + fraction * (best - random), random being D4RL's."""
    if not evals:
        raise ValueError(f"No evaluated checkpoints for {env_name!r}; run make-policies first.")
    best = max(evals, key=lambda e: e["mean"])
    lo = REF_SCORES[env_name][0]
    target = lo + fraction * (best["mean"] - lo)
    earlier = [e for e in evals if e["step"] < best["step"]] or [best]
    earlier = [e for e in earlier if e["step"] >= min_step] or earlier
    medium = min(earlier, key=lambda e: abs(e["mean"] - target))
    return medium["step"], best["step"]


def finalize(cfg: PolicyConfig) -> dict:
    """Choose medium/expert from the existing checkpoints, evaluate them, write the small files."""
    check_env_name(cfg.env)
    cache = _env_cache(cfg)
    evals = _read_evals(cache)
    if not evals and _milestone(cfg).exists():  # a fresh machine: the committed learning curve
        evals = _milestone_info(cfg)["evaluations"]
    medium_step, expert_step = select_checkpoints(
        evals, cfg.env, cfg.medium_fraction, cfg.min_replay_steps
    )
    out = Path(cfg.out_dir) / cfg.env
    out.mkdir(parents=True, exist_ok=True)
    info: dict = {
        "env": cfg.env,
        "gym_id": LOCOMOTION_ENVS[cfg.env],
        "algorithm": "SB3 SAC",
        "trained_steps": evals[-1]["step"],
        "policy_eval": "stochastic actions",
    }
    for name, step in (("medium", medium_step), ("expert", expert_step)):
        actor = load_actor(_actor_path(cfg, step))
        save_actor(actor, out / f"{name}.pt")
        returns = evaluate(actor, cfg.env, cfg.final_eval_episodes, seed=cfg.seed + 2000)
        stats = {"return_mean": float(returns.mean()), "return_std": float(returns.std())}
        info[name] = {"step": step, **stats, "episodes": len(returns)}
    if (cache / "latest").exists():
        transitions = replay_transitions(_load_latest(cache), medium_step)
    else:  # a fresh machine: the committed prefix
        prefix = dict(np.load(_early(cfg) / "replay_prefix.npz"))
        if len(prefix["rewards"]) < medium_step:
            raise ValueError(
                f"{cfg.env}: the committed replay prefix ends at {len(prefix['rewards'])} steps, "
                f"before the medium checkpoint ({medium_step}); lower --prefix-score is too late"
            )
        transitions = cut_transitions(prefix, medium_step)
    replay = compress_transitions(transitions, cfg.replay_budget_mb, cfg.seed)
    np.savez_compressed(out / "medium_replay.npz", **replay)
    info["medium_replay"] = {
        "transitions": int(len(replay["rewards"])),
        "episodes": int(len(replay["final_observations"])),
        "kept_episode_fraction": float(replay["kept_episode_fraction"]),
        "dtype": "float16 observations and actions, float32 rewards",
    }
    info["evaluations"] = evals
    info["config"] = {k: v for k, v in asdict(cfg).items() if k != "command"}
    info["train_commands"] = _commands(cfg)
    info["command"] = cfg.command
    save_json(info, out / "policies.json")
    return info


def make_policies(cfg: PolicyConfig, finalize_only: bool = False) -> dict:
    """Train (or resume) and then write the final policy files for one env."""
    if not finalize_only:
        train(cfg)
    return finalize(cfg)
