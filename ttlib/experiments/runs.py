"""What every experiment notebook does before and after its own science.

``start(experiment, globals())`` resolves the parameters against ``_config.yml``, picks the
output folder (``build/smoke/...`` for smoke, ``results/...`` otherwise), points smoke runs at
a private Minari data dir, seeds everything and starts the run record. ``ensure_dataset`` and
``train_cached`` make the expensive stages resumable: a rerun (also after a kill) reuses
what exists instead of starting again.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ttlib.data import DataConfig, Episode, SequenceDataset, data_fingerprint, load_episodes
from ttlib.experiments.presets import (
    RunRecord,
    cache_dir,
    config_key,
    repo_root,
    resolve,
    results_dir,
)
from ttlib.io import save_json
from ttlib.model import TrajectoryGPT
from ttlib.train import TrainConfig, gpt_config_for, load_checkpoint, train


@dataclass
class Run:
    experiment: str
    params: dict
    out_dir: Path
    record: RunRecord
    artefacts: list[str] = field(default_factory=list)

    @property
    def preset(self) -> str:
        return self.params["preset"]

    def path(self, name: str) -> Path:
        """A file in the run's output folder, remembered for run.json."""
        self.artefacts.append(name)
        return self.out_dir / name

    def save_figure(self, fig, name: str) -> Path:
        """Save ``fig`` as ``name``.png and .svg (the book uses the PNG, the SVG scales)."""
        png = self.path(f"{name}.png")
        fig.savefig(png, dpi=120, bbox_inches="tight")
        fig.savefig(self.path(f"{name}.svg"), bbox_inches="tight")
        return png

    def save_table(self, df, name: str) -> Path:
        p = self.path(f"{name}.csv")
        df.to_csv(p, index=False, float_format="%.6g")
        return p

    def finish(self, **extra) -> Path:
        """Write run.json; call it in the notebook's last cell.

        It lists every cached model the run used, whether this run trained it or loaded it,
        and the wall time its training took, so a rerun from the cache (whose own wall time
        is short) still says what the results cost.
        """
        self.record.extra.update(extra)
        self.record.extra["models"] = list(MODELS_USED)
        self.record.extra["artefacts"] = sorted(set(self.artefacts))
        return self.record.write(self.out_dir)


# Models trained or loaded since the last ``start`` (written into run.json by ``finish``).
MODELS_USED: list[dict] = []


def note_model(folder: Path, trained_now: bool, state: dict) -> None:
    """Record a cached model in the current run's list (see :meth:`Run.finish`).

    A model used twice in one run (the D4RL table and its learning curve share one) is listed
    once, so that its training time is not counted twice.
    """
    entry = {
        "model": folder.name,
        "trained_in_this_run": trained_now,
        "steps": int(state.get("step", 0)),
        "train_seconds": state.get("train_seconds"),  # None: trained before it was kept
    }
    for i, seen in enumerate(MODELS_USED):
        if seen["model"] == entry["model"]:
            entry["trained_in_this_run"] = (
                entry["trained_in_this_run"] or seen["trained_in_this_run"]
            )
            MODELS_USED[i] = entry
            return
    MODELS_USED.append(entry)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start(experiment: str, namespace: dict) -> Run:
    """Resolve parameters (one-line error on bad ones), set up outputs, seed, and record."""
    params = resolve(experiment, namespace)
    if params["preset"] == "smoke" and "TTLIB_KEEP_MINARI_PATH" not in os.environ:
        # Smoke datasets are tiny: keep them away from the real ones of the same id.
        smoke_data = repo_root() / "build" / "smoke" / "minari"
        smoke_data.mkdir(parents=True, exist_ok=True)
        os.environ["MINARI_DATASETS_PATH"] = str(smoke_data)
    seed_everything(int(params.get("seed", 0)))
    MODELS_USED.clear()
    out = results_dir(experiment, params["preset"])
    return Run(experiment, params, out, RunRecord(experiment, params))


def ensure_dataset(env: str, kind: str, transitions: int, seed: int = 0) -> str:
    """The id of the local dataset ``ttlib/<env>/<kind>-v0``, generating it if missing.

    An existing dataset of another size is not silently replaced: that would change the
    published results behind their back. The error says how to regenerate it.
    """
    import minari

    from ttlib.datagen.datasets_gen import DataConfig as GenConfig
    from ttlib.datagen.datasets_gen import dataset_id, make_dataset

    did = dataset_id(env, kind)
    local = minari.list_local_datasets()
    if did in local:
        have = minari.load_dataset(did).total_steps
        if kind != "medium-replay" and have != transitions:
            raise ValueError(
                f"local dataset {did} has {have} transitions, this preset wants {transitions}; "
                f"regenerate with `ttlib make-data --env {env} --kind {kind} "
                f"--transitions {transitions} --overwrite`"
            )
        return did
    # The committed policies, found from the checkout (a notebook's cwd is notebooks/).
    policies = repo_root() / "results" / "policies"
    make_dataset(env, kind, GenConfig(transitions=transitions, seed=seed, policy_dir=str(policies)))
    return did


def model_folder(
    data_cfg: DataConfig, episodes: list[Episode], model_cfg, train_cfg: TrainConfig
) -> Path:
    """The cache folder of a TT model, keyed by its three configs and the data's fingerprint."""
    identity = {
        "data": data_cfg.to_dict(),
        "fingerprint": data_fingerprint(episodes),
        "model": model_cfg.to_dict(),
        "train": train_cfg.to_dict(),
    }
    folder = cache_dir("models", f"{data_cfg.dataset_id.replace('/', '_')}-{config_key(identity)}")
    save_json(identity, folder / "config.json")
    return folder


def train_cached(
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    progress: bool = True,
    **model_overrides,
) -> tuple[TrajectoryGPT, SequenceDataset, list[dict]]:
    """Train a model once per (data, model, training) config; later calls load the cache.

    The cache folder is keyed by all three configs and the data's fingerprint, so changing
    any knob or regenerating the dataset trains anew, and an interrupted training resumes from
    its last checkpoint.
    """
    episodes = load_episodes(data_cfg)
    dataset = SequenceDataset(episodes, data_cfg)
    model_cfg = gpt_config_for(dataset, **model_overrides)
    folder = model_folder(data_cfg, episodes, model_cfg, train_cfg)
    ckpt = folder / "checkpoint.pt"
    if ckpt.exists():
        model, _, saved = load_checkpoint(ckpt, device=train_cfg.device)
        if int(saved.get("step", 0)) >= train_cfg.max_steps:
            note_model(folder, False, saved)
            return model, dataset, list(saved.get("history", []))
    res = train(dataset, model_cfg, train_cfg, out_dir=folder, progress=progress)
    note_model(folder, True, {"step": train_cfg.max_steps, "train_seconds": res.train_seconds})
    return res.model, dataset, res.history
