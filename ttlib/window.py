"""The model's view of a growing token sequence, for the planner and the prediction experiment."""

from __future__ import annotations

import torch


class Window:
    """Token history of every row and the model's view of it (cached or recomputed).

    When a new token would not fit the model's block, the window jumps forward to s^0 of the
    transition ``keep`` transitions before the current one and the cache is rebuilt with one
    forward pass; so the model sees between ``keep`` and ``n_transitions - 1`` past
    transitions. The original re-runs a window cropped to ``keep`` transitions for *every*
    token; ours is never shorter and slides in jumps. ``use_cache=False`` recomputes the same
    windows for every token: a slow reference that must give the same logits.
    """

    def __init__(self, model, n_rows: int, goal: torch.Tensor | None, keep: int, use_cache: bool):
        c = model.config
        self.model = model
        self.td = c.transition_dim
        self.limit = c.block_size
        self.keep = keep
        self.use_cache = use_cache
        self.goal = goal
        device = next(model.parameters()).device
        self.seq = torch.empty((n_rows, 0), dtype=torch.long, device=device)
        self.start = 0  # trajectory index where the model's window begins
        self.cache = None

    def _move_start(self, length: int) -> None:
        current = (length - 1) // self.td * self.td  # s^0 of the transition being written
        for k in range(self.keep, -1, -1):
            start = current - k * self.td
            if start >= 0 and length - start <= self.limit:
                self.start = start
                self.cache = None
                return
        raise ValueError(
            f"a single transition ({self.td} tokens) does not fit the model's block "
            f"({self.limit} tokens)"
        )

    def append(self, tokens: torch.Tensor) -> None:
        """Add tokens (R, n) to the history without running the model (the plan's last V)."""
        self.seq = torch.cat([self.seq, tokens], dim=1)

    def feed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append tokens (R, n) and return the logits (R, K+1) that predict the next token."""
        self.append(tokens)
        length = self.seq.shape[1]
        if length - self.start > self.limit:
            self._move_start(length)
        if self.use_cache and self.cache is not None:
            logits, _ = self.model(tokens, cache=self.cache)
        else:
            if self.use_cache:
                self.cache = self.model.new_cache(self.seq.shape[0])
            logits, _ = self.model(self.seq[:, self.start :], goal=self.goal, cache=self.cache)
        return logits[:, -1]

    def _rows(self, rows: torch.Tensor) -> None:
        self.seq = self.seq[rows]
        if self.goal is not None:
            self.goal = self.goal[rows]

    def share(self, rows: torch.Tensor, copies: int) -> None:
        """Repeat every row ``copies`` times (``rows``: each index ``copies`` times in a row),
        the cache keeping what they share once (``KVCache.share_prefix``): an episode's beams
        read its context once, until the window jumps and the cache is rebuilt per row."""
        self._rows(rows)
        if self.cache is not None:
            self.cache.share_prefix(copies)

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) rows, in the history, the goal and the cache alike."""
        self._rows(rows)
        if self.cache is not None:
            self.cache.select(rows)
