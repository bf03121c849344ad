"""How much memory beam-search planning needs, checked before any planning starts.

Beam search keeps every candidate of every episode as one row of a batch, so memory grows with
``episodes × beam_width × n_expand``. A setting that does not fit would otherwise run for a
while and then die from an out-of-memory error (or swap the machine to a standstill); the
check here refuses it up front, with the estimate and the limit in the message.

What is counted, for R = episodes × beam_width × n_expand rows (the widest batch):

* KV caches. The model preallocates keys and values for its whole block (goal prefix plus
  ``block_size`` tokens) whatever the context and horizon, since the window slides over
  longer plans. Every expansion makes an R-row cache from the E·W-row one and pruning
  copies it back into E·W rows, so both live together (briefly, or for the whole plan where
  spare buffers are kept for reuse); after a window jump the cache is rebuilt with R rows.
* One full-window forward pass over T tokens of R rows, run when the window jumps and its
  cache is rebuilt, next to the R-row cache it fills: per row, the logits and a copy of them
  (2 × T × (n_bins + 1)), the attention scores and their softmax (2 × heads × T², as the
  unfused CPU kernel holds them; fused GPU kernels need less) and ten hidden vectors per token
  (residual stream, layer norm, q/k/v, the MLP's 4× layer and its activation).
* The model's weights.

The peak is the weights plus the larger of the two phases. Everything is float32 unless
``bytes_per_element`` says otherwise. The cache part is exact (the same sizes the model
allocates); the pass is meant as an upper bound: on CPU its peak RSS measured 55-95 % of it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ttlib.errors import PlanningMemoryError  # noqa: F401  (re-exported)

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
    """Estimate the peak memory of planning ``n_episodes`` episodes at once.

    ``model_config`` is a :class:`ttlib.model.GPTConfig`, ``planner_config`` a
    :class:`ttlib.search.PlannerConfig` (only ``beam_width`` and ``n_expand`` matter: the
    cache covers the model's whole block, whatever the context and horizon).
    """
    from ttlib.kvcache import KVCache

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
    weights = bytes_per_element * _n_params(c)
    return PlanningMemory(
        rows=rows, cache=cache, kv_peak=kv_peak, window_pass=window, weights=weights
    )


def _n_params(c) -> int:
    """Parameters of a TrajectoryGPT with config ``c`` (counted, not built)."""
    E = c.n_embd
    per_block = 2 * 2 * E + (3 * E * E + 3 * E) + (E * E + E) + (4 * E * E + 4 * E)
    per_block += 4 * E * E + E
    goal = (c.n_bins * c.goal_dim + c.goal_dim) * E if c.goal_dim > 0 else 0
    head = c.transition_dim * (c.n_bins + 1) * E
    return c.vocab_size * E + c.block_size * E + goal + c.n_layer * per_block + 2 * E + head


def available_memory(device=None) -> int | None:
    """Bytes free now: on a CUDA device its free memory, else the system's available RAM
    (None where /proc/meminfo cannot be read)."""
    import torch

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
    """Raise :class:`PlanningMemoryError` if planning would need more than the limit.

    Returns the estimate when it fits. See :func:`memory_limit` for the default limit.
    """
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
