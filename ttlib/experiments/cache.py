"""One cache for everything expensive an experiment makes: trained models and evaluation episodes.

``cached(kind, identity, fit, load)`` keeps each artefact under
``cache/<kind>/<name>-<hash of identity><suffix>``. The identity holds everything that made it
(configs, and for anything trained on data, the data's fingerprint), so changing a knob or
regenerating a dataset makes a new entry, while a rerun (also after a kill) loads what exists.
Trained models and evaluation episodes are listed in the run's ``run.json`` with the wall time
they took and the commit of the code that made them (kept beside each entry when it is made),
so a rerun from the cache still says what its results cost and which code they come from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ttlib.data import DataConfig, SequenceDataset, data_fingerprint, load_episodes
from ttlib.experiments.presets import repo_root, train_kwargs
from ttlib.io import load_torch, save_json, save_torch
from ttlib.train import TrainConfig, gpt_config_for, load_checkpoint, train

log = logging.getLogger("ttlib.cache")


def _git(*args: str) -> str | None:
    """``git <args>`` in the checkout (None where git or the checkout is missing)."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def code_version() -> dict:
    """The commit of the code this process runs, and whether ttlib had uncommitted edits.

    Asked once per process (a notebook's kernel or a fill worker, which pin it as they start:
    :func:`ttlib.experiments.runs.start`): the code was imported then, so a commit made while
    the process runs does not change what it runs.
    """
    status = _git("status", "--porcelain", "--", "ttlib")
    return {
        "git_sha": _git("rev-parse", "HEAD") or None,
        "ttlib_modified": None if status is None else bool(status),
    }


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def cache_dir(*parts: str) -> Path:
    """Trained models and other expensive intermediates ($TTLIB_CACHE or <repo>/cache)."""
    base = Path(os.environ.get("TTLIB_CACHE", repo_root() / "cache"))
    d = base.joinpath(*parts)
    d.mkdir(parents=True, exist_ok=True)
    return d


def planner_identity(planner) -> dict:
    """A :class:`ttlib.search.PlannerConfig` as a cache identity.

    ``k_obs`` (observations sampled from the top k) was removed at its only used value, 1: it
    stays in the identity so that episodes cached before its removal are still found.
    """
    return asdict(planner) | {"k_obs": 1}


def config_key(obj: Any) -> str:
    """A short stable hash of a JSON-able config, to key caches by what produced them."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:10]


# Models and evaluation episodes made or loaded since the run started (``Run.finish`` writes
# them into run.json).
MODELS_USED: list[dict] = []
EPISODES_USED: list[dict] = []


def _read_json(path: Path) -> dict:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def note_training(
    path: Path, started: float, train_seconds: float | None, code: dict, replace: bool
) -> None:
    """Keep beside the model at ``path`` (in ``<path>.json``, what :func:`note_model` reads)
    its training seconds and the commit and start time of the code that trained it.
    ``replace=False`` keeps what the training itself already wrote there."""
    timing = path.with_suffix(".json")
    new = {"train_seconds": train_seconds, "git_sha": code["git_sha"]}
    new |= {"ttlib_modified": code["ttlib_modified"], "trained_utc": _utc(started)}
    old = _read_json(timing)
    save_json(old | new if replace else new | old, timing)


def note_model(path: Path, trained_now: bool, steps: int) -> None:
    """Record a model once per run (the D4RL table and its learning curve share one); its
    training time and commit are read from ``<path>.json`` beside it."""
    info = _read_json(path.with_suffix(".json"))
    entry = {
        "model": path.name,
        "trained_in_this_run": trained_now,
        "steps": int(steps),
        "train_seconds": info.get("train_seconds"),  # None: trained before times were kept
        "git_sha": info.get("git_sha"),  # None: trained before commits were kept
        "ttlib_modified": info.get("ttlib_modified"),
        "trained_utc": info.get("trained_utc"),
    }
    for i, seen in enumerate(MODELS_USED):
        if seen["model"] == entry["model"]:
            entry["trained_in_this_run"] |= seen["trained_in_this_run"]
            MODELS_USED[i] = entry
            return
    MODELS_USED.append(entry)


def model_entry(name: str) -> Path | None:
    """The cached model called ``name`` (:func:`note_model`'s ``model``: a folder or a file),
    one or two levels below the cache root (``models/<name>``, ``d4rl/baselines/<name>``);
    None if it is not there. Its training record is ``entry.with_suffix(".json")``."""
    for pattern in (f"*/{name}", f"*/*/{name}"):
        found = sorted(cache_dir().glob(pattern))
        if found:
            return found[0]
    return None


def provenance_file(path: Path) -> Path:
    """Where the provenance of the evaluation episodes cached at ``path`` is kept: beside the
    entry, ``<stem>.provenance.json`` (an entry may itself be a .json file)."""
    return path.with_name(f"{path.stem}.provenance.json")


def _note_episodes(kind: str, path: Path, computed_now: bool, n_episodes: int) -> None:
    """Record a cached entry of ``n_episodes`` evaluation episodes once per run, with the
    commit, start time and wall/CPU seconds of the code that computed them."""
    info = _read_json(provenance_file(path))
    if "wall_seconds" not in info and path.suffix == ".json":
        # D4RL episodes cached before provenance was kept hold their own wall time
        info["wall_seconds"] = _read_json(path).get("seconds")
    entry = {
        "kind": kind,
        "entry": path.name,
        "episodes": int(n_episodes),
        "computed_in_this_run": computed_now,
        "wall_seconds": info.get("wall_seconds"),  # None: not recorded
        "cpu_seconds": info.get("cpu_seconds"),
        "git_sha": info.get("git_sha"),  # None: computed before commits were kept
        "ttlib_modified": info.get("ttlib_modified"),
        "started_utc": info.get("started_utc"),
    }
    for i, seen in enumerate(EPISODES_USED):
        if (seen["kind"], seen["entry"]) == (kind, entry["entry"]):
            entry["computed_in_this_run"] |= seen["computed_in_this_run"]
            EPISODES_USED[i] = entry
            return
    EPISODES_USED.append(entry)


def cached(
    kind: str,
    identity: dict | None,
    fit: Callable[[Path], Any],
    load: Callable[[Path], Any],
    *,
    name: str = "",
    suffix: str = "",
    steps: int | None = None,
    episodes: int | None = None,
    shared: dict | None = None,
) -> Any:
    """The artefact of ``kind`` that ``identity`` describes: loaded if kept, else made and kept.

    ``fit(path)`` makes the artefact, writes it at ``path`` and returns it; ``load(path)`` reads
    it back, or returns None where a killed ``fit`` left it unfinished (``fit`` then resumes).
    ``identity=None`` means ``kind`` and ``name`` already say which entry it is. ``steps`` marks
    a trained model: its training time and the commit of the code that trained it are kept
    beside it (``<entry>.json``) and it is listed in run.json. ``episodes`` marks an entry of
    that many evaluation episodes: the commit, start time and wall and CPU seconds of the code
    that computed them are kept beside it (:func:`provenance_file`) and it is listed in
    run.json. Neither changes where an entry is kept. ``shared`` replaces what ``fit``'s own
    timing would record, for an entry made by work done outside ``fit`` together with other
    entries (episodes planned in one batch: the batch's start and its share of the time).
    """
    key = "" if identity is None else config_key(identity)
    stem = "-".join(part for part in (name, key) if part)
    path = cache_dir(*kind.split("/")) / f"{stem}{suffix}"
    artefact = load(path) if path.exists() else None
    made_now = artefact is None
    if made_now:
        code = code_version()
        started, t0, c0 = time.time(), time.perf_counter(), time.process_time()
        # episodes are written under a hidden name and moved into place after their
        # provenance, so that a kill between the two writes never leaves an entry without one
        # (a cancelled Ray task is interrupted at any line)
        target = path if episodes is None else path.with_name(f".{path.name}.partial")
        artefact = fit(target)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if steps is not None:
            # a fit may know its time better (a resumed training's time covers every session;
            # its commit and start are then those of the session that finished it)
            note_training(path, started, round(wall, 3), code, replace=False)
        if episodes is not None:
            info = {**code, "started_utc": _utc(started), "wall_seconds": round(wall, 3)}
            info["cpu_seconds"] = round(cpu, 3)  # this process's CPU time, all its threads
            save_json(info | (shared or {}), provenance_file(path))
            os.replace(target, path)
            artefact = load(path)
    if steps is not None:
        note_model(path, made_now, steps)
    if episodes is not None:
        _note_episodes(kind, path, made_now, episodes)
    return artefact


def cached_model(kind: str, data_cfg: DataConfig, identity: dict, train, load, steps: int):
    """A model with ``save(path)`` that ``train()`` makes once per identity; ``load(path)``
    reads it back. Its entry is named after the dataset."""

    def fit(path: Path):
        model = train()
        model.save(path)
        return model

    name = data_cfg.dataset_id.replace("/", "_")
    return cached(kind, identity, fit, load, name=name, suffix=".pt", steps=steps)


# ------------------------------------------------------------------ the Trajectory Transformer
def train_config(params: dict, checkpoint_every: int, seed: int | None = None) -> TrainConfig:
    """The TT training settings of a notebook's params (``seed`` overrides ``params["seed"]``)."""
    steps = int(params["train_steps"])
    return TrainConfig(
        max_steps=steps,
        batch_size=int(params["batch_size"]),
        seed=params["seed"] if seed is None else seed,
        checkpoint_every=max(1, min(checkpoint_every, steps)),
        log_every=max(1, min(50, steps // 4)),
        **train_kwargs(params),
    )


@dataclass
class TrainedTT:
    model: Any  # TrajectoryGPT, in eval mode
    dataset: SequenceDataset
    history: list[dict]  # the training log (losses per token kind, tokens seen)
    folder: Path  # the cache entry
    snapshots: dict[int, Path]  # step -> weights kept at that step (the last: the checkpoint)

    @property
    def discretizer(self):
        return self.dataset.discretizer


def _snapshot(folder: Path, step: int) -> Path:
    return folder / f"weights_step{step:08d}.pt"


# What a snapshot keeps of a checkpoint: enough to plan with, not to resume training.
_SNAPSHOT_KEYS = ("format", "model", "gpt_config", "data_config", "train_config")
_SNAPSHOT_KEYS += ("discretizer", "step")


def train_tt(
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    model_kw: dict | None = None,
    snapshots: Iterable[int] = (),
    progress: bool = False,
    device: str | None = None,
    eval_episodes: list | None = None,
) -> TrainedTT:
    """Train (or load, or resume) a TT model, keeping its weights at ``snapshots`` steps.

    Keyed by the data, model and training configs and the data's fingerprint. Training runs in
    stages that end at the snapshot steps and resumes bit-for-bit from a checkpoint, so the
    model is the same as one uninterrupted run; snapshots of steps an earlier run already
    passed without keeping them are missing. ``device`` is where the model is loaded
    (default: the training device). ``eval_episodes`` (held-out): the history also logs the
    cross-entropy on them (not part of the key: it does not change the weights).
    """
    episodes = load_episodes(data_cfg)
    dataset = SequenceDataset(episodes, data_cfg)
    model_cfg = gpt_config_for(dataset, **(model_kw or {}))
    identity = {
        "data": data_cfg.to_dict(),
        "fingerprint": data_fingerprint(episodes),
        "model": model_cfg.to_dict(),
        "train": train_cfg.to_dict(),
    }
    held_out = None
    if eval_episodes:
        held_out = SequenceDataset(eval_episodes, data_cfg, discretizer=dataset.discretizer)
    wanted = sorted({s for s in snapshots if 0 < s <= train_cfg.max_steps})
    device = device or train_cfg.device

    def load(folder: Path):
        ckpt = folder / "checkpoint.pt"
        if not ckpt.exists() or int(load_torch(ckpt).get("step", 0)) < train_cfg.max_steps:
            return None  # unfinished: fit resumes it
        model, _, saved = load_checkpoint(ckpt, device=device)
        return model, list(saved.get("history", []))

    def fit(folder: Path):
        save_json(identity, folder / "config.json")
        ckpt = folder / "checkpoint.pt"
        done = int(load_torch(ckpt).get("step", 0)) if ckpt.exists() else 0
        for stage_end in [*wanted, train_cfg.max_steps]:
            if stage_end <= done:
                continue
            log.info("train %s to step %d", folder.name, stage_end)
            train(dataset, model_cfg, train_cfg, folder, progress, stage_end, eval_dataset=held_out)
            done = stage_end
            if stage_end in wanted:
                state = load_torch(ckpt)
                save_torch({k: state[k] for k in _SNAPSHOT_KEYS}, _snapshot(folder, stage_end))
        # the checkpoint's time covers every stage and every resumed session
        saved = load_torch(ckpt)
        save_json({"train_seconds": saved.get("train_seconds")}, folder.with_suffix(".json"))
        return load(folder)

    name = data_cfg.dataset_id.replace("/", "_")
    model, history = cached("models", identity, fit, load, name=name, steps=train_cfg.max_steps)
    folder = cache_dir("models") / f"{name}-{config_key(identity)}"
    kept = {s: _snapshot(folder, s) for s in wanted if _snapshot(folder, s).exists()}
    kept[train_cfg.max_steps] = folder / "checkpoint.pt"
    return TrainedTT(model, dataset, history, folder, kept)
