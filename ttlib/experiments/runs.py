"""What every experiment notebook does before and after its own science.

``start(experiment, globals())`` resolves the parameters against ``_config.yml``, picks the
output folder (``build/smoke/...`` for smoke, ``results/...`` otherwise), points smoke runs at
a private Minari data dir, seeds everything and starts the run record; ``run.finish()`` writes
``run.json``: enough to rerun the notebook and to trust a number, and ``footer(run)`` shows it
on the page (:mod:`ttlib.experiments.provenance`). ``ensure_dataset`` makes the local dataset an
experiment needs, once.
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ttlib.experiments.cache import EPISODES_USED, MODELS_USED, _git, code_version, model_entry
from ttlib.experiments.presets import repo_root, resolve, results_dir
from ttlib.experiments.provenance import provenance_markdown
from ttlib.io import save_json

# ------------------------------------------------------------ what the run ran on


def _package_modified() -> bool | None:
    """Whether ttlib's own files differ from the commit (results then come from edited code)."""
    status = _git("status", "--porcelain", "--", "ttlib")
    return None if status is None else bool(status)


def _versions() -> dict:
    names = ["ttlib", "torch", "numpy", "gymnasium", "gymnasium-robotics", "mujoco", "minari"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def hardware() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def default_command(experiment: str, params: dict) -> str:
    """The command that reproduces a notebook run (set TTLIB_COMMAND to record another)."""
    if "TTLIB_COMMAND" in os.environ:
        return os.environ["TTLIB_COMMAND"]
    ray = f" --ray {params['ray']}" if params.get("ray") else ""
    return f"ttlib reproduce --preset {params.get('preset', 'smoke')} --only {experiment}{ray}"


@dataclass
class RunRecord:
    """What ``results/<experiment>/run.json`` holds."""

    experiment: str
    params: dict
    command: str = ""
    started: float = field(default_factory=time.time)
    extra: dict = field(default_factory=dict)
    # the code as the run starts (a long run can outlive several commits)
    git_sha: str | None = field(default_factory=lambda: _git("rev-parse", "HEAD") or None)
    package_modified: bool | None = field(default_factory=_package_modified)

    def write(self, out_dir: Path) -> Path:
        record = {
            "experiment": self.experiment,
            "preset": self.params.get("preset"),
            "params": self.params,
            "command": self.command or default_command(self.experiment, self.params),
            "git_sha": self.git_sha,
            "ttlib_modified_at_start": self.package_modified,
            "versions": _versions(),
            "hardware": hardware(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "wall_time_s": round(time.time() - self.started, 1),
            **self.extra,
        }
        return save_json(record, Path(out_dir) / "run.json")


# ------------------------------------------------------------ the notebook's run
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

        It lists every cached model the run used (trained now or loaded) with the wall time
        its training took, and every cached entry of evaluation episodes with the wall and
        CPU time they took, each with the commit of the code that made it, so a rerun from the
        cache still says what the results cost and where they come from.
        """
        self.record.extra.update(extra)
        self.record.extra["models"] = [self._model_origin(m) for m in MODELS_USED]
        self.record.extra["cached_episodes"] = [dict(e) for e in EPISODES_USED]
        self.record.extra["artefacts"] = sorted(set(self.artefacts))
        return self.record.write(self.out_dir)

    def _model_origin(self, model: dict) -> dict:
        """A cached model's entry with the commit and time of the code that trained it.

        The cache keeps each model's training time and commit beside it (``<entry>.json``,
        written by :func:`ttlib.experiments.cache.cached` as it trains); a model trained in
        this run whose file lacks them gets this run's commit and start time added there, so
        later runs that load it can say which code made it. Models trained before this was
        kept say None.
        """
        entry = dict(model)
        timing = _timing_file(model["model"])
        info = json.loads(timing.read_text()) if timing is not None else {}
        if model.get("trained_in_this_run") and timing is not None and "git_sha" not in info:
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.record.started))
            info |= {"git_sha": self.record.git_sha, "trained_utc": started}
            save_json(info, timing)
        for key in ("git_sha", "trained_utc", "ttlib_modified"):
            entry[key] = info.get(key, model.get(key))
        return entry


def _timing_file(model: str) -> Path | None:
    """``<entry>.json`` beside the cached model named ``model`` (None if missing; it may
    outlive the model itself)."""
    stem = Path(model).stem if model.endswith(".pt") else model
    return model_entry(f"{stem}.json")


def footer(run: Run, **extra):
    """Finish the run and show its provenance as markdown (the last cell of a notebook)."""
    from IPython.display import Markdown

    return Markdown(provenance_markdown(run.finish(**extra)))


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
    EPISODES_USED.clear()
    code_version()  # the commit of the code this process imported, for what it caches
    out = results_dir(experiment, params["preset"])
    return Run(experiment, params, out, RunRecord(experiment, params))


def ensure_dataset(env: str, kind: str, transitions: int, seed: int = 0) -> str:
    """The id of the local dataset ``ttlib/<env>/<kind>-v0``, generating it if missing.

    An existing dataset of another size is not silently replaced: that would change the
    published results behind their back. The error says how to regenerate it.
    """
    import minari

    from ttlib.datagen.datasets_gen import GenConfig, make_dataset
    from ttlib.envs import dataset_id

    did = dataset_id(env, kind)
    if did in minari.list_local_datasets():
        have = minari.load_dataset(did).total_steps
        want = 2 * transitions if kind == "medium-expert" else transitions  # D4RL: concatenated
        if kind != "medium-replay" and have != want:
            raise ValueError(
                f"local dataset {did} has {have} transitions, this preset wants {want}; "
                f"regenerate with `ttlib make-data --env {env} --kind {kind} "
                f"--transitions {transitions} --overwrite`"
            )
        return did
    # The committed policies, found from the checkout (a notebook's cwd is notebooks/).
    policies = repo_root() / "results" / "policies"
    make_dataset(env, kind, GenConfig(transitions=transitions, seed=seed, policy_dir=str(policies)))
    return did
