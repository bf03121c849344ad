"""The original's training pipeline, kept as a reference: its dataset windows and its trainer's
learning rates, written from the behaviour of ``jannerm/trajectory-transformer``
(``datasets/sequence.py`` and ``utils/training.py``). ``tests/test_fidelity.py`` holds ttlib's
own pipeline against these, window for window and step for step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

from ttlib.interop.d4rl_hdf5 import qlearning_with_timeouts
from ttlib.interop.original import OriginalCheckpointError


def _segment(x: np.ndarray, done: np.ndarray, max_path_length: int):
    """The original's ``segment``: split rows on ``done``, zero-pad each path to
    ``max_path_length``; flags are True from each path's end on (however it ended)."""
    paths = [p for p in np.split(x, np.flatnonzero(done) + 1) if len(p)]
    lengths = [len(p) for p in paths]
    if max(lengths) > max_path_length:
        raise OriginalCheckpointError(
            f"a path has {max(lengths)} steps, more than max_path_length {max_path_length}"
        )
    padded = np.zeros((len(paths), max_path_length, x.shape[1]), dtype=x.dtype)
    flags = np.zeros((len(paths), max_path_length), dtype=bool)
    for i, p in enumerate(paths):
        padded[i, : len(p)] = p
        flags[i, len(p) :] = True
    return padded, flags, lengths


def penalised_paths(
    q: Mapping[str, np.ndarray], discount: float, penalty: float | None, max_path_length: int
):
    """The original's rewards and values, per path: (rewards, values, flags, lengths).

    The penalty goes on real terminals; paths are cut at terminals and time-outs alike and
    zero-padded to ``max_path_length`` (``flags`` True from each path's end on); V_t =
    sum_{k>=1} discount^(k-1) r_{t+k} is a float32·float64 sum over the padded rows, as the
    original computes it, so every value comes out bit for bit.
    """
    rewards = q["rewards"].copy()[:, None]
    if penalty is not None:
        rewards[q["realterminals"]] = penalty
    rewards_seg, flags, lengths = _segment(rewards, q["done"], max_path_length)
    discounts = (discount ** np.arange(max_path_length))[:, None]
    values_seg = np.zeros(rewards_seg.shape)
    for t in range(max_path_length):
        values_seg[:, t] = (rewards_seg[:, t + 1 :] * discounts[: -t - 1]).sum(axis=1)
    return rewards_seg, values_seg, flags, lengths


def original_windows(
    arrays: Mapping[str, np.ndarray],
    discretizer,
    n_bins: int,
    sequence_length: int = 10,
    max_path_length: int = 1000,
    discount: float = 0.99,
    penalty: float | None = -100.0,
    step: int = 1,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The items ``(X, Y, mask)`` of the original's ``DiscretizedDataset``, in its order.

    Step for step as the original: penalty on real terminals; paths cut at terminals and
    time-outs alike and zero-padded to ``max_path_length`` plus ``sequence_length - 1`` rows;
    V over the padded rewards; one window per path and start t < length - 1; every padded
    row becomes the stop token ``n_bins``; the mask drops transitions whose time index
    exceeds ``max_path_length - step`` and is cut as ``mask[:-1]`` (aligned with X).
    ``discretizer.encode`` stands in for the original's ``discretize``.
    """
    q = qlearning_with_timeouts(arrays)
    rewards_seg, values_seg, flags, lengths = penalised_paths(q, discount, penalty, max_path_length)
    joined = np.concatenate([q["observations"], q["actions"]], axis=-1)
    joined_seg, _, _ = _segment(joined, q["done"], max_path_length)
    joined_seg = np.concatenate([joined_seg, rewards_seg, values_seg], axis=-1)
    indices = [(p, i, i + sequence_length) for p, n in enumerate(lengths) for i in range(n - 1)]
    n_paths, _, dim = joined_seg.shape
    joined_seg = np.concatenate([joined_seg, np.zeros((n_paths, sequence_length - 1, dim))], 1)
    flags = np.concatenate([flags, np.ones((n_paths, sequence_length - 1), dtype=bool)], 1)

    items = []
    for p, a, b in indices:
        rows = joined_seg[p, a:b:step]
        ended = flags[p, a:b:step]
        tokens = discretizer.encode(rows)
        tokens[ended] = n_bins
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        mask = torch.ones(tokens.shape, dtype=torch.bool)
        mask[torch.arange(a, b, step) > max_path_length - step] = False
        tokens, mask = tokens.view(-1), mask.view(-1)
        items.append((tokens[:-1], tokens[1:], mask[:-1]))
    return items


def original_learning_rates(
    non_stop_targets: list[int],
    learning_rate: float,
    warmup_tokens: int,
    final_tokens: int,
) -> list[float]:
    """The rate each step of the original's trainer runs at, given each batch's count of
    targets that are not the stop token.

    The optimiser is built with ``learning_rate``; after every step the trainer adds the
    batch's count and sets the rate for the next step: linear warm-up, then
    ``max(0.1, cos)`` with progress never clamped.
    """
    lr, n_tokens, out = learning_rate, 0, []
    for count in non_stop_targets:
        out.append(lr)
        n_tokens += count
        if n_tokens < warmup_tokens:
            lr_mult = float(n_tokens) / float(max(1, warmup_tokens))
        else:
            progress = float(n_tokens - warmup_tokens) / float(max(1, final_tokens - warmup_tokens))
            lr_mult = max(0.1, 0.5 * (1.0 + math.cos(math.pi * progress)))
        lr = learning_rate * lr_mult
    return out
