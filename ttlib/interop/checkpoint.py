"""Run directories of the original code (``state_{E}.pt``, ``model_config.pkl``,
``data_config.pkl``) imported as a :class:`ttlib.model.TrajectoryGPT`.

The pickles are read by a restricted unpickler that only knows the original's ``Config`` class
and a handful of class *names* (never code). The original does not save its discretizer, so it
is rebuilt from the D4RL-format HDF5 file the model was trained on, step for step as the
original builds it (:func:`rebuild_original_discretizer`).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ttlib.discretize import QuantileDiscretizer
from ttlib.errors import summary
from ttlib.interop.d4rl_hdf5 import observation_keep, qlearning_with_timeouts, read_d4rl_hdf5
from ttlib.interop.original import (
    OriginalCheckpointError,
    OriginalGPTConfig,
    convert_original_state_dict,
    ttlib_config_from_original,
)
from ttlib.interop.original_training import penalised_paths
from ttlib.io import load_torch_file
from ttlib.model import TrajectoryGPT


# =============================================================== pickled configs
@dataclass(frozen=True)
class OriginalClass:
    """Stands in for a class the original pickled by reference (e.g. its ``GPT``)."""

    module: str
    name: str

    def __repr__(self) -> str:
        return f"<original {self.module}.{self.name}>"


class OriginalConfig:
    """Stands in for ``trajectory.utils.config.Config``: the target class and its kwargs."""

    def __init__(self, _class: OriginalClass | None = None, **kwargs):
        self._class = _class
        self._dict = dict(kwargs)

    def __setstate__(self, state):
        if not isinstance(state, dict) or not set(state) <= {"_class", "_dict"}:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise pickle.UnpicklingError(f"unexpected Config state {keys}")
        self._class = state.get("_class")
        self._dict = dict(state.get("_dict", {}))

    @property
    def class_name(self) -> str:
        return self._class.name if isinstance(self._class, OriginalClass) else str(self._class)

    def __getitem__(self, key):
        return self._dict[key]

    def to_dict(self) -> dict:
        return dict(self._dict)

    def __repr__(self) -> str:
        return f"OriginalConfig({self.class_name}, {self._dict})"


# The only globals a config pickle of the original may name. Classes become OriginalClass
# markers, so unpickling never imports or runs code from the original package.
_KNOWN_CLASSES = {
    ("trajectory.models.transformers", "GPT"),
    ("trajectory.models.transformers", "ConditionalGPT"),
    ("trajectory.datasets.sequence", "SequenceDataset"),
    ("trajectory.datasets.sequence", "DiscretizedDataset"),
    ("trajectory.datasets.sequence", "GoalDataset"),
    ("trajectory.utils.training", "Trainer"),
}


def _reconstruct(cls, base, state):
    """``copyreg._reconstructor`` for protocol-0/1 pickles, for the Config stand-in only."""
    if cls is not OriginalConfig or base is not object or state is not None:
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r} from {base!r}")
    return OriginalConfig.__new__(OriginalConfig)


class _ConfigUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("trajectory.utils.config", "Config"):
            return OriginalConfig
        if (module, name) in _KNOWN_CLASSES:
            return OriginalClass(module, name)
        # protocol 0/1 pickles name these two (Python 2 spellings included)
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _reconstruct
        if module in ("builtins", "__builtin__") and name == "object":
            return object
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from an original config pickle: only "
            "trajectory.utils.config.Config and the model/dataset/trainer class names are allowed"
        )


def load_original_config(path: str | Path) -> OriginalConfig:
    """Read ``model_config.pkl`` / ``data_config.pkl`` without the original package."""
    path = Path(path)
    if not path.exists():
        raise OriginalCheckpointError(f"no config pickle at {path}")
    with open(path, "rb") as f:
        try:
            cfg = _ConfigUnpickler(f).load()
        except Exception as err:  # malformed or refused: any failure means "not importable"
            why = " ".join(str(err).split())  # pickle's messages can run over two lines
            raise OriginalCheckpointError(f"{path}: {type(err).__name__}: {why}") from err
    if not isinstance(cfg, OriginalConfig):
        raise OriginalCheckpointError(f"{path} holds a {type(cfg).__name__}, not a Config")
    return cfg


# ============================================================ discretizer rebuild
class OriginalQuantileDiscretizer(QuantileDiscretizer):
    """The original's quantile bins: ``thresholds = sort(x)[::ceil(n/N)]`` plus the maximum.

    That slicing yields ceil(n / ceil(n/N)) order statistics, which is N for any n >= N·(N-1)
    (every real D4RL dataset) but fewer for small data: then there are M < N bins. The raw
    thresholds (M+1 rows) are kept in ``thresholds``; ``edges`` (N+1 per dimension, as ttlib
    expects) repeat the maximum, so decoding any id >= M gives the maximum. Encoding follows
    the original exactly: the largest i with x >= threshold[i], 0 below the minimum, *M+1*
    (the number of thresholds) at or above the maximum, then clipped to [0, N-1]. (With
    M < N the original then fails when it reconstructs or plans; ttlib decodes to the maximum.)
    """

    def __init__(self, n_bins: int = 100):
        super().__init__(n_bins)
        self.thresholds: np.ndarray | None = None  # (M+1, D), as the original stores them

    def _edges(self, x: np.ndarray) -> np.ndarray:
        step = int(np.ceil(len(x) / self.n_bins))
        thresholds = np.concatenate([np.sort(x, axis=0)[::step], x.max(axis=0, keepdims=True)])
        self.thresholds = thresholds
        pad = np.repeat(thresholds[-1:], self.n_bins + 1 - len(thresholds), axis=0)
        return np.concatenate([thresholds, pad]).T.copy()

    @property
    def n_real_bins(self) -> int:
        """M: the bins the thresholds define (N except for small datasets)."""
        return len(self._check_thresholds()) - 1

    def _check_thresholds(self) -> np.ndarray:
        if self.thresholds is None:
            raise RuntimeError("OriginalQuantileDiscretizer is not fitted")
        return self.thresholds

    def encode(self, x, dims=None) -> np.ndarray:
        thr = self._check_thresholds() if dims is None else self._check_thresholds()[:, dims]
        ids = super().encode(x, dims)  # the padded edges give the original's ids below the max
        # at/above every threshold (NaN too, as searchsorted puts it last): the original's
        # "all true" case, id M+1
        top = ~(np.asarray(x, dtype=np.float64) < thr[-1])
        return np.where(top, min(len(thr), self.n_bins - 1), ids)


def original_transitions(
    arrays: Mapping[str, np.ndarray],
    discount: float = 0.99,
    penalty: float | None = -100.0,
    max_path_length: int = 1000,
    env_name: str | None = None,
) -> tuple[np.ndarray, list[int]]:
    """The original's ``joined_raw`` [s, a, r, V] (float64) and its episode lengths.

    Same steps and dtypes as the original: drop the file's last row, penalty on real
    terminals, split on terminals|timeouts, zero-pad each episode to ``max_path_length``, and
    V_t = sum_{k>=1} discount^(k-1) r_{t+k} as a float32·float64 sum over the padded rows, so
    the thresholds come out bit for bit.
    """
    q = qlearning_with_timeouts(arrays)
    obs = q["observations"][:, : observation_keep(env_name)]
    rewards, values, flags, lengths = penalised_paths(q, discount, penalty, max_path_length)
    real = ~flags
    joined = np.concatenate([obs, q["actions"], rewards[real], values[real]], axis=-1)
    return joined, lengths


def rebuild_original_discretizer(
    source: str | Path | Mapping[str, np.ndarray], data_config: Mapping
) -> OriginalQuantileDiscretizer:
    """The discretizer the original computes at plan time from the training data.

    ``source``: the D4RL-format HDF5 file (or its arrays) the model was trained on;
    ``data_config``: the kwargs of ``data_config.pkl`` (N, penalty, discount, env, ...).
    """
    kind = data_config.get("discretizer", "QuantileDiscretizer")
    if kind != "QuantileDiscretizer":
        raise OriginalCheckpointError(f"discretizer {kind!r}: only QuantileDiscretizer exists")
    joined, _ = original_transitions(
        read_d4rl_hdf5(source),
        discount=float(data_config.get("discount", 0.99)),
        penalty=data_config.get("penalty"),
        max_path_length=int(data_config.get("max_path_length", 1000)),
        env_name=data_config.get("env"),
    )
    return OriginalQuantileDiscretizer(int(data_config["N"])).fit(joined)


# ================================================================== checkpoints
@dataclass
class OriginalCheckpoint:
    model: TrajectoryGPT
    discretizer: OriginalQuantileDiscretizer | None
    epoch: int
    model_config: dict
    data_config: dict
    directory: Path
    notes: list[str] = field(default_factory=list)


def latest_epoch(directory: str | Path) -> int:
    """The largest E of the ``state_{E}.pt`` files (what the original's 'latest' loads)."""
    stems = [p.stem.removeprefix("state_") for p in Path(directory).glob("state_*.pt")]
    epochs = [int(stem) for stem in stems if stem.isdigit()]
    if not epochs:
        raise OriginalCheckpointError(f"no state_*.pt files in {directory}")
    return max(epochs)


def load_original_checkpoint(
    directory: str | Path,
    dataset_source: str | Path | Mapping[str, np.ndarray] | None,
    epoch: int | str = "latest",
    device: str | torch.device = "cpu",
) -> OriginalCheckpoint:
    """Import an original run directory into ttlib.

    ``dataset_source`` is the D4RL-format HDF5 file (or its arrays) the run was trained on;
    the discretizer is rebuilt from it (None skips that and leaves ``discretizer`` None).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise OriginalCheckpointError(f"{directory} is not a directory")
    if epoch == "latest":
        epoch = latest_epoch(directory)
    state_path = directory / f"state_{int(epoch)}.pt"
    if not state_path.exists():
        raise OriginalCheckpointError(f"no {state_path.name} in {directory}")
    mcfg = load_original_config(directory / "model_config.pkl")
    if mcfg.class_name != "GPT":
        raise OriginalCheckpointError(f"model_config.pkl is for {mcfg.class_name}, not GPT")
    ocfg = OriginalGPTConfig.from_kwargs(mcfg.to_dict())
    gcfg = ttlib_config_from_original(ocfg)
    state = load_torch_file(state_path, "original weights file", OriginalCheckpointError)
    try:
        model = TrajectoryGPT(gcfg)
    except (AssertionError, ValueError, TypeError, RuntimeError) as err:  # e.g. n_head ∤ n_embd
        raise OriginalCheckpointError(
            f"{directory / 'model_config.pkl'} describes a model that cannot be built "
            f"({summary(err)})"
        ) from err
    if not isinstance(state, dict):
        raise OriginalCheckpointError(f"{state_path} holds a {type(state).__name__}, not weights")
    try:
        model.load_state_dict(convert_original_state_dict(state, gcfg), strict=True)
    except (KeyError, RuntimeError, TypeError, AttributeError) as err:
        raise OriginalCheckpointError(
            f"{state_path} does not fit its model config ({summary(err)})"
        ) from err
    model.to(device).eval()

    notes = []
    if len({ocfg.embd_pdrop, ocfg.resid_pdrop, ocfg.attn_pdrop}) > 1:
        notes.append("dropout rates differ; ttlib uses the largest (only matters for training)")
    data_cfg: dict = {}
    disc = None
    data_path = directory / "data_config.pkl"
    if data_path.exists():
        data_cfg = load_original_config(data_path).to_dict()
    if dataset_source is not None:
        if not data_cfg:
            raise OriginalCheckpointError(f"no data_config.pkl in {directory}")
        disc = rebuild_original_discretizer(dataset_source, data_cfg)
        if disc.dim != gcfg.transition_dim or disc.n_bins != gcfg.n_bins:
            raise OriginalCheckpointError(
                f"the dataset gives {disc.dim} dims x {disc.n_bins} bins but the model has "
                f"{gcfg.transition_dim} x {gcfg.n_bins}: wrong dataset for this checkpoint"
            )
        if disc.n_real_bins < disc.n_bins:
            notes.append(
                f"only {disc.n_real_bins} quantile bins (dataset too small for {disc.n_bins}); "
                "the original cannot plan with this discretizer"
            )
    return OriginalCheckpoint(
        model=model,
        discretizer=disc,
        epoch=int(epoch),
        model_config=mcfg.to_dict(),
        data_config=data_cfg,
        directory=directory,
        notes=notes,
    )
