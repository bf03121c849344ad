"""The datasets of the D4RL table: ours, or Minari's remote ones and mixtures of them.

Datasets are ours (``ttlib/<env>/<kind>-v0``, generated from SAC behaviour policies) or, with
``dataset_namespace: mujoco``, Minari's remote ``mujoco/<env>/<kind>-v0`` (see
:data:`REMOTE_SOURCES` for how D4RL's dataset names map onto them).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from ttlib.data import DataConfig, load_minari
from ttlib.experiments.runs import ensure_dataset


@contextlib.contextmanager
def quiet_c_output():
    """Silence what C code writes to stdout / stderr (MuJoCo warns about HalfCheetah's
    deprecated ``settotalmass`` each time it compiles the model); exceptions still propagate."""
    streams = [s for s in (sys.__stdout__, sys.__stderr__) if s is not None]
    for stream in (sys.stdout, sys.stderr, *streams):
        stream.flush()
    try:
        fds = sorted({s.fileno() for s in streams})
    except (OSError, ValueError):  # no real file descriptors: nothing to silence
        fds = []
    saved = [os.dup(fd) for fd in fds]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
        yield
    finally:
        for fd, copy in zip(fds, saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null)


# ------------------------------------------------------------------ datasets
# Minari's remote `mujoco` namespace has `medium`, `expert` and `simple` datasets per env, none
# of D4RL's mixtures. D4RL's medium-expert is the concatenation of its medium and expert data,
# so we rebuild it the same way from the two remote datasets. There is no replay-buffer
# dataset remotely (`simple` comes from a weaker policy, not from a replay buffer), so
# medium-replay has no remote counterpart and its rows are skipped with that reason.
REMOTE_SOURCES: dict[str, tuple[str, ...] | None] = {
    "medium": ("medium",),
    "expert": ("expert",),
    "medium-expert": ("medium", "expert"),
    "medium-replay": None,
}
REMOTE_VERSION = "v0"
MIXED_NAMESPACE = "ttlib-mujoco"  # local home of mixtures built from remote datasets


class DatasetUnavailable(LookupError):
    """A dataset of the table that the chosen namespace does not provide."""


def remote_ids(env: str, kind: str) -> list[str]:
    """The Minari ids behind D4RL's ``<env>-<kind>`` in the remote ``mujoco`` namespace."""
    if kind not in REMOTE_SOURCES:
        raise ValueError(f"unknown dataset kind {kind!r}; choose one of {list(REMOTE_SOURCES)}")
    sources = REMOTE_SOURCES[kind]
    if sources is None:
        raise DatasetUnavailable(
            f"Minari's mujoco namespace has no {kind!r} dataset (only medium, expert and "
            "simple); use dataset_namespace 'ttlib' for this row"
        )
    return [f"mujoco/{env}/{s}-{REMOTE_VERSION}" for s in sources]


def interleave(lists: Sequence[Sequence]) -> list:
    """a0 b0 a1 b1 ...: a prefix of the result holds about equal parts of every list."""
    out = []
    for i in range(max(map(len, lists), default=0)):
        out.extend(seq[i] for seq in lists if i < len(seq))
    return out


def mix_datasets(source_ids: Sequence[str], mixed_id: str, download: bool = False) -> str:
    """Write a local Minari dataset holding the episodes of all ``source_ids``, interleaved.

    Interleaving (instead of concatenating) keeps the mixture balanced when a run reads only
    its first ``max_transitions`` transitions.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    if mixed_id in minari.list_local_datasets():
        return mixed_id
    sources = [load_minari(s, download=download) for s in source_ids]
    episodes = interleave([list(ds.iterate_episodes()) for ds in sources])
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=list(ep.observations),
            actions=list(ep.actions),
            rewards=list(ep.rewards),
            terminations=list(ep.terminations),
            truncations=list(ep.truncations),
            infos={},
        )
        for i, ep in enumerate(episodes)
    ]
    minari.create_dataset_from_buffers(
        mixed_id,
        buffers,
        env=None,
        observation_space=sources[0].observation_space,
        action_space=sources[0].action_space,
        algorithm_name="mixture of " + ", ".join(source_ids),
        author="ttlib",
        author_email="ttlib@users.noreply.github.com",
        code_permalink="ttlib/experiments/d4rl_data.py",
        description=f"Episodes of {', '.join(source_ids)}, interleaved (D4RL-style mixture).",
    )
    return mixed_id


def dataset_config(env: str, kind: str, params: dict, discretizer: str = "quantile") -> DataConfig:
    """The data a row of the table trains on, generating or downloading it if needed.

    ``dataset_namespace: ttlib`` uses our generated ``ttlib/<env>/<kind>-v0`` (its size is
    ``dataset_transitions``); ``mujoco`` downloads Minari's datasets (needs network) and reads
    their first ``dataset_transitions`` transitions.
    """
    namespace = params["dataset_namespace"]
    transitions = int(params["dataset_transitions"])
    if namespace == "ttlib":  # ttlib/<env>/<kind>-v0, without MuJoCo's C-level output
        with quiet_c_output():
            did = ensure_dataset(env, kind, transitions, params["seed"])
        return DataConfig(did, discretizer)
    if namespace == "mujoco":
        ids = remote_ids(env, kind)
        if len(ids) == 1:
            load_minari(ids[0], download=True)
            did = ids[0]
        else:
            did = mix_datasets(ids, f"{MIXED_NAMESPACE}/{env}/{kind}-{REMOTE_VERSION}", True)
        return DataConfig(did, discretizer, max_transitions=transitions)
    raise ValueError(f"unknown dataset_namespace {namespace!r}; choose 'ttlib' or 'mujoco'")
