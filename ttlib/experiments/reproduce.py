"""`ttlib reproduce`: run the experiment notebooks with papermill, in the paper's order."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

from ttlib.experiments.presets import EXPERIMENTS, PRESETS, ConfigError, repo_root
from ttlib.experiments.provenance import compute_summary

# the notebooks with a `ray` parameter
RAY_EXPERIMENTS = ("d4rl", "maze_q", "antmaze", "compute_study", "prediction")


def executed_dir(preset: str) -> Path:
    """results/executed (cpu), results/executed-paper (paper), build/smoke/executed (smoke)."""
    root = repo_root()
    if preset == "smoke":
        return root / "build" / "smoke" / "executed"
    return root / "results" / ("executed" if preset == "cpu" else "executed-paper")


def notebooks(only: list[str] | None = None) -> list[Path]:
    nb_dir = repo_root() / "notebooks"
    names = list(EXPERIMENTS) if not only else only
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ConfigError(f"unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    paths = [nb_dir / f"{n}.ipynb" for n in names]
    missing = [p.name for p in paths if not p.exists()]
    if missing and only:
        raise ConfigError(f"notebook(s) {missing} not found in {nb_dir}")
    return [p for p in paths if p.exists()]


def reproduce(
    preset: str, only: list[str] | None = None, progress: bool = True, ray: str | None = None
) -> list[Path]:
    """Execute each notebook with ``-p preset <preset>``; returns the executed notebooks.

    Each notebook caches its trained models, so a rerun after an interruption resumes; the
    executed copy is written to a temporary name and moved into place only on success.
    ``ray`` (``local`` or a cluster's address) is passed to the notebooks of
    :data:`RAY_EXPERIMENTS`, which then run their work as Ray tasks.
    """
    import papermill as pm

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    out_dir = executed_dir(preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in notebooks(only):
        on_ray = ray is not None and nb.stem in RAY_EXPERIMENTS
        command = f"ttlib reproduce --preset {preset} --only {nb.stem}"
        os.environ["TTLIB_COMMAND"] = command + (f" --ray {ray}" if on_ray else "")
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            tmp_out = Path(tmp) / nb.name
            pm.execute_notebook(
                str(nb),
                str(tmp_out),
                parameters={"preset": preset, **({"ray": ray} if on_ray else {})},
                cwd=str(nb.parent),
                progress_bar=progress,
                kernel_name="python3",
            )
            shutil.move(tmp_out, out_dir / nb.name)
        done.append(out_dir / nb.name)
    os.environ.pop("TTLIB_COMMAND", None)
    if preset != "smoke":
        summarize_runs()
    return done


# the columns of results/runs.csv (book/reproducing.md explains them)
RUNS_COLUMNS = [
    "experiment",
    "preset",
    "command",
    "notebook_min",
    "models_train_min",
    "episodes_min",
    "total_compute_min",
    "not_recorded",
    "commits",
    "hardware",
    "started_utc",
]


def _min(seconds: float | None) -> str:
    return "not recorded" if seconds is None else f"{seconds / 60:.1f}"


def summarize_runs(results: Path | None = None) -> Path:
    """Collect every ``results/*/run.json`` into ``results/runs.csv`` for the book's
    Reproducing page, one row per experiment: what it cost and which code made it.

    ``notebook_min`` is the notebook run's own wall time; ``models_train_min`` the recorded
    training time of every cached model it used and ``episodes_min`` that of every cached
    evaluation episode, made in this run or loaded; ``total_compute_min`` adds to the
    notebook's time what it loaded from the cache (made earlier or by separate workers), so
    nothing counts twice; ``commits`` the notebook's commit, then the caches'; ``not_recorded``
    what the sums and commits miss (see :func:`ttlib.experiments.provenance.compute_summary`).
    """
    results = results or repo_root() / "results"
    rows = []
    for path in sorted(results.glob("*/run.json")):
        rec = json.loads(path.read_text())
        hw = rec.get("hardware", {})
        cost = compute_summary(rec)
        commits = " ".join(cost["commits"])
        commits += "" if cost["commits_complete"] else " + not recorded"
        rows.append(
            {
                "experiment": rec.get("experiment", path.parent.name),
                "preset": rec.get("preset"),
                "command": rec.get("command"),
                "notebook_min": _min(cost["notebook"]),
                "models_train_min": _min(cost["models"]),
                "episodes_min": _min(cost["episodes"]),
                "total_compute_min": _min(cost["total"]),
                "not_recorded": "; ".join(cost["not_recorded"]) or "nothing",
                "commits": commits,
                "hardware": f"{hw.get('cpu', '?')}, {hw.get('cores', '?')} cores"
                + (f", {hw['gpu']}" if hw.get("gpu") else ""),
                "started_utc": rec.get("started_utc"),
            }
        )
    out = results / "runs.csv"
    tmp = out.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RUNS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)
    return out
