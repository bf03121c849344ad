"""Atomic file writes: a killed process never leaves a half-written file that loads as valid."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_torch(obj: Any, path: str | Path) -> Path:
    return _atomic(Path(path), lambda f: torch.save(obj, f))


def load_torch(path: str | Path, map_location="cpu") -> Any:
    """``torch.load`` with ``weights_only=True``: checkpoints hold tensors and plain types only."""
    return torch.load(path, map_location=map_location, weights_only=True)


def save_json(obj: Any, path: str | Path) -> Path:
    data = (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode()
    return _atomic(Path(path), lambda f: f.write(data))
