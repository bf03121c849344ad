"""The D4RL locomotion table (the paper's Table 1): TT with both discretizers, BC and IQL.

For every (env, dataset) cell the Trajectory Transformer is trained twice (uniform and quantile
bins) and the two baselines once, all on the same episodes, and every agent is rolled out in
the simulator; scores are D4RL-normalised ×100, reported as mean ± standard error over all
episodes (pooled over training seeds, as the original pools 5 models × 3 rollouts).

Everything expensive is cached under ``cache/`` and keyed by what produced it: trained models
(``cache/models``, the same folders as :func:`ttlib.experiment.train_cached`), baselines
(``cache/d4rl/baselines``) and *single evaluation episodes* (``cache/d4rl/episodes``). A
killed run therefore loses at most one episode, and the table can be filled over several
sessions: ``python -m ttlib.d4rl_table --preset cpu`` fills the caches without the notebook.

Datasets are ours (``ttlib/<env>/<kind>-v0``, generated from SAC behaviour policies) or, with
``dataset_namespace: mujoco``, Minari's remote ``mujoco/<env>/<kind>-v0`` (see
:data:`REMOTE_SOURCES` for how D4RL's dataset names map onto them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ttlib.config import cache_dir, config_key, model_kwargs, repo_root, train_kwargs
from ttlib.data import (
    DataConfig,
    Episode,
    SequenceDataset,
    data_fingerprint,
    load_episodes,
    load_minari,
)
from ttlib.evaluate import evaluate, mean_se
from ttlib.experiment import model_folder, note_model
from ttlib.io import load_torch, save_json, save_torch
from ttlib.search import PlannerConfig, TTPlanner
from ttlib.train import TrainConfig, gpt_config_for, load_checkpoint, train

log = logging.getLogger("ttlib.d4rl")

ENVS = ("halfcheetah", "hopper", "walker2d")
KINDS = ("medium-expert", "medium", "medium-replay")
DISCRETIZERS = ("uniform", "quantile")
BASELINES = ("BC", "IQL")
METHODS = ("TT (uniform)", "TT (quantile)", *BASELINES)
ENV_LABELS = {"halfcheetah": "HalfCheetah", "hopper": "Hopper", "walker2d": "Walker2d"}
KIND_LABELS = {
    "medium-expert": "Medium-Expert",
    "medium": "Medium",
    "medium-replay": "Medium-Replay",
}
EVAL_SEED = 10_000_000  # evaluation reset seeds start here, far from the data-collection seeds


def tt_method(discretizer: str) -> str:
    return f"TT ({discretizer})"


def method_name(short: str) -> str:
    """A table method from a short command-line name: ``uniform``/``quantile`` (TT) or a
    baseline (``bc``, ``IQL``, ...); case does not matter."""
    for method in METHODS:
        if short.lower() in (method.lower(), method.lower().removeprefix("tt (").rstrip(")")):
            return method
    raise ValueError(f"unknown method {short!r}; choose from uniform, quantile, BC, IQL")


@contextlib.contextmanager
def quiet_c_output():
    """Silence what C code writes to stdout / stderr (MuJoCo warns about HalfCheetah's
    deprecated ``settotalmass`` each time it compiles the model); exceptions still propagate."""
    streams = [s for s in (sys.__stdout__, sys.__stderr__) if s is not None]
    for stream in (sys.stdout, sys.stderr, *streams):
        stream.flush()
    try:
        fds = sorted({s.fileno() for s in streams})
    except (OSError, ValueError):  # no real file descriptors: nothing to silence
        fds = []
    saved = [os.dup(fd) for fd in fds]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
        yield
    finally:
        for fd, copy in zip(fds, saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


# ------------------------------------------------------------------ the paper's numbers
# D4RL v2 normalised scores as the paper and its code report them (reference/paper-facts.md 2a).
# BC and TT (quantile): the original README / plotting code; IQL: the IQL paper's Table 1 as
# quoted by the diffuser code; TT (uniform): a single secondary source, not checked against
# the paper itself. TT columns are (mean, standard error); baselines come without one.
# Columns: env, kind, BC, IQL, TT (uniform) (mean, s.e.), TT (quantile) (mean, s.e.).
PAPER_ROWS: list[tuple[str, str, float, float, tuple[float, float], tuple[float, float]]] = [
    ("halfcheetah", "medium-expert", 59.9, 86.7, (40.8, 2.3), (95.0, 0.2)),
    ("hopper", "medium-expert", 79.6, 91.5, (106.0, 0.28), (110.0, 2.7)),
    ("walker2d", "medium-expert", 36.6, 109.6, (91.0, 2.8), (101.9, 6.8)),
    ("halfcheetah", "medium", 43.1, 47.4, (44.0, 0.31), (46.9, 0.4)),
    ("hopper", "medium", 63.9, 66.3, (67.4, 2.9), (61.1, 3.6)),
    ("walker2d", "medium", 77.3, 78.3, (81.3, 2.1), (79.0, 2.8)),
    ("halfcheetah", "medium-replay", 4.3, 44.2, (44.1, 0.9), (41.9, 2.5)),
    ("hopper", "medium-replay", 27.6, 94.7, (99.4, 3.2), (91.5, 3.6)),
    ("walker2d", "medium-replay", 36.9, 73.9, (79.4, 3.3), (82.6, 6.9)),
]
PAPER_SOURCES = {
    "BC": "TT paper / original README",
    "IQL": "IQL paper Table 1 (via diffuser's score file)",
    "TT (uniform)": "secondary source only (a study note), not checked against the paper",
    "TT (quantile)": "TT paper / original README",
}


def paper_table() -> pd.DataFrame:
    """The published scores in long format: env, kind, method, score, se, source."""
    rows = []
    for env, kind, bc, iql, uniform, quantile in PAPER_ROWS:
        cells = {"BC": (bc, np.nan), "IQL": (iql, np.nan)}
        cells.update({"TT (uniform)": uniform, "TT (quantile)": quantile})
        for method, (m, se) in cells.items():
            rows.append(
                {
                    "env": env,
                    "kind": kind,
                    "method": method,
                    "score": m,
                    "se": se,
                    "source": PAPER_SOURCES[method],
                }
            )
    return pd.DataFrame(rows)


def average_scores(table: pd.DataFrame, column: str = "score") -> pd.Series:
    """Mean of ``column`` per method over the datasets present (the tables' Average row)."""
    return table.groupby("method", sort=False)[column].mean()


# ------------------------------------------------------------------ datasets
# Minari's remote `mujoco` namespace has `medium`, `expert` and `simple` datasets per env, none
# of D4RL's mixtures. D4RL's medium-expert is the concatenation of its medium and expert data,
# so we rebuild it the same way from the two remote datasets. There is no replay-buffer
# dataset remotely (`simple` comes from a weaker policy, not from a replay buffer), so
# medium-replay has no remote counterpart and its rows are skipped with that reason.
REMOTE_SOURCES: dict[str, tuple[str, ...] | None] = {
    "medium": ("medium",),
    "expert": ("expert",),
    "medium-expert": ("medium", "expert"),
    "medium-replay": None,
}
REMOTE_VERSION = "v0"
MIXED_NAMESPACE = "ttlib-mujoco"  # local home of mixtures built from remote datasets


class DatasetUnavailable(LookupError):
    """A dataset of the table that the chosen namespace does not provide."""


def remote_ids(env: str, kind: str) -> list[str]:
    """The Minari ids behind D4RL's ``<env>-<kind>`` in the remote ``mujoco`` namespace."""
    if kind not in REMOTE_SOURCES:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {list(REMOTE_SOURCES)}")
    sources = REMOTE_SOURCES[kind]
    if sources is None:
        raise DatasetUnavailable(
            f"Minari's mujoco namespace has no {kind!r} dataset (only medium, expert and "
            "simple); use dataset_namespace 'ttlib' for this row"
        )
    return [f"mujoco/{env}/{s}-{REMOTE_VERSION}" for s in sources]


def interleave(lists: Sequence[Sequence]) -> list:
    """a0 b0 a1 b1 ...: a prefix of the result holds about equal parts of every list."""
    out = []
    for i in range(max(map(len, lists), default=0)):
        out.extend(seq[i] for seq in lists if i < len(seq))
    return out


def mix_datasets(source_ids: Sequence[str], mixed_id: str, download: bool = False) -> str:
    """Write a local Minari dataset holding the episodes of all ``source_ids``, interleaved.

    Interleaving (instead of concatenating) keeps the mixture balanced when a run reads only
    its first ``max_transitions`` transitions.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    if mixed_id in minari.list_local_datasets():
        return mixed_id
    sources = [load_minari(s, download=download) for s in source_ids]
    episodes = interleave([list(ds.iterate_episodes()) for ds in sources])
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=list(ep.observations),
            actions=list(ep.actions),
            rewards=list(ep.rewards),
            terminations=list(ep.terminations),
            truncations=list(ep.truncations),
            infos={},
        )
        for i, ep in enumerate(episodes)
    ]
    minari.create_dataset_from_buffers(
        mixed_id,
        buffers,
        env=None,
        observation_space=sources[0].observation_space,
        action_space=sources[0].action_space,
        algorithm_name="mixture of " + ", ".join(source_ids),
        author="ttlib",
        author_email="ttlib@users.noreply.github.com",
        code_permalink="ttlib/d4rl_table.py",
        description=f"Episodes of {', '.join(source_ids)}, interleaved (D4RL-style mixture).",
    )
    return mixed_id


def dataset_config(env: str, kind: str, params: dict, discretizer: str = "quantile") -> DataConfig:
    """The data a row of the table trains on, generating or downloading it if needed.

    ``dataset_namespace: ttlib`` uses our generated ``ttlib/<env>/<kind>-v0`` (its size is
    ``dataset_transitions``); ``mujoco`` downloads Minari's datasets (needs network) and reads
    their first ``dataset_transitions`` transitions.
    """
    namespace = params["dataset_namespace"]
    transitions = int(params["dataset_transitions"])
    if namespace == "ttlib":
        return DataConfig(local_dataset(env, kind, transitions, params["seed"]), discretizer)
    if namespace == "mujoco":
        ids = remote_ids(env, kind)
        if len(ids) == 1:
            load_minari(ids[0], download=True)
            did = ids[0]
        else:
            did = mix_datasets(ids, f"{MIXED_NAMESPACE}/{env}/{kind}-{REMOTE_VERSION}", True)
        return DataConfig(did, discretizer, max_transitions=transitions)
    raise ValueError(f"unknown dataset_namespace {namespace!r}; choose 'ttlib' or 'mujoco'")


def local_dataset(env: str, kind: str, transitions: int, seed: int = 0) -> str:
    """``ttlib/<env>/<kind>-v0``, generated with the committed behaviour policies if missing.

    The policies are looked up in the checkout's ``results/policies`` whatever the working
    directory (papermill runs notebooks inside ``notebooks/``).
    """
    import minari

    from ttlib.datasets_gen import DataConfig as GenConfig
    from ttlib.datasets_gen import dataset_id, make_dataset
    from ttlib.experiment import ensure_dataset

    did = dataset_id(env, kind)
    if did not in minari.list_local_datasets():
        policies = repo_root() / "results" / "policies"
        with quiet_c_output():
            make_dataset(env, kind, GenConfig(transitions, seed, policy_dir=str(policies)))
    return ensure_dataset(env, kind, transitions, seed)  # checks the size of an existing one


# ------------------------------------------------------------------ planning
# The original's offline-RL planner (config/offline.py): defaults and per-dataset overrides.
BASE_PLANNING = {"horizon": 15, "beam_width": 128, "cdf_act": 0.6, "k_act": None}
PLANNING_OVERRIDES: dict[tuple[str, str], dict] = {
    ("halfcheetah", "medium"): {"horizon": 5, "beam_width": 32},
    ("halfcheetah", "medium-replay"): {"horizon": 5, "beam_width": 32},
    ("halfcheetah", "medium-expert"): {"beam_width": 32},
    ("walker2d", "medium-expert"): {"horizon": 5},
    ("walker2d", "medium-replay"): {"horizon": 20, "beam_width": 32, "k_act": 40, "cdf_act": None},
}


def planner_config(env: str, kind: str, params: dict, seed: int = 0) -> PlannerConfig:
    """The paper's planner for this dataset, scaled to the preset.

    The preset's ``horizon`` / ``beam_width`` stand for the paper's defaults (15 / 128); a
    dataset's override is scaled by the same ratio, rounded up (so the paper preset gives the
    original's settings exactly, and e.g. HalfCheetah keeps its cheaper search at CPU scale).
    """
    paper = {**BASE_PLANNING, **PLANNING_OVERRIDES.get((env, kind), {})}

    def scaled(name: str) -> int:
        ratio = params[name] / BASE_PLANNING[name]
        return max(1, math.ceil(paper[name] * ratio - 1e-9))

    return PlannerConfig(
        mode="reward",
        horizon=scaled("horizon"),
        beam_width=scaled("beam_width"),
        cdf_act=paper["cdf_act"],
        k_act=paper["k_act"],
        seed=seed,
    )


# ------------------------------------------------------------------ training (cached)
def train_config(params: dict, seed: int) -> TrainConfig:
    steps = int(params["train_steps"])
    return TrainConfig(
        max_steps=steps,
        batch_size=int(params["batch_size"]),
        seed=seed,
        checkpoint_every=max(1, min(250, steps)),
        log_every=max(1, min(50, steps // 4)),
        **train_kwargs(params),
    )


def snapshot_steps(params: dict, fractions: Sequence[float] = (0.125, 0.25, 0.5)) -> list[int]:
    """Steps at which the weights are kept for the learning curve (the last step always is)."""
    steps = int(params["train_steps"])
    keep = {max(1, round(f * steps)) for f in fractions} if params.get("learning_curve") else set()
    return sorted(keep | {steps})


@dataclass
class TrainedTT:
    model: torch.nn.Module
    discretizer: object
    history: list[dict]
    folder: Path
    snapshots: dict[int, Path]  # step -> weights saved at that step of this run


def _snapshot_path(folder: Path, step: int) -> Path:
    return folder / f"weights_step{step:08d}.pt"


def _saved_step(ckpt: Path) -> int:
    return int(load_torch(ckpt).get("step", 0)) if ckpt.exists() else 0


def train_tt(
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    model_kw: dict,
    snapshots: Iterable[int] = (),
    progress: bool = False,
) -> TrainedTT:
    """Train (or load, or resume) one TT model, keeping its weights at ``snapshots`` steps.

    The run is cut into stages that end at the snapshot steps; training resumes bit-for-bit
    from a checkpoint, so the final model is the same as one uninterrupted run (and the same
    cache entry as ``train_cached``). Snapshots of steps an earlier run already passed without
    keeping them are simply missing.
    """
    episodes = load_episodes(data_cfg)
    dataset = SequenceDataset(episodes, data_cfg)
    model_cfg = gpt_config_for(dataset, **model_kw)
    folder = model_folder(data_cfg, episodes, model_cfg, train_cfg)
    ckpt = folder / "checkpoint.pt"
    done = _saved_step(ckpt)
    trained_now = False
    wanted = sorted({s for s in snapshots if 0 < s <= train_cfg.max_steps})
    for stage_end in [*wanted, train_cfg.max_steps]:
        if stage_end <= done:
            continue
        log.info("train %s to step %d", folder.name, stage_end)
        train(
            dataset, model_cfg, train_cfg, out_dir=folder, progress=progress, stop_at_step=stage_end
        )
        done, trained_now = stage_end, True
        if stage_end in wanted:
            state = load_torch(ckpt)
            light = {
                k: state[k]
                for k in (
                    "format",
                    "model",
                    "gpt_config",
                    "data_config",
                    "train_config",
                    "discretizer",
                    "step",
                )
            }
            save_torch(light, _snapshot_path(folder, stage_end))
    model, discretizer, saved = load_checkpoint(ckpt, device="cpu")
    note_model(folder, trained_now, saved)
    kept = {s: _snapshot_path(folder, s) for s in wanted if _snapshot_path(folder, s).exists()}
    kept[train_cfg.max_steps] = ckpt
    return TrainedTT(model, discretizer, list(saved.get("history", [])), folder, kept)


@dataclass
class BaselineSpec:
    method: str  # BC | IQL
    steps: int
    seed: int


def iql_reward_scale(episodes: Sequence[Episode]) -> float:
    """IQL's locomotion reward scaling: 1000 / (best - worst episode return) of the data."""
    returns = np.array([float(ep.rewards.sum()) for ep in episodes])
    spread = float(returns.max() - returns.min())
    return 1000.0 / spread if spread > 0 else 1.0


def baseline_cached(
    spec: BaselineSpec, data_cfg: DataConfig, episodes: Sequence[Episode], progress: bool = False
):
    """A BC or IQL policy trained on ``episodes`` once per config; later calls load it."""
    from ttlib.baselines import BCConfig, BehaviourCloning, train_bc
    from ttlib.iql import IQL, IQLConfig, train_iql

    if spec.method == "BC":
        cfg = BCConfig(steps=spec.steps, seed=spec.seed)
    elif spec.method == "IQL":
        cfg = IQLConfig(steps=spec.steps, seed=spec.seed, reward_scale=iql_reward_scale(episodes))
    else:
        raise ValueError(f"unknown baseline {spec.method!r}; choose one of {BASELINES}")
    key = config_key(
        {
            "dataset_id": data_cfg.dataset_id,
            "max_transitions": data_cfg.max_transitions,
            "data": data_fingerprint(episodes),
            spec.method: asdict(cfg),
        }
    )
    path = (
        cache_dir("d4rl", "baselines")
        / f"{data_cfg.dataset_id.replace('/', '_')}-{spec.method}-{key}.pt"
    )
    timing = path.with_suffix(".json")  # the training wall time, for the run record
    if path.exists():
        seconds = json.loads(timing.read_text())["train_seconds"] if timing.exists() else None
        note_model(path, False, {"step": spec.steps, "train_seconds": seconds})
        return (BehaviourCloning if spec.method == "BC" else IQL).load(path)
    log.info("train %s on %s (%d steps)", spec.method, data_cfg.dataset_id, spec.steps)
    t0 = time.perf_counter()
    if spec.method == "BC":
        model = train_bc(list(episodes), cfg, progress=progress)
    else:
        model, _ = train_iql(list(episodes), cfg, progress=progress)
    seconds = round(time.perf_counter() - t0, 3)
    save_json({"train_seconds": seconds}, timing)
    model.save(path)
    note_model(path, True, {"step": spec.steps, "train_seconds": seconds})
    return model


# ------------------------------------------------------------------ evaluation (cached)
def episode_scores(
    key_obj: dict,
    make_agent: Callable[[int], object],
    env: str,
    n_episodes: int,
    max_steps: int,
    first_seed: int,
) -> list[dict]:
    """Return, length and normalised score of episodes ``first_seed + i``, one cache file each.

    ``make_agent(seed)`` builds a fresh agent for one episode (a planner draws its samples from
    that seed), so every episode is a unit that is computed once and survives a kill.
    """
    folder = cache_dir("d4rl", "episodes", config_key(key_obj))
    if not (folder / "key.json").exists():
        save_json(key_obj, folder / "key.json")
    rows = []
    for i in range(n_episodes):
        seed = first_seed + i
        path = folder / f"seed{seed}.json"
        if not path.exists():
            t0 = time.perf_counter()
            with quiet_c_output():
                res = evaluate(
                    make_agent(seed), env, 1, max_steps=max_steps, seed=seed, progress=False
                )
            save_json(
                {
                    "seed": seed,
                    "return": float(res.returns[0]),
                    "length": int(res.lengths[0]),
                    "score": float(res.scores[0]),
                    "seconds": round(time.perf_counter() - t0, 1),
                },
                path,
            )
            log.info(
                "episode %s/%d: score %.1f, %d steps, %.0f s",
                folder.name,
                seed,
                res.scores[0],
                res.lengths[0],
                time.perf_counter() - t0,
            )
        rec = json.loads(path.read_text())
        # seconds: the wall time the episode took when it was computed (a cached rerun is fast,
        # so the table's compute is the sum of these, not the notebook's own wall time)
        rows.append({k: rec.get(k) for k in ("seed", "return", "length", "score", "seconds")})
    return rows


def evaluate_tt(
    trained: TrainedTT,
    env: str,
    kind: str,
    params: dict,
    step: int,
    first_seed: int,
    n_episodes: int | None = None,
) -> list[dict]:
    """Planner-in-the-loop episodes of the weights saved at ``step`` of a trained model."""
    if step == max(trained.snapshots):
        model, discretizer = trained.model, trained.discretizer
    else:
        model, discretizer, _ = load_checkpoint(trained.snapshots[step], device="cpu")
    planner = planner_config(env, kind, params)
    key = {
        "model": trained.folder.name,
        "step": step,
        "planner": asdict(replace(planner, seed=0)),
        "env": env,
        "max_steps": int(params["max_episode_steps"]),
    }
    return episode_scores(
        key,
        lambda seed: TTPlanner(model, discretizer, replace(planner, seed=seed)),
        env,
        int(params["episodes"] if n_episodes is None else n_episodes),
        int(params["max_episode_steps"]),
        first_seed,
    )


def evaluate_policy(
    policy, name: str, env: str, params: dict, first_seed: int, policy_key: dict
) -> list[dict]:
    key = {"policy": name, **policy_key, "env": env, "max_steps": int(params["max_episode_steps"])}
    return episode_scores(
        key,
        lambda seed: policy,
        env,
        int(params["episodes"]),
        int(params["max_episode_steps"]),
        first_seed,
    )


# ------------------------------------------------------------------ the table
@dataclass
class TableRun:
    episodes: pd.DataFrame  # one row per evaluation episode
    histories: pd.DataFrame  # training losses of every TT model, long format
    skipped: list[str]  # rows the namespace cannot provide, with the reason


def history_frame(history: Sequence[dict], **labels) -> pd.DataFrame:
    """A train history as long rows: tokens, token kind (state/action/reward/value), loss."""
    rows = []
    for rec in history:
        for kind in ("state", "action", "reward", "value"):
            value = rec.get(f"loss_{kind}")
            if value is not None and np.isfinite(value):
                rows.append(
                    {
                        **labels,
                        "step": rec["step"],
                        "tokens": rec["tokens"],
                        "token": kind,
                        "loss": float(value),
                    }
                )
    return pd.DataFrame(rows)


def run_table(
    params: dict,
    progress: bool = False,
    methods: Sequence[str] | None = None,
    evaluate_agents: bool = True,
) -> TableRun:
    """Train (or load) and evaluate every method on every (env, kind) of ``params``.

    With ``evaluate_agents=False`` only the models are trained (and cached): training does
    not depend on the planner, so it can run ahead of the planning episodes.
    """
    methods = list(methods or [*(tt_method(d) for d in params["discretizers"]), *BASELINES])
    episodes, histories, skipped = [], [], []
    for s in range(int(params["seeds"])):
        seed = int(params["seed"]) + s
        first_seed = EVAL_SEED + 1000 * s
        for env in params["envs"]:
            for kind in params["kinds"]:
                try:
                    base_cfg = dataset_config(env, kind, params)
                except DatasetUnavailable as err:
                    if s == 0:
                        skipped.append(f"{env} {kind}: {err}")
                    continue
                labels = {
                    "env": env,
                    "kind": kind,
                    "dataset_id": base_cfg.dataset_id,
                    "train_seed": seed,
                }
                data = load_episodes(base_cfg)
                for method in methods:
                    if method.startswith("TT"):
                        disc = method[len("TT (") : -1]
                        trained = train_tt(
                            replace(base_cfg, discretizer=disc),
                            train_config(params, seed),
                            model_kwargs(params),
                            snapshot_steps(params),
                            progress,
                        )
                        histories.append(history_frame(trained.history, **labels, method=method))
                        if not evaluate_agents:
                            continue
                        rows = evaluate_tt(
                            trained, env, kind, params, int(params["train_steps"]), first_seed
                        )
                    else:
                        spec = BaselineSpec(method, int(params["baseline_steps"]), seed)
                        policy = baseline_cached(spec, base_cfg, data, progress)
                        if not evaluate_agents:
                            continue
                        policy_key = {
                            **asdict(spec),
                            "dataset_id": base_cfg.dataset_id,
                            "data": data_fingerprint(data),
                        }
                        rows = evaluate_policy(policy, method, env, params, first_seed, policy_key)
                    episodes += [
                        {**labels, "method": method, "episode": i, **r} for i, r in enumerate(rows)
                    ]
    hist = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    return TableRun(pd.DataFrame(episodes), hist, skipped)


def summarise(episodes: pd.DataFrame) -> pd.DataFrame:
    """Mean ± standard error (std/√n, all episodes of all seeds) per env, kind and method."""
    rows = []
    for (env, kind, method), g in episodes.groupby(["env", "kind", "method"], sort=False):
        m, se = mean_se(g["score"].to_numpy())
        rows.append(
            {
                "env": env,
                "kind": kind,
                "method": method,
                "score": m,
                "se": se,
                "episodes": len(g),
                "seeds": g["train_seed"].nunique(),
            }
        )
    return pd.DataFrame(rows)


def compare_with_paper(summary: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our scores next to the published ones, one row per (env, kind, method) we measured."""
    paper = paper_table() if paper is None else paper
    both = summary.merge(
        paper.rename(columns={"score": "paper_score", "se": "paper_se", "source": "paper_source"}),
        on=["env", "kind", "method"],
        how="left",
    )
    return both


def _fmt(m: float, se: float, digits: int = 1) -> str:
    if not np.isfinite(m):
        return ""
    return f"{m:.{digits}f}" if not np.isfinite(se) else f"{m:.{digits}f} ± {se:.{digits}f}"


def display_table(summary: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """The table as the paper prints it: a row per dataset, ours then the paper's columns.

    The Average row averages each column over the datasets measured here, the paper's
    columns over the same datasets (so it equals the paper's own average only for all nine).
    """
    paper = paper_table() if paper is None else paper
    methods = [m for m in METHODS if m in set(summary["method"])]
    keys = list(dict.fromkeys(zip(summary["env"], summary["kind"], strict=True)))
    ours = summary.set_index(["env", "kind", "method"])
    pub = paper.set_index(["env", "kind", "method"])
    rows = []
    for env, kind in keys:
        row = {"Dataset": KIND_LABELS.get(kind, kind), "Env": ENV_LABELS.get(env, env)}
        for m in methods:
            r = ours.loc[(env, kind, m)] if (env, kind, m) in ours.index else None
            row[m] = _fmt(r["score"], r["se"]) if r is not None else ""
        for m in METHODS:
            r = pub.loc[(env, kind, m)] if (env, kind, m) in pub.index else None
            row[paper_column(m)] = _fmt(r["score"], r["se"]) if r is not None else ""
        rows.append(row)
    avg = {"Dataset": "Average", "Env": ""}
    for m in methods:
        avg[m] = _fmt(summary[summary["method"] == m]["score"].mean(), np.nan)
    sub = paper[[(e, k) in set(keys) for e, k in zip(paper["env"], paper["kind"], strict=True)]]
    for m in METHODS:
        avg[paper_column(m)] = _fmt(sub[sub["method"] == m]["score"].mean(), np.nan)
    rows.append(avg)
    return pd.DataFrame(rows)


def paper_column(method: str) -> str:
    return f"paper: {method}" + (" †" if method == "TT (uniform)" else "")


# ------------------------------------------------------------------ what agrees
def _pairwise(scores: dict[str, float]) -> dict[tuple[str, str], bool]:
    names = list(scores)
    return {(a, b): scores[a] > scores[b] for i, a in enumerate(names) for b in names[i + 1 :]}


def agreement(summary: pd.DataFrame, paper: pd.DataFrame | None = None) -> list[str]:
    """Sentences, computed from the numbers, on where our ordering matches the paper's.

    Two comparisons: methods ranked by their average over the datasets measured here (the
    paper's averages over the same datasets), and each pair of methods dataset by dataset.
    """
    paper = paper_table() if paper is None else paper
    both = compare_with_paper(summary, paper).dropna(subset=["score", "paper_score"])
    if both.empty:
        return ["No dataset here has a published score to compare with."]
    methods = [m for m in METHODS if m in set(both["method"])]
    ours_avg = both.groupby("method")["score"].mean().reindex(methods)
    paper_avg = both.groupby("method")["paper_score"].mean().reindex(methods)
    n_sets = both.groupby(["env", "kind"]).ngroups

    def order(avg: pd.Series) -> str:
        return " > ".join(f"{m} ({avg[m]:.1f})" for m in avg.sort_values(ascending=False).index)

    out = [
        f"Averaged over the {n_sets} dataset(s) measured, our order is {order(ours_avg)}; "
        f"the paper's over the same dataset(s) is {order(paper_avg)}."
    ]
    if len(methods) > 1:
        ours_p, paper_p = _pairwise(ours_avg.to_dict()), _pairwise(paper_avg.to_dict())
        same = sum(ours_p[k] == paper_p[k] for k in ours_p)
        out.append(
            f"Of the {len(ours_p)} pairwise orderings of the averages, {same} agree with the paper."
        )
    for a, b in (
        ("TT (quantile)", "TT (uniform)"),
        ("TT (quantile)", "BC"),
        ("TT (quantile)", "IQL"),
        ("TT (uniform)", "BC"),
    ):
        if a not in methods or b not in methods:
            continue
        wide = both.pivot_table(
            index=["env", "kind"], columns="method", values=["score", "paper_score"]
        )
        wide = wide.dropna(subset=[("score", a), ("score", b)])
        ours_win = wide[("score", a)] > wide[("score", b)]
        paper_win = wide[("paper_score", a)] > wide[("paper_score", b)]
        agree = int((ours_win == paper_win).sum())
        out.append(
            f"{a} beats {b} on {int(ours_win.sum())} of {len(wide)} dataset(s) here and on "
            f"{int(paper_win.sum())} of them in the paper: the orderings agree on {agree} of "
            f"{len(wide)}."
        )
    return out


# ------------------------------------------------------------------ learning curve
def describe_losses(histories: pd.DataFrame, n_bins: int | None = None) -> list[str]:
    """What the training losses show, computed: each token type's final cross-entropy
    (mean over the table's TT models) against a uniform guess over ``n_bins`` bins (default:
    the data config's, as the table trains with), and which token type ends highest and which
    fell the most from its first logged value."""
    if n_bins is None:
        n_bins = DataConfig.__dataclass_fields__["n_bins"].default
    if histories.empty:
        return ["no training history was logged"]
    group = ["env", "kind", "method", "token"]
    ordered = histories.sort_values("tokens")
    first = ordered.groupby(group)["loss"].first().groupby("token").mean()
    last = ordered.groupby(group)["loss"].last().groupby("token").mean()
    order = [t for t in ("state", "action", "reward", "value") if t in last.index]
    chance = f" (a uniform guess over {n_bins} bins: {math.log(n_bins):.2f})" if n_bins else ""
    parts = ", ".join(f"{t} {last[t]:.2f}" for t in order)
    n_models = ordered.groupby(["env", "kind", "method"]).ngroups
    drop = (first - last)[order]
    return [
        f"final cross-entropy in nats, mean over {n_models} TT model(s): {parts}{chance}",
        f"highest at the end: {last[order].idxmax()} tokens; largest fall from the first "
        f"logged value: {drop.idxmax()} tokens ({first[drop.idxmax()]:.2f} -> "
        f"{last[drop.idxmax()]:.2f})",
    ]


def describe_curve(curve: pd.DataFrame) -> list[str]:
    """Per discretizer: the score at the last two snapshots of the learning curve and whether
    the last step up or down is larger than its standard error (else: flat within noise)."""
    out = []
    for method, g in curve.groupby("method", sort=False):
        stats = [(t, *mean_se(x["score"].to_numpy())) for t, x in g.groupby("tokens")]
        if len(stats) < 2:
            out.append(f"{method}: only one point")
            continue
        (t0, m0, s0), (t1, m1, s1) = stats[-2], stats[-1]
        se = math.hypot(s0, s1)
        if se > 0 and abs(m1 - m0) <= se:
            verdict = "flat within one standard error"
        else:
            verdict = "still rising" if m1 > m0 else "falling"
        out.append(
            f"{method}: {m0:.1f} ± {s0:.1f} at {t0 / 1e6:.1f}M tokens, {m1:.1f} ± {s1:.1f} at "
            f"{t1 / 1e6:.1f}M: {verdict} over the last doubling"
        )
    return out


def learning_curve(env: str, kind: str, params: dict, progress: bool = False) -> pd.DataFrame:
    """Planning score against training tokens, both discretizers, one dataset.

    The points are the weights kept along each table model's own run (:func:`snapshot_steps`),
    so the curve costs evaluation only; the earlier points are mid-schedule (learning rate
    not yet decayed), which is what a run stopped early would give. Each point has
    ``curve_episodes`` episodes, the first ones of the table's (the last point shares them).
    """
    rows = []
    seed = int(params["seed"])
    for disc in params["discretizers"]:
        data_cfg = dataset_config(env, kind, params, disc)
        trained = train_tt(
            data_cfg,
            train_config(params, seed),
            model_kwargs(params),
            snapshot_steps(params),
            progress,
        )
        tokens_per_step = int(params["batch_size"]) * trained.model.config.block_size
        for step in sorted(trained.snapshots):
            n = int(params["curve_episodes"])
            for i, r in enumerate(evaluate_tt(trained, env, kind, params, step, EVAL_SEED, n)):
                rows.append(
                    {
                        "env": env,
                        "kind": kind,
                        "method": tt_method(disc),
                        "step": step,
                        "tokens": step * tokens_per_step,
                        "episode": i,
                        **r,
                    }
                )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ figures
def plot_table(summary: pd.DataFrame, paper: pd.DataFrame | None = None):
    """Bars: our mean score ± s.e. per dataset and method; black ticks: the paper's numbers."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    paper = paper_table() if paper is None else paper
    envs = list(dict.fromkeys(summary["env"]))
    kinds = [k for k in KINDS if k in set(summary["kind"])] + [
        k for k in dict.fromkeys(summary["kind"]) if k not in KINDS
    ]
    methods = [m for m in METHODS if m in set(summary["method"])]
    fig, axes = plt.subplots(
        1, len(envs), figsize=(4.2 * len(envs), 3.6), squeeze=False, sharey=True
    )
    pub = paper.set_index(["env", "kind", "method"])["score"]
    for ax, env in zip(axes[0], envs, strict=True):
        part = summary[summary["env"] == env]
        sns.barplot(
            data=part,
            x="kind",
            y="score",
            hue="method",
            order=kinds,
            hue_order=methods,
            errorbar=None,
            ax=ax,
        )
        ours = part.set_index(["kind", "method"])
        for container, method in zip(ax.containers, methods, strict=False):
            for patch, kind in zip(container.patches, kinds, strict=False):
                x = patch.get_x() + patch.get_width() / 2
                if (kind, method) in ours.index:
                    r = ours.loc[(kind, method)]
                    ax.errorbar(x, r["score"], yerr=r["se"], color="black", lw=1, capsize=2)
                if (env, kind, method) in pub.index:
                    ax.plot(
                        x,
                        pub[(env, kind, method)],
                        marker="_",
                        ms=12,
                        mew=2,
                        color="black",
                        ls="none",
                    )
        ax.set(title=ENV_LABELS.get(env, env), xlabel="", ylabel="normalised score")
        ax.legend_.remove()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], marker="_", ms=12, mew=2, color="black", ls="none"))
    labels.append("paper")
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=len(labels),
        frameon=False,
        bbox_to_anchor=(0.5, 1.08),
    )
    fig.tight_layout()
    return fig


def plot_losses(histories: pd.DataFrame):
    """Training cross-entropy per token type against tokens, one panel per dataset."""
    import seaborn as sns

    from ttlib.plots import KIND_COLOURS

    df = histories.assign(dataset=histories["env"] + " " + histories["kind"])
    g = sns.relplot(
        data=df,
        x="tokens",
        y="loss",
        hue="token",
        palette=KIND_COLOURS,
        style="method",
        col="dataset",
        col_wrap=min(3, df["dataset"].nunique()),
        kind="line",
        height=2.8,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    g.set_axis_labels("training tokens", "cross-entropy (nats)")
    g.set_titles("{col_name}")
    return g.figure


def plot_learning_curve(curve: pd.DataFrame):
    """Mean planning score ± s.e. against training tokens, one line per discretizer."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for method, g in curve.groupby("method", sort=False):
        stats = [(t, *mean_se(x["score"].to_numpy())) for t, x in g.groupby("tokens")]
        t, m, se = map(np.array, zip(*stats, strict=True))
        ax.errorbar(t, m, yerr=se, marker="o", capsize=3, label=method)
    env, kind = curve["env"].iloc[0], curve["kind"].iloc[0]
    ax.set(
        xscale="log",
        xlabel="training tokens",
        ylabel="normalised score",
        title=f"{ENV_LABELS.get(env, env)} {kind}",
    )
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ command line
def main(argv: Sequence[str] | None = None) -> None:
    """Fill the caches of the table (and the learning curve) without running the notebook."""
    from ttlib.experiment import start

    ap = argparse.ArgumentParser(prog="python -m ttlib.d4rl_table", description=main.__doc__)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="ENV/KIND",
        help="datasets to do, e.g. hopper/medium (default: the preset's, curve dataset first)",
    )
    ap.add_argument("--curve", action="store_true", help="also the learning curve")
    ap.add_argument(
        "--train-only",
        action="store_true",
        help="train and cache the models (TT, BC, IQL) without the evaluation episodes",
    )
    ap.add_argument(
        "--methods",
        nargs="*",
        default=None,
        metavar="NAME",
        help="only these methods: uniform, quantile (the TT discretizers), BC, IQL; lets two "
        "processes share one dataset (default: all of the preset's)",
    )
    ap.add_argument("--log", default=None, help="append progress to this file")
    args = ap.parse_args(argv)
    methods = None if args.methods is None else [method_name(m) for m in args.methods]
    logging.basicConfig(
        level=logging.INFO, filename=args.log, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    torch.set_num_threads(1)
    params = start("d4rl", {"preset": args.preset}).params  # same data dirs as the notebook
    curve = (params["curve_env"], params["curve_kind"])
    pairs = (
        [tuple(x.split("/")) for x in args.only]
        if args.only
        else [(e, k) for e in params["envs"] for k in params["kinds"]]
    )
    pairs.sort(key=lambda pair: pair != curve)
    for env, kind in pairs:
        run = run_table(
            {**params, "envs": [env], "kinds": [kind]},
            methods=methods,
            evaluate_agents=not args.train_only,
        )
        if args.train_only:
            log.info("trained %s %s", env, kind)
            continue
        if not run.episodes.empty:
            log.info("done %s %s:\n%s", env, kind, summarise(run.episodes).round(1))
        if args.curve and params["learning_curve"] and (env, kind) == curve:
            learning_curve(env, kind, params)
            log.info("learning curve of %s %s done", env, kind)


if __name__ == "__main__":
    main()
