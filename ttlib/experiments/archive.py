"""Keep a run's cache entries in the repository, so a fresh machine need not recompute them.

The cache (``cache/``, never committed) can hold hours of training. ``pack(dest)`` copies
the entries this process used (the models and evaluation episodes listed for run.json) to
``dest`` in the cache's own layout, a finished TT model without its optimiser and random
states (a third of the size; the model, its configs, discretizer and log are all kept).
``unpack(src)`` copies them back where the cache lacks them; the experiments then load them
as if trained here, since the keys hold the data's fingerprint and datasets are regenerated
deterministically (a dataset made differently gets new keys: the archive is then ignored).

    python -m ttlib.experiments.archive unpack results/d4rl/archive
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ttlib.experiments.cache import (
    EPISODES_USED,
    MODELS_USED,
    cache_dir,
    model_entry,
    provenance_file,
)
from ttlib.io import load_torch, save_torch

# what a finished checkpoint needs to be loaded (not resumed): ttlib.train.load_checkpoint
_RESUME_ONLY = ("optimizer", "generator", "rng")


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.name == "checkpoint.pt":
        state = load_torch(src)
        save_torch({k: v for k, v in state.items() if k not in _RESUME_ONLY}, dest)
    else:
        shutil.copy2(src, dest)


def _files_used() -> list[Path]:
    """The cache files of the models and episodes listed for this run's record."""
    files = []
    for m in MODELS_USED:
        entry = model_entry(m["model"])
        if entry is None:
            raise FileNotFoundError(f"model {m['model']} is not in the cache {cache_dir()}")
        files += sorted(entry.iterdir()) if entry.is_dir() else [entry]
        files.append(entry.with_suffix(".json"))  # its training time and commit
    for e in EPISODES_USED:
        entry = cache_dir(*e["kind"].split("/")) / e["entry"]
        files += [entry, provenance_file(entry), entry.with_name("key.json")]
    return [f for f in files if f.is_file()]


def pack(dest: str | Path) -> int:
    """Copy the entries this process used to ``dest`` (those already there are kept);
    return how many files were written."""
    root, dest, n = cache_dir(), Path(dest), 0
    for f in _files_used():
        target = dest / f.relative_to(root)
        if not target.exists():
            _copy(f, target)
            n += 1
    return n


def unpack(src: str | Path) -> int:
    """Copy an archive's entries into the cache where it lacks them; return how many."""
    root, src, n = cache_dir(), Path(src), 0
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        target = root / f.relative_to(src)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
            n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ttlib.experiments.archive", description=__doc__)
    ap.add_argument("action", choices=["unpack"])
    ap.add_argument("src", help="an archive written by pack(), e.g. results/d4rl/archive")
    args = ap.parse_args(argv)
    print(f"{unpack(args.src)} files copied into {cache_dir()}")


if __name__ == "__main__":
    main()
