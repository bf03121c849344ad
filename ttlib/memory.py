"""How much memory beam-search planning needs, checked before any planning starts.

Every candidate of every episode is a row of one batch, so memory grows with R = episodes ×
beam_width × n_expand. A setting that does not fit would run for a while and then die (or swap
the machine to a standstill); :func:`check_planning_memory` refuses it up front. Counted, in
``bytes_per_element`` (float32): the KV caches (the whole block is preallocated; expanding and
pruning keep an R-row and an E·W-row cache together), one full-window forward pass of R rows
when the window jumps (logits and a copy, attention scores and softmax as the unfused CPU kernel
holds them, ten hidden vectors per token), and the weights. The cache part is exact; the pass
is an upper bound (on CPU its peak RSS measured 55-95 % of it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from ttlib.errors import PlanningMemoryError  # noqa: F401  (re-exported)
from ttlib.kvcache import KVCache
from ttlib.model import TrajectoryGPT

# The share of the memory available now that a plan may take, unless a limit is given or set
# in TTLIB_MEMORY_LIMIT (bytes, or a size such as "8G", "500M").
DEFAULT_FRACTION = 0.75
LIMIT_ENV = "TTLIB_MEMORY_LIMIT"

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclass(frozen=True)
class PlanningMemory:
    """Estimated peak bytes of one beam-search plan (all episodes planned together)."""

    rows: int  # episodes × beam_width × n_expand
    cache: int  # one KV cache of all rows
    kv_peak: int  # caches while beams are expanded or pruned (R-row and E·W-row copies)
    window_pass: int  # activations of one full-window forward pass
    weights: int

    @property
    def total(self) -> int:
        return self.weights + max(self.kv_peak, self.cache + self.window_pass)

    def describe(self) -> str:
        return (
            f"{format_bytes(self.total)} for {self.rows} rows (KV cache "
            f"{format_bytes(self.cache)}, {format_bytes(self.kv_peak)} while beams are copied; "
            f"full-window pass {format_bytes(self.window_pass)}; weights "
            f"{format_bytes(self.weights)})"
        )


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def parse_bytes(text: str | int) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"`` or a plain number of bytes, as an int."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if m is None:
        raise ValueError(f"cannot read {text!r} as a memory size; write e.g. 8G, 512M or 1000000")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def estimate_planning_memory(
    model_config, planner_config, n_episodes: int = 1, bytes_per_element: int = 4
) -> PlanningMemory:
    """The peak memory of planning ``n_episodes`` at once (of the planner config only
    ``beam_width`` and ``n_expand`` matter: the cache covers the model's whole block)."""
    c = model_config
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    kept = n_episodes * planner_config.beam_width
    rows = kept * planner_config.n_expand
    cache = KVCache.bytes_needed(c, rows, bytes_per_element)
    kv_peak = cache + KVCache.bytes_needed(c, kept, bytes_per_element)
    T = c.goal_dim + c.block_size
    window = (
        rows
        * bytes_per_element
        * (
            2 * c.block_size * (c.n_bins + 1)  # logits, and their copy
            + 2 * c.n_head * T * T  # attention scores and their softmax
            + 10 * T * c.n_embd  # hidden vectors of every token
        )
    )
    with torch.device("meta"):  # the model's shapes, no memory
        weights = bytes_per_element * TrajectoryGPT(c).n_params
    return PlanningMemory(rows, cache, kv_peak, window, weights)


def available_memory(device=None) -> int | None:
    """Bytes free now on a CUDA ``device``, else available RAM (None if unreadable)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_limit(limit: int | str | None = None, device=None) -> int | None:
    """The limit to check against: ``limit`` if given, else ``$TTLIB_MEMORY_LIMIT``, else
    ``DEFAULT_FRACTION`` of the memory available now (None if that cannot be read)."""
    if limit is None:
        limit = os.environ.get(LIMIT_ENV) or None
    if limit is not None:
        return parse_bytes(limit)
    free = available_memory(device)
    return None if free is None else int(DEFAULT_FRACTION * free)


def check_planning_memory(
    model_config,
    planner_config,
    n_episodes: int = 1,
    limit: int | str | None = None,
    device=None,
) -> PlanningMemory:
    """The estimate, or a :class:`PlanningMemoryError` if it is above :func:`memory_limit`."""
    estimate = estimate_planning_memory(model_config, planner_config, n_episodes)
    cap = memory_limit(limit, device)
    if cap is not None and estimate.total > cap:
        p = planner_config
        raise PlanningMemoryError(
            f"planning {n_episodes} episode(s) with beam_width {p.beam_width} × n_expand "
            f"{p.n_expand} needs about {estimate.describe()}, above the limit of "
            f"{format_bytes(cap)}; plan fewer episodes at once or use a smaller beam, or raise "
            f"the limit ({LIMIT_ENV}=16G, or --memory-limit for `ttlib plan`)"
        )
    return estimate
