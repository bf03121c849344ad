"""SB3 replay buffers as flat, episode-ordered transitions: the source of medium-replay.

:func:`replay_transitions` reads a buffer up to a step, :func:`cut_transitions` cuts a longer
copy (the committed replay prefix) at a step, and :func:`compress_transitions` fits the result
into the budget of a committed file; :func:`grow_buffer` makes room when a run is extended.
"""

from __future__ import annotations

import numpy as np


def replay_transitions(model, n_steps: int) -> dict[str, np.ndarray]:
    """The first `n_steps` transitions of an SB3 replay buffer as flat episode-ordered arrays.

    Episodes end where SB3 stored done; a time-out there is a truncation, anything else a true
    termination. The next observation is kept only at episode ends (`final_observations`): inside
    an episode it is the following row's observation.
    """
    rb = model.replay_buffer
    n = min(n_steps, rb.buffer_size if rb.full else rb.pos)
    done = rb.dones[:n, 0] > 0
    timeout = rb.timeouts[:n, 0] > 0
    terminated = done & ~timeout
    truncated = done & timeout
    truncated[n - 1] |= not done[n - 1]  # the episode cut by the medium checkpoint
    ends = np.flatnonzero(terminated | truncated)
    return {
        "observations": rb.observations[:n, 0],
        "actions": rb.actions[:n, 0],
        "rewards": rb.rewards[:n, 0].astype(np.float32),
        "terminations": terminated,
        "truncations": truncated,
        "final_observations": rb.next_observations[ends, 0],
    }


def compress_transitions(
    data: dict[str, np.ndarray], budget_mb: float, seed: int
) -> dict[str, np.ndarray]:
    """float16 observations/actions; drop whole episodes at random if still over budget."""
    ends = np.flatnonzero(data["terminations"] | data["truncations"])
    episode_of_row = np.searchsorted(ends, np.arange(len(data["rewards"])))
    row_bytes = 2 * (data["observations"].shape[1] + data["actions"].shape[1]) + 4 + 2
    keep_frac = min(1.0, budget_mb * 1e6 / (row_bytes * len(data["rewards"])))
    keep = np.random.default_rng(seed).random(len(ends)) < keep_frac
    if keep_frac >= 1.0:
        keep[:] = True
    rows = keep[episode_of_row]
    out = {k: v[rows] for k, v in data.items() if k != "final_observations"}
    out["final_observations"] = data["final_observations"][keep]
    for k in ("observations", "actions", "final_observations"):
        out[k] = out[k].astype(np.float16)
    out["kept_episode_fraction"] = np.float32(keep.mean())
    return out


def cut_transitions(data: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first `n` rows of `replay_transitions` output, the episode running at row n - 1
    closed as a truncation (its final observation is row n's observation)."""
    ends = np.flatnonzero(data["terminations"] | data["truncations"])
    out = {k: v[:n].copy() for k, v in data.items() if k != "final_observations"}
    kept = ends < n
    final = data["final_observations"][kept]
    if not (out["terminations"][-1] or out["truncations"][-1]):
        out["truncations"][-1] = True
        final = np.concatenate([final, data["observations"][n : n + 1]])
    out["final_observations"] = final
    return out


def grow_buffer(model, size: int) -> None:
    """Give the SB3 replay buffer room for `size` transitions (when a run is extended)."""
    from stable_baselines3.common.buffers import ReplayBuffer

    old = model.replay_buffer
    new = ReplayBuffer(size, old.observation_space, old.action_space, "cpu", old.n_envs)
    n = old.buffer_size if old.full else old.pos
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        getattr(new, name)[:n] = getattr(old, name)[:n]
    new.pos = n
    model.replay_buffer = new
    model.buffer_size = size
