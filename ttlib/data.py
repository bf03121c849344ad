"""From Minari datasets to token windows for the Trajectory Transformer.

As the paper's code: episodes → transitions [s, a, r, V] (terminal penalty, discounted
reward-to-go V) → one discretizer fit on all → windows of ``n_transitions`` padded with stop
tokens, which are trained on (that is how the model learns that an episode can end); only
positions past ``max_path_length`` carry no loss.
"""

from __future__ import annotations

import difflib
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ttlib.discretize import Discretizer, make_discretizer, relative_goal_bins
from ttlib.errors import ConfigError, DatasetError, check_number, check_positive, is_int, summary


@dataclass
class Episode:
    observations: np.ndarray  # (T, N): the state each action was taken in
    actions: np.ndarray  # (T, M)
    rewards: np.ndarray  # (T,)
    terminated: bool  # the last step ended the episode for real (not a time limit)
    goals: np.ndarray | None = None  # (T, G) per-step desired goal of maze datasets

    def __len__(self) -> int:
        return len(self.actions)


GOAL_SAMPLING = ("future", "final")


@dataclass
class DataConfig:
    dataset_id: str
    discretizer: str = "quantile"
    n_bins: int = 100
    n_transitions: int = 10
    discount: float = 0.99
    termination_penalty: float = -100.0
    max_path_length: int = 1000  # the original's episode cap: no loss past this time step
    max_transitions: int | None = None  # keep whole episodes up to this many transitions
    obs_keys: list[str] = field(default_factory=lambda: ["observation"])  # for dict observations
    goal_dims: list[int] | None = None  # observation dims that define a hindsight goal
    # Which state of the episode is a window's goal: "future", a random later one, or "final",
    # the episode's last (the original's GoalDataset). With "final" the episode's sparse
    # rewards and values are about the goal the model is given.
    goal_sampling: str = "future"
    # True: the goal tokens are the goal's bins minus those of the window's first state (see
    # relative_goal_bins), so "the goal is three bins to the right" is one token wherever the
    # point is; False: the goal's own bins (the original's goal prefix).
    goal_relative: bool = False

    def __post_init__(self):
        # out-of-range windows crash deep in torch (or build nothing) if not caught here
        if self.goal_sampling not in GOAL_SAMPLING:
            raise ConfigError(
                f"unknown goal_sampling {self.goal_sampling!r}; choose one of {GOAL_SAMPLING}"
            )
        check_positive(
            "DataConfig",
            n_transitions=self.n_transitions,
            max_path_length=self.max_path_length,
            max_transitions=self.max_transitions,
        )
        if not (is_int(self.n_bins) and self.n_bins >= 2):
            raise ConfigError(f"DataConfig n_bins={self.n_bins!r}: must be an integer >= 2")
        check_number("DataConfig", "(0, 1]", lambda v: 0 < v <= 1, discount=self.discount)
        if self.goal_relative and not self.goal_dims:
            raise ConfigError("DataConfig goal_relative=True needs goal_dims")

    def to_dict(self) -> dict:
        d = asdict(self)
        for key, default in (("goal_sampling", "future"), ("goal_relative", False)):
            if d[key] == default:
                del d[key]  # defaults are left out, so older cache keys stay valid
        return d


def minari_root() -> Path:
    """Minari's data folder (as ``minari.storage.get_dataset_path`` finds it), not created."""
    path = os.environ.get("MINARI_DATASETS_PATH")
    return Path(path) if path else Path.home() / ".minari" / "datasets"


def local_dataset_ids() -> list[str]:
    import minari

    # Minari warns about (and skips) folders with bad metadata; load_minari reports the one
    # asked for as a DatasetError, so the others' warnings would only be noise here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Misconfigured dataset")
        return sorted(minari.list_local_datasets().keys())


def _unreadable(dataset_id: str, err: BaseException) -> DatasetError:
    return DatasetError(
        f"dataset {dataset_id!r} in {minari_root() / dataset_id} exists but cannot be read "
        f"({summary(err)}); delete that folder (or `minari delete {dataset_id}`) and generate "
        "it again"
    )


def _open_local(dataset_id: str):
    """A local dataset, read far enough that a bad file is reported now, as this dataset's."""
    import minari

    try:
        dataset = minari.load_dataset(dataset_id)
        # Minari opens the data file lazily: an empty or truncated main_data.hdf5 would
        # otherwise surface later as an OSError or KeyError from deep inside h5py.
        if dataset.total_episodes < 1:
            raise ValueError("it has no episodes")
        next(iter(dataset.iterate_episodes([0])))
    except Exception as err:  # corrupt, half-written or hand-edited files: all "unreadable"
        raise _unreadable(dataset_id, err) from err
    return dataset


def load_minari(dataset_id: str, download: bool = False):
    """A Minari dataset by id: the local copy, else (``download=True``, needs network) the
    remote one; local ids (``ttlib/<env>/<kind>-v0``) are made by ``ttlib make-data``."""
    import minari

    local = local_dataset_ids()
    # a folder with a malformed metadata file is not "local" to Minari, but it is not missing
    if dataset_id in local or (minari_root() / dataset_id / "data").is_dir():
        return _open_local(dataset_id)
    if download:
        try:
            minari.download_dataset(dataset_id)
        except Exception as err:
            why = summary(err)
            if isinstance(err, ImportError):
                why = "downloading needs the optional package huggingface_hub, minari[hf]"
            raise DatasetError(
                f"could not download {dataset_id!r} ({why}); remote Minari ids "
                f"need network access. Without it, {_local_alternative(dataset_id)}"
            ) from err
        return minari.load_dataset(dataset_id)
    near = difflib.get_close_matches(dataset_id, local, n=3)
    hint = f" Did you mean {', '.join(near)}?" if near else ""
    raise DatasetError(
        f"no local Minari dataset {dataset_id!r}.{hint} A remote id downloads with --download "
        f"(download=True; needs network); without network, {_local_alternative(dataset_id)}."
    )


def _local_alternative(remote_id: str) -> str:
    """How to make a local stand-in for a remote id such as ``mujoco/hopper/medium-v0``."""
    from ttlib.envs import dataset_id as local_id

    parts = remote_id.split("/")
    if len(parts) == 3:
        env, kind = parts[1], parts[2].rsplit("-v", 1)[0]
        try:
            made = local_id(env, kind)
        except ValueError:
            pass
        else:
            command = f"ttlib make-data --env {env} --kind {kind}"
            return f"generate a local one with `{command}` and use {made!r}"
    return "generate a local dataset with `ttlib make-data` (ids ttlib/<env>/<kind>-v0)"


def _flat_obs(obs, keys: list[str]) -> np.ndarray:
    if isinstance(obs, dict):
        missing = [k for k in keys if k not in obs]
        if missing:
            raise DatasetError(f"observation keys {missing} not in dataset (has {list(obs)})")
        return np.concatenate([np.asarray(obs[k], dtype=np.float32) for k in keys], axis=-1)
    return np.asarray(obs, dtype=np.float32)


def episodes_from_minari(dataset, obs_keys: list[str] | None = None) -> list[Episode]:
    """Convert Minari episodes (T+1 observations, T actions) into :class:`Episode` lists."""
    keys = obs_keys or ["observation"]
    name = getattr(dataset, "id", "dataset")
    episodes = []
    try:
        for ep in dataset.iterate_episodes():
            episodes.append(_episode(ep, keys))
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError) as err:  # a malformed file
        raise _unreadable(name, err) from err
    check_finite(episodes, name)
    return episodes


def _episode(ep, keys: list[str]) -> Episode:
    obs = _flat_obs(ep.observations, keys)[:-1]
    goals = None  # read by the goal-following measurement (ttlib.experiments.goals)
    if isinstance(ep.observations, dict) and "desired_goal" in ep.observations:
        goals = np.asarray(ep.observations["desired_goal"], dtype=np.float32)[:-1]
    return Episode(
        observations=obs,
        actions=np.asarray(ep.actions, dtype=np.float32).reshape(len(obs), -1),
        rewards=np.asarray(ep.rewards, dtype=np.float32),
        terminated=bool(np.asarray(ep.terminations)[-1]),
        goals=goals,
    )


def check_finite(episodes: list[Episode], name: str) -> None:
    """A DatasetError naming ``name``, the episode and the field where a value is NaN or inf."""
    for i, ep in enumerate(episodes):
        for field_name in ("observations", "actions", "rewards"):
            if not np.isfinite(getattr(ep, field_name)).all():
                raise DatasetError(f"{name}: episode {i} has NaN/inf in {field_name}")


def load_episodes(cfg: DataConfig, download: bool = False) -> list[Episode]:
    episodes = episodes_from_minari(load_minari(cfg.dataset_id, download), cfg.obs_keys)
    if cfg.max_transitions is not None:  # whole episodes until max_transitions are reached
        before = np.cumsum([0] + [len(ep) for ep in episodes])[:-1]  # transitions before each
        episodes = [ep for ep, n in zip(episodes, before, strict=True) if n < cfg.max_transitions]
    return episodes


def data_fingerprint(episodes: list[Episode]) -> dict:
    """A cheap identity of the data behind a cache entry: a dataset regenerated under the same
    id trains anew instead of silently reusing a model fit on the old data."""
    rewards = np.concatenate([ep.rewards for ep in episodes])
    return {
        "episodes": len(episodes),
        "transitions": int(len(rewards)),
        "reward_sum": round(float(rewards.astype(np.float64).sum()), 3),
    }


def returns_to_go(
    rewards: np.ndarray, discount: float, max_path_length: int | None = None
) -> np.ndarray:
    """V_t = sum_{k>=1} discount^(k-1) r_{t+k}: the discounted reward *after* step t.

    Summed over the rewards zero-padded to ``max_path_length`` as the original does (numpy's
    pairwise sum groups terms by the padded length), so V and its quantile edges match bit for
    bit.
    """
    n = len(rewards)
    P = max(n, max_path_length or n)
    padded = np.zeros(P, dtype=np.float64)
    padded[:n] = rewards
    discounts = discount ** np.arange(P)
    v = np.empty(n, dtype=np.float64)
    for t in range(n):
        v[t] = (padded[t + 1 :] * discounts[: P - t - 1]).sum()
    return v


def joined_transitions(
    ep: Episode,
    discount: float,
    termination_penalty: float | None,
    max_path_length: int | None = None,
) -> np.ndarray:
    """(T, N+M+2) array of [s, a, r, V]; a true terminal's reward becomes the penalty."""
    r = ep.rewards.astype(np.float64).copy()
    if ep.terminated and termination_penalty is not None:
        r[-1] = termination_penalty
    v = returns_to_go(r, discount, max_path_length)
    return np.concatenate(
        [ep.observations, ep.actions, r[:, None], v[:, None]], axis=1, dtype=np.float64
    )


class SequenceDataset:
    """Token windows of ``n_transitions`` transitions, built as the original builds them.

    A window starts at every step but an episode's last; positions after the episode's end are
    stop tokens (termination or time limit alike). :meth:`batch` gives ``(x, y, mask)``, x =
    window[:-1] and y = window[1:] as raw bins; ``mask`` is the original's: 0 from time step
    ``max_path_length`` on, aligned with x (``mask[:-1]``), so the first stop token past it is
    still a target. Goal-conditioned data adds a hindsight goal (``cfg.goal_sampling``).
    """

    def __init__(
        self,
        episodes: list[Episode],
        cfg: DataConfig,
        discretizer: Discretizer | None = None,
        seed: int = 0,
    ):
        if not episodes:
            raise DatasetError(f"{cfg.dataset_id}: no episodes to build windows from")
        longest = max(len(ep) for ep in episodes)
        if longest > cfg.max_path_length:
            raise DatasetError(
                f"{cfg.dataset_id}: an episode has {longest} steps, more than max_path_length "
                f"{cfg.max_path_length}; raise DataConfig.max_path_length"
            )
        self.cfg = cfg
        self.episodes = episodes
        joined = [
            joined_transitions(ep, cfg.discount, cfg.termination_penalty, cfg.max_path_length)
            for ep in episodes
        ]
        self.observation_dim = episodes[0].observations.shape[1]
        self.action_dim = episodes[0].actions.shape[1]
        self.transition_dim = self.observation_dim + self.action_dim + 2
        all_joined = np.concatenate(joined)
        if discretizer is None:
            discretizer = make_discretizer(cfg.discretizer, cfg.n_bins).fit(all_joined)
        elif discretizer.dim != self.transition_dim:
            raise DatasetError(
                f"discretizer has {discretizer.dim} dimensions but {cfg.dataset_id} transitions "
                f"have {self.transition_dim}: it was fit on other data"
            )
        self.discretizer = discretizer
        self.joined = all_joined

        # One flat token array: every episode followed by n_transitions stop transitions,
        # so any window that starts inside an episode can be sliced without bounds checks.
        L, td, stop = cfg.n_transitions, self.transition_dim, cfg.n_bins
        blocks, real, kept, starts, ep_end = [], [], [], [], []
        offset = 0
        for j in joined:
            n = len(j)
            blocks.append(discretizer.encode(j))
            blocks.append(np.full((L, td), stop, dtype=np.int64))
            real.append(np.arange(n + L) < n)  # inside the episode, not padding
            kept.append(np.arange(n + L) < cfg.max_path_length)  # time step < max_path_length
            starts.append(offset + np.arange(n - 1))
            ep_end.append(np.full(n - 1, offset + n - 1))
            offset += n + L
        self.tokens = torch.from_numpy(np.concatenate(blocks).astype(np.int64))
        self.real = torch.from_numpy(np.concatenate(real).astype(np.float32))
        self.kept = torch.from_numpy(np.concatenate(kept).astype(np.float32))
        self.starts = torch.from_numpy(np.concatenate(starts).astype(np.int64))
        if len(self.starts) == 0:
            raise DatasetError(f"{cfg.dataset_id}: every episode has one step; no windows")
        self._ep_end = torch.from_numpy(np.concatenate(ep_end).astype(np.int64))
        self._goal_tokens = None
        if cfg.goal_dims is not None:
            pad = np.zeros((L, self.observation_dim))
            obs = np.concatenate([np.r_[j[:, : self.observation_dim], pad] for j in joined])
            self._goal_tokens = torch.from_numpy(
                discretizer.encode(obs[:, cfg.goal_dims], dims=cfg.goal_dims)
            )
        self._window = torch.arange(L)

    @property
    def n_transitions(self) -> int:
        """Transitions in the data (one more per episode than there are windows)."""
        return len(self.joined)

    def __len__(self) -> int:
        """The number of windows."""
        return len(self.starts)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None):
        """Vectorised gather of windows ``index`` (faster than a DataLoader over items)."""
        rows = self.starts[index][:, None] + self._window  # (B, L)
        flat = self.tokens[rows].reshape(len(index), -1)
        mask = self.kept[rows].repeat_interleave(self.transition_dim, dim=1)
        out = [flat[:, :-1], flat[:, 1:], mask[:, :-1]]
        if self._goal_tokens is not None:
            hi = self._ep_end[index]
            if self.cfg.goal_sampling == "final":
                pick = hi
            else:
                lo = self.starts[index]
                u = torch.rand(len(index), generator=generator)
                pick = lo + (u * (hi - lo + 1).float()).long().clamp_max(hi - lo)
            goal = self._goal_tokens[pick]
            if self.cfg.goal_relative:  # relative to the window's first state
                first = self.tokens[self.starts[index]][:, self.cfg.goal_dims]
                goal = relative_goal_bins(goal, first, self.cfg.n_bins)
            out.append(goal)
        return tuple(out)
