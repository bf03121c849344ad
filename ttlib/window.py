"""The model's view of a growing token sequence, for the planner and the prediction experiment.

Decoding feeds one token at a time through the model's KV cache; when the sequence outgrows
the model's block, the window jumps forward and the cache is rebuilt (see :class:`Window`).
"""

from __future__ import annotations

import torch


class Window:
    """Token history of every row and the model's view of it (cached or recomputed).

    The model sees at most ``block_size`` trajectory tokens. When a new token would not fit,
    the window jumps forward to start at s^0 of the transition ``keep`` transitions before the
    current one, and the cache is rebuilt with one batched forward pass of that window; then
    decoding continues one token at a time. So the model sees between ``keep`` and
    ``n_transitions - 1`` past transitions. The original planner instead re-runs the model on a
    window cropped to ``max_context_transitions·td - 1`` tokens for *every* token (a sliding
    window of 4-5 transitions, no cache); our window is never shorter and slides in jumps.
    With ``use_cache=False`` the same windows are recomputed in full for every token: a slow
    reference that must give the same logits.
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
        """Repeat every row ``copies`` times (``rows`` says so: each index ``copies`` times in
        a row); the cache keeps what they share once per row.

        For the first expansion of the plan, when every row is an episode's context: the
        copies are the beams of that episode, and decoding reads the context's keys and
        values once per episode (``KVCache.share_prefix``). Only single tokens are fed after
        this, until the window jumps and the cache is rebuilt (per row, nothing shared).
        """
        self._rows(rows)
        if self.cache is not None:
            self.cache.share_prefix(copies)

    def select(self, rows: torch.Tensor) -> None:
        """Keep (or repeat) rows, in the history, the goal and the cache alike."""
        self._rows(rows)
        if self.cache is not None:
            self.cache.select(rows)
