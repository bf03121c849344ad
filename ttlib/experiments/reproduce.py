"""`ttlib reproduce`: run the experiment notebooks with papermill, in the paper's order."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

from ttlib.experiments.presets import EXPERIMENTS, PRESETS, ConfigError, repo_root


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


def reproduce(preset: str, only: list[str] | None = None, progress: bool = True) -> list[Path]:
    """Execute each notebook with ``-p preset <preset>``; returns the executed notebooks.

    Each notebook caches its trained models, so a rerun after an interruption resumes; the
    executed copy is written to a temporary name and moved into place only on success.
    """
    import papermill as pm

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    out_dir = executed_dir(preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in notebooks(only):
        os.environ["TTLIB_COMMAND"] = f"ttlib reproduce --preset {preset} --only {nb.stem}"
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            tmp_out = Path(tmp) / nb.name
            pm.execute_notebook(
                str(nb),
                str(tmp_out),
                parameters={"preset": preset},
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


def _cached_training_seconds(rec: dict) -> float:
    """Training time of the cached models a run loaded, each model counted once (older
    records could list a model twice when two parts of a notebook used it)."""
    seconds = {
        m["model"]: float(m.get("train_seconds") or 0)
        for m in rec.get("models", [])
        if not m.get("trained_in_this_run")
    }
    return sum(seconds.values())


def summarize_runs(results: Path | None = None) -> Path:
    """Collect every ``results/*/run.json`` into ``results/runs.csv`` for the book's
    Reproducing page: experiment, preset, command, wall time (and the training time of
    models it loaded from the cache), hardware, commit."""
    results = results or repo_root() / "results"
    rows = []
    for path in sorted(results.glob("*/run.json")):
        rec = json.loads(path.read_text())
        hw = rec.get("hardware", {})
        rows.append(
            {
                "experiment": rec.get("experiment", path.parent.name),
                "preset": rec.get("preset"),
                "command": rec.get("command"),
                "wall time (min)": round(float(rec.get("wall_time_s", 0)) / 60, 1),
                # a rerun that loads cached models is short: say what their training took
                "cached training (min)": round(_cached_training_seconds(rec) / 60, 1),
                "hardware": f"{hw.get('cpu', '?')}, {hw.get('cores', '?')} cores"
                + (f", {hw['gpu']}" if hw.get("gpu") else ""),
                "started (UTC)": rec.get("started_utc"),
                "commit": (rec.get("git_sha") or "")[:8],
            }
        )
    out = results / "runs.csv"
    fields = [
        "experiment",
        "preset",
        "command",
        "wall time (min)",
        "cached training (min)",
        "hardware",
        "started (UTC)",
        "commit",
    ]
    tmp = out.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)
    return out
