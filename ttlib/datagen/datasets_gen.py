"""D4RL-style offline datasets generated locally and stored as Minari datasets (`ttlib make-data`).

No D4RL/Minari dataset can be downloaded here, so we rebuild them the way D4RL did:

* locomotion: `random` (a randomly initialised SAC actor), `medium` / `expert` (the policies
  `ttlib make-policies` picked, actions sampled), `medium-replay` (that run's replay buffer up to
  the medium checkpoint) and `medium-expert` (medium and expert concatenated). Episodes are
  collected until the dataset holds exactly `transitions` steps; the last one is cut and marked
  truncated, as in D4RL. `ref_min_score`/`ref_max_score` are D4RL's reference returns.
* mazes, kind `diverse`: a noisy waypoint controller (:mod:`ttlib.datagen.maze_controller`)
  drives from a random start cell to a random goal cell, which is part of every observation;
  the sparse reward is about that goal (the AntMaze-like setting of the +Q experiment).
* `antmaze`: :mod:`ttlib.datagen.antmaze_gen` (not made by default: it needs the controller).

Datasets go to Minari's data dir (MINARI_DATASETS_PATH) and are never committed; the same seed
gives the same arrays (on the same machine and library versions).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from minari.data_collector import EpisodeBuffer  # episodes in the form Minari writes
from tqdm import tqdm

from ttlib.datagen.actor import SACActor, load_actor, one_torch_thread
from ttlib.datagen.maze_controller import WaypointController
from ttlib.envs import (
    ANTMAZE_ENV,
    ANTMAZE_KINDS,
    LOCOMOTION_ENVS,
    LOCOMOTION_KINDS,
    MAZE_ENVS,
    MAZE_KINDS,
    NAMESPACE,
    REF_SCORES,
    check_env_name,
    dataset_id,
    kinds_for,
    make_env,
    normalized_score,
)
from ttlib.errors import check_positive


@dataclass
class GenConfig:
    # steps per dataset (D4RL: 1M; medium-expert: twice this; medium-replay: what the run had)
    transitions: int = 100_000
    seed: int = 0
    policy_dir: str = "results/policies"  # where make-policies wrote medium.pt / expert.pt
    overwrite: bool = False
    progress: bool = False  # a progress bar per dataset (the CLI; notebooks keep quiet)
    # noisy waypoint controller of the maze datasets
    kp: float = 10.0  # proportional gain towards the next waypoint
    kd: float = 1.0  # damping on the point's velocity
    action_noise: float = 0.5  # std of Gaussian noise added to the action before clipping
    # AntMaze (antmaze_gen.py): D4RL's generation timeout and action noise
    antmaze_episode_steps: int = 1000
    antmaze_action_noise: float = 0.2

    def __post_init__(self):
        check_positive("GenConfig", transitions=self.transitions)  # 0 wrote an empty dataset


def parse_dataset_id(did: str) -> tuple[str, str]:
    """(env, kind) of a local id such as `ttlib/hopper/medium-replay-v0`."""
    parts = did.split("/")
    if len(parts) != 3 or parts[0] != NAMESPACE or not parts[2].endswith("-v0"):
        raise ValueError(f"{did!r} is not a local dataset id; expected 'ttlib/<env>/<kind>-v0'.")
    env, kind = parts[1], parts[2][: -len("-v0")]
    dataset_id(env, kind)  # validates
    return env, kind


def _stack(obs: list) -> np.ndarray | dict[str, np.ndarray]:
    if isinstance(obs[0], dict):
        return {k: np.stack([o[k] for o in obs]).astype(np.float64) for k in obs[0]}
    return np.stack(obs).astype(np.float32)


def run_episode(
    env: gym.Env, act, max_steps: int, seed: int, options: dict | None = None
) -> EpisodeBuffer:
    """Roll out `act(obs) -> action` for at most `max_steps` steps; a cut episode is truncated."""
    obs, _ = env.reset(seed=seed, options=options)
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    while True:
        action = act(obs)
        obs, r, term, trunc, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(r)
        terms.append(term)
        truncs.append(trunc or (len(rewards) >= max_steps and not term))
        if terms[-1] or truncs[-1]:
            break
    return EpisodeBuffer(
        seed=seed,
        observations=_stack(observations),
        actions=np.asarray(actions, dtype=np.float32),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminations=np.asarray(terms),
        truncations=np.asarray(truncs),
    )


def collect(
    env: gym.Env, act, transitions: int, seed: int, options_fn=None, progress: str | None = None
) -> list[EpisodeBuffer]:
    """Episodes of one policy until exactly `transitions` steps; reset seeds seed, seed+1, …

    ``progress``: the label of a progress bar (None: no bar)."""
    episodes: list[EpisodeBuffer] = []
    total = 0
    with tqdm(
        total=transitions, desc=progress, unit="step", disable=progress is None, mininterval=2
    ) as bar:
        while total < transitions:
            ep_seed = seed + len(episodes)
            options = options_fn(ep_seed) if options_fn is not None else None
            episodes.append(run_episode(env, act, transitions - total, ep_seed, options))
            total += len(episodes[-1])
            bar.update(len(episodes[-1]))
    return episodes


def random_actor(env: gym.Env, seed: int) -> SACActor:
    """A randomly initialised SAC actor: D4RL's `random` policy."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    space = env.action_space
    actor = SACActor(env.observation_space.shape[0], space.shape[0], space.low, space.high)
    torch.random.set_rng_state(gen_state)
    return actor.eval()


def _policy(policy_dir: Path, env_name: str, name: str) -> SACActor:
    path = policy_dir / env_name / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"No {name} policy at {path}; run `ttlib make-policies --env {env_name}` first "
            "or pass --policy-dir."
        )
    return load_actor(path)


def replay_episodes(path: Path, transitions: int) -> list[EpisodeBuffer]:
    """Episodes of a `medium_replay.npz` (replay.compress_transitions), up to `transitions`."""
    if not path.exists():
        raise FileNotFoundError(f"No replay data at {path}; run `ttlib make-policies` first.")
    data = {k: v for k, v in np.load(path).items()}
    n = min(transitions, len(data["rewards"]))
    ends = np.flatnonzero(data["terminations"] | data["truncations"])
    episodes, start = [], 0
    for i, end in enumerate(ends):
        stop = min(end + 1, n)
        cut = stop <= end  # the size limit falls inside this episode
        last_obs = data["observations"][stop] if cut else data["final_observations"][i]
        truncations = data["truncations"][start:stop].copy()
        truncations[-1] |= cut
        episodes.append(
            EpisodeBuffer(
                observations=np.concatenate(
                    [data["observations"][start:stop], last_obs[None]]
                ).astype(np.float32),
                actions=data["actions"][start:stop].astype(np.float32),
                rewards=data["rewards"][start:stop].astype(np.float64),
                terminations=data["terminations"][start:stop],
                truncations=truncations,
            )
        )
        start = stop
        if start >= n:
            break
    return episodes


def locomotion_episodes(env_name: str, kind: str, cfg: GenConfig) -> list[EpisodeBuffer]:
    env = make_env(env_name)
    policy_dir = Path(cfg.policy_dir)
    # Each kind draws from its own seed range (medium-expert reuses medium's and expert's).
    seed = cfg.seed * 1_000_000 + LOCOMOTION_KINDS.index(kind) * 100_000
    rng = np.random.default_rng(seed)
    label = f"{env_name}/{kind}" if cfg.progress else None

    def sampler(actor: SACActor):
        return lambda obs: actor.act(obs, rng)

    if kind == "random":
        return collect(env, sampler(random_actor(env, seed)), cfg.transitions, seed, None, label)
    if kind in ("medium", "expert"):
        actor = _policy(policy_dir, env_name, kind)
        return collect(env, sampler(actor), cfg.transitions, seed, None, label)
    if kind == "medium-expert":
        # D4RL's definition: the medium and the expert datasets concatenated (2 × transitions),
        # each collected with its own dataset's seed, so the halves equal those datasets
        return [ep for part in ("medium", "expert") for ep in _half(env_name, part, cfg)]
    return replay_episodes(policy_dir / env_name / "medium_replay.npz", cfg.transitions)


def _half(env_name: str, part: str, cfg: GenConfig) -> list[EpisodeBuffer]:
    """One half of medium-expert: the local `part` dataset when it was written with this seed
    and size (reading it takes seconds; collecting 1M HalfCheetah steps again took 8 minutes
    here), else the same episodes collected anew."""
    stored = _complete_dataset(dataset_id(env_name, part))
    if stored is not None and stored.total_steps == cfg.transitions:
        first_seed = cfg.seed * 1_000_000 + LOCOMOTION_KINDS.index(part) * 100_000
        metas = list(stored.storage.get_episode_metadata(range(stored.total_episodes)))
        if [m.get("seed") for m in metas] == list(range(first_seed, first_seed + len(metas))):
            keys = ("observations", "actions", "rewards", "terminations", "truncations")
            episodes = stored.storage.get_episodes(range(len(metas)))
            return [
                EpisodeBuffer(id=None, seed=meta["seed"], **{k: ep[k] for k in keys})
                for meta, ep in zip(metas, episodes, strict=True)
            ]
    return locomotion_episodes(env_name, part, cfg)


def maze_episodes(env_name: str, cfg: GenConfig) -> list[EpisodeBuffer]:
    env = make_env(env_name)
    seed = cfg.seed * 1_000_000
    rng = np.random.default_rng(seed)
    controller = WaypointController(env, env_name, cfg, rng)
    free_cells = np.argwhere(controller.free)

    def options(_ep_seed: int) -> dict:
        start, goal = rng.choice(len(free_cells), size=2, replace=False)
        controller.set_goal(tuple(free_cells[goal]))
        return {"reset_cell": free_cells[start], "goal_cell": free_cells[goal]}

    label = f"{env_name}/diverse" if cfg.progress else None
    return collect(env, controller, cfg.transitions, seed, options, label)


def _complete_dataset(did: str):
    """The local dataset `did` if it was written to the end, else None.

    Minari writes the step count into the metadata only after the last episode, so a run
    killed mid-write leaves a dataset with 0 steps (or an unreadable file) that is redone.
    """
    import minari

    try:
        ds = minari.load_dataset(did)
        if ds.total_steps > 0:
            next(ds.iterate_episodes())
            return ds
    except (OSError, KeyError, ValueError, StopIteration):
        pass
    return None


def make_dataset(env_name: str, kind: str, cfg: GenConfig):
    """Generate one dataset into Minari's data dir and return it as a `MinariDataset`."""
    import minari

    did = dataset_id(env_name, kind)
    if did in minari.list_local_datasets():
        existing = None if cfg.overwrite else _complete_dataset(did)
        if existing is not None:
            return existing
        minari.delete_dataset(did)
    if env_name == ANTMAZE_ENV:
        from ttlib.datagen.antmaze_gen import make_antmaze_dataset

        return make_antmaze_dataset(did, kind, cfg)
    if env_name in LOCOMOTION_ENVS:
        with one_torch_thread():
            episodes = locomotion_episodes(env_name, kind, cfg)
        ref = dict(zip(("ref_min_score", "ref_max_score"), REF_SCORES[env_name], strict=True))
        algorithm = "SB3 SAC behaviour policy" if kind != "random" else "random-init SAC actor"
    else:
        episodes = maze_episodes(env_name, cfg)
        ref = {}
        algorithm = "noisy BFS waypoint controller (PD)"
    env = make_env(env_name)
    with warnings.catch_warnings():  # minari warns about every metadata field we leave empty
        warnings.simplefilter("ignore", UserWarning)
        return minari.create_dataset_from_buffers(
            dataset_id=did,
            buffer=[replace(ep, id=i) for i, ep in enumerate(episodes)],
            env=env,
            algorithm_name=algorithm,
            author="ttlib",
            author_email="ttlib@users.noreply.github.com",
            code_permalink="ttlib/datagen/datasets_gen.py",
            description=f"D4RL-style {kind} data for {env_name}, generated by `ttlib make-data` "
            f"(seed {cfg.seed}); see ttlib/datagen/datasets_gen.py.",
            **ref,
        )


def make_datasets(
    envs: list[str] | None = None, kinds: list[str] | None = None, cfg: GenConfig | None = None
) -> list[str]:
    """Generate every (env, kind) pair asked for; kinds that do not apply to an env are skipped
    only when `kinds` was not given explicitly for that env family."""
    cfg = cfg or GenConfig()
    envs = envs or [*LOCOMOTION_ENVS, *MAZE_ENVS]
    for env in envs:
        check_env_name(env)
    pairs = []
    for env in envs:
        valid = kinds_for(env)
        for kind in kinds or valid:
            if kind not in LOCOMOTION_KINDS + MAZE_KINDS + ANTMAZE_KINDS:
                dataset_id(env, kind)  # raises, naming the valid kinds
            if kind in valid:
                pairs.append((env, kind))
    if not pairs:
        raise ValueError(f"No dataset matches envs {envs} and kinds {kinds}.")
    ids = []
    for env, kind in pairs:
        make_dataset(env, kind, cfg)
        ids.append(dataset_id(env, kind))
    return ids


def episode_returns(ids: list[str] | None = None):
    """One row per episode of the local datasets ``ids`` (default: every ``ttlib/`` one):
    dataset id, env, kind, length, return and D4RL-normalised return (NaN without reference
    scores). Each dataset is read once; the summary table and the plots start from here."""
    import pandas as pd

    from ttlib.data import episodes_from_minari, load_minari, local_dataset_ids

    ids = ids or [d for d in local_dataset_ids() if d.startswith(NAMESPACE + "/")]
    frames = []
    for did in ids:
        env, kind = parse_dataset_id(did)
        # a malformed dataset is a DatasetError naming its folder
        episodes = episodes_from_minari(load_minari(did))
        returns = np.array([ep.rewards.sum() for ep in episodes])
        normalized = normalized_score(env, returns) if env in REF_SCORES else np.nan
        columns = dict(dataset_id=did, env=env, kind=kind, steps=[len(ep) for ep in episodes])
        frames.append(pd.DataFrame(columns | {"return": returns, "normalized": normalized}))
    columns = ["dataset_id", "env", "kind", "steps", "return", "normalized"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def summarize_returns(returns):
    """Dataset sizes and returns, one row per dataset, from :func:`episode_returns`."""
    import pandas as pd

    rows = []
    for did, g in returns.groupby("dataset_id", sort=False):
        r = g["return"].to_numpy()
        rows.append(
            {
                "dataset_id": did,
                "episodes": len(g),
                "transitions": int(g["steps"].sum()),
                "return_mean": r.mean(),
                "return_std": r.std(),
                "normalized_score_mean": g["normalized"].to_numpy().mean(),
                # AntMaze's sparse return is > 0 iff the episode reached its goal
                "success_rate": (r > 0).mean() if (g["env"] == ANTMAZE_ENV).all() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def data_summary(ids: list[str] | None = None):
    """Table of dataset sizes and returns (pandas), one row per dataset."""
    return summarize_returns(episode_returns(ids))
