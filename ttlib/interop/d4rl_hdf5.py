"""D4RL-format HDF5 files (``observations``, ``actions``, ``rewards``, ``terminals``, ``timeouts``).

D4RL stores a dataset as flat arrays, one row per environment step, with ``terminals`` marking
real episode ends and ``timeouts`` marking time-limit cuts. This module turns such a file into
:class:`ttlib.data.Episode` lists (so D4RL files are a dataset source next to Minari), and gives
the transition table the original Trajectory Transformer code builds from it, which
:mod:`ttlib.interop.original` needs to rebuild the original discretizer.

The original code reads the file through ``qlearning_dataset_with_timeouts`` with
``terminate_on_end=True``: it keeps every step except the very last row of the file, treats
``terminals | timeouts`` as the end of an episode, and remembers which ends were real terminals
(those get the termination penalty). :func:`qlearning_with_timeouts` reproduces that.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ttlib.data import DatasetError, Episode, check_finite

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")

# The original cuts some observations before training (datasets/preprocessing.py): Ant keeps
# qpos (13) + qvel (14) and drops the 84 contact-force dims; Kitchen keeps the first 30 of 60.
_OBSERVATION_KEEP = {"ant-": 27, "kitchen-": 30}


def observation_keep(env_name: str | None) -> int | None:
    """Number of leading observation dims the original keeps for ``env_name`` (None: all, so
    ``obs[:, :keep]`` is the observation the original trains on)."""
    return next((k for p, k in _OBSERVATION_KEEP.items() if (env_name or "").startswith(p)), None)


def read_d4rl_hdf5(source: str | Path | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The five D4RL arrays, from an HDF5 path or an in-memory mapping (rows = env steps)."""
    if isinstance(source, Mapping):
        arrays = {k: np.asarray(source[k]) for k in REQUIRED_KEYS if k in source}
        name = "mapping"
    else:
        import h5py

        path = Path(source)
        if not path.exists():
            raise DatasetError(f"no D4RL HDF5 file at {path}")
        name = str(path)
        try:
            with h5py.File(path, "r") as f:
                arrays = {k: np.asarray(f[k][()]) for k in REQUIRED_KEYS if k in f}
        except OSError as err:
            raise DatasetError(f"{path} is not a readable HDF5 file ({err})") from err
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise DatasetError(
            f"{name} lacks D4RL keys {missing}; a D4RL-format file has {list(REQUIRED_KEYS)} "
            "(old -v0 files without 'timeouts' need one added: True at each time-limit cut)"
        )
    n = len(arrays["rewards"])
    arrays["rewards"] = arrays["rewards"].reshape(n)
    for k in ("terminals", "timeouts"):
        arrays[k] = arrays[k].reshape(n).astype(bool)
    arrays["actions"] = arrays["actions"].reshape(n, -1)
    arrays["observations"] = arrays["observations"].reshape(n, -1)
    bad = [k for k in REQUIRED_KEYS if len(arrays[k]) != n]
    if bad:
        raise DatasetError(f"{name}: arrays {bad} do not have {n} rows like 'rewards'")
    if n < 2:
        raise DatasetError(f"{name}: needs at least 2 rows, has {n}")
    return arrays


def qlearning_with_timeouts(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rows 0..n-2 (the original drops the file's last row), with episode ends marked.

    ``done`` = terminals | timeouts (where episodes are cut), ``realterminals`` = terminals
    (where the termination penalty goes). Dtypes are kept as stored (float32 in D4RL).
    """
    n = len(arrays["rewards"]) - 1
    terminals = np.asarray(arrays["terminals"][:n], dtype=bool)
    return {
        "observations": np.asarray(arrays["observations"][:n]),
        "actions": np.asarray(arrays["actions"][:n]),
        "rewards": np.asarray(arrays["rewards"][:n]),
        "done": terminals | np.asarray(arrays["timeouts"][:n], dtype=bool),
        "realterminals": terminals,
    }


def episode_bounds(done: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) row ranges: an episode ends at each ``done`` row and at the data's end."""
    ends = np.flatnonzero(done) + 1
    if len(ends) == 0 or ends[-1] != len(done):
        ends = np.r_[ends, len(done)]
    starts = np.r_[0, ends[:-1]]
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True) if b > a]


def episodes_from_d4rl(
    source: str | Path | Mapping[str, np.ndarray], env_name: str | None = None
) -> list[Episode]:
    """Episodes of a D4RL-format file, split exactly where the original code splits them.

    ``Episode.terminated`` is True when the episode's last row is a real terminal, so
    :func:`ttlib.data.joined_transitions` puts the penalty where the original does.
    ``env_name`` (e.g. ``ant-medium-v2``) applies the original's observation cut.
    """
    q = qlearning_with_timeouts(read_d4rl_hdf5(source))
    obs = q["observations"].astype(np.float32)[:, : observation_keep(env_name)]
    episodes = []
    for a, b in episode_bounds(q["done"]):
        episodes.append(
            Episode(
                observations=obs[a:b],
                actions=q["actions"][a:b].astype(np.float32),
                rewards=q["rewards"][a:b].astype(np.float32),
                terminated=bool(q["realterminals"][b - 1]),
            )
        )
    check_finite(episodes, str(source) if isinstance(source, str | Path) else "D4RL arrays")
    return episodes


def write_d4rl_hdf5(path: str | Path, episodes: list[Episode]) -> Path:
    """Write episodes as a D4RL-format file (one extra final row, which readers drop).

    Each episode ends with ``terminals`` (if it terminated) or ``timeouts`` (otherwise). The
    extra last row repeats the final step with both flags off, standing in for the row the
    original loader discards; reading the file back gives the same episodes.
    """
    import h5py

    if not episodes:
        raise DatasetError("no episodes to write")
    obs = np.concatenate([ep.observations for ep in episodes]).astype(np.float32)
    act = np.concatenate([ep.actions for ep in episodes]).astype(np.float32)
    rew = np.concatenate([ep.rewards for ep in episodes]).astype(np.float32)
    term = np.zeros(len(rew), bool)
    tout = np.zeros(len(rew), bool)
    ends = np.cumsum([len(ep) for ep in episodes]) - 1
    for ep, end in zip(episodes, ends, strict=True):
        (term if ep.terminated else tout)[end] = True
    arrays = {
        "observations": np.r_[obs, obs[-1:]],
        "actions": np.r_[act, act[-1:]],
        "rewards": np.r_[rew, rew[-1:]],
        "terminals": np.r_[term, False],
        "timeouts": np.r_[tout, False],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path
