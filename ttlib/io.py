"""Atomic file writes: a killed process never leaves a half-written file that loads as valid."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ttlib.errors import CheckpointError, CheckpointNotFoundError, OutputError, summary


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


class ModelFile:
    """``save`` / ``load`` of a small model: its ``obs_dim``, ``act_dim``, ``config`` (a dataclass
    with ``hidden`` sizes) and weights, as tensors and plain types only (``weights_only``). A
    subclass names its ``FORMAT``, its ``CONFIG`` class and what it is (``WHAT``, for errors)."""

    FORMAT: str
    CONFIG: type
    WHAT: str

    def save(self, path: str | Path) -> Path:
        config = self.config
        state = {
            "format": self.FORMAT,
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "config": asdict(config) | {"hidden": list(config.hidden)},
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        return save_torch(state, path)

    @classmethod
    def load(cls, path: str | Path):
        """The model that ``save`` wrote, in eval mode; another file is a CheckpointError."""
        state = load_torch_file(path, cls.WHAT)
        if not isinstance(state, dict) or state.get("format") != cls.FORMAT:
            raise CheckpointError(f"{path} is not a {cls.FORMAT} file ({cls.WHAT})")
        with model_file_errors(path, cls.WHAT):
            hidden = tuple(state["config"]["hidden"])
            config = cls.CONFIG(**dict(state["config"]) | {"hidden": hidden})
            model = cls(int(state["obs_dim"]), int(state["act_dim"]), config)
            model.load_state_dict(state["state_dict"])
        return model.eval()


def save_json(obj: Any, path: str | Path) -> Path:
    data = (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode()
    return _atomic(Path(path), lambda f: f.write(data))


# ------------------------------------------------------------ output locations, checked up front
def _writable(folder: Path) -> bool:
    """Whether a file can be created in the existing ``folder``. os.access alone is not enough:
    root passes it on read-only file systems, so a probe file is made and removed at once."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".ttlib-write-test-"):
            return True
    except OSError:
        return False


def check_output_dir(path: str | Path, what: str, shown: Path | None = None) -> Path:
    """OutputError unless ``path`` is, or could be made as, a writable folder: checked before
    any work, creating nothing. ``what`` names the option (``--out``), ``shown`` the path."""
    path = Path(path)
    shown = shown or path
    if shown == path and path.exists() and not path.is_dir():
        raise OutputError(f"{what} {shown}: a file of that name exists; give a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{what} {shown}: {existing} is a file, so no folder can be made there")
    if not _writable(existing):
        raise OutputError(f"{what} {shown}: cannot write in {existing} (read-only, no permission)")
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """Raise OutputError unless a file could be written at ``path`` (see check_output_dir)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name")
    check_output_dir(path.parent, what, shown=path)
    return path


def load_torch_file(path: str | Path, what: str, error: type[CheckpointError] = CheckpointError):
    """:func:`load_torch` for user-given files: a bad one is one ``error`` line naming it
    (torch's own message is many lines and suggests ``weights_only=False``, which is unsafe)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"no {what} at {path}")
    if path.is_dir():
        raise error(f"{path} is a folder, not a {what} file")
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return load_torch(path)
    except Exception as err:  # truncated, corrupt, not a torch file, or refused as unsafe
        raise error(
            f"{path} is not a readable {what} ({type(err).__name__}): the file is truncated or "
            "corrupt, or holds more than tensors and plain values; copy it again or remake it"
        ) from err


@contextmanager
def model_file_errors(path: str | Path, what: str):
    """What a torch file with the wrong contents raises while a model is built from it, as one
    CheckpointError line naming the file."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a valid {what} ({summary(err)}); remake it") from err
