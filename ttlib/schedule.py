"""The learning rate of every training step (``TrainConfig.schedule``).

``"original"``, the default, is the original trainer's: linear warm-up over one epoch of
tokens, then a cosine over the next 19 epochs down to a floor, counted in the tokens the
original counts. ``"run_length"`` fits both to ``max_steps``. ``"constant"`` warms up over
``warmup_tokens`` (steps x batch x block) and then stays at ``lr``; it never reads
``max_steps``, so a finished run can be extended.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ttlib.train import TrainConfig

ORIGINAL_FINAL_EPOCHS = 20  # the original's final_tokens = 20 x warmup_tokens


class LRSchedule:
    """The learning rate of every step, and the tokens counted so far.

    The original counts each batch's targets that are not the stop token (masked ones
    included) and sets the rate *after* each optimiser step, so step k uses the count of steps
    0..k-1 and step 0 runs at the full rate. ``warmup_tokens`` = windows x block_size (one
    epoch of tokens, stop tokens included). The other schedules only keep the count.
    """

    def __init__(self, cfg: TrainConfig, n_windows: int, block_size: int, tokens: int = 0):
        self.cfg = cfg
        self.tokens_per_step = cfg.batch_size * block_size
        self.warmup_tokens = n_windows * block_size
        self.final_tokens = ORIGINAL_FINAL_EPOCHS * self.warmup_tokens
        self.tokens = tokens

    def lr(self, step: int) -> float:
        cfg, floor = self.cfg, self.cfg.min_lr_frac
        if cfg.schedule == "run_length":  # cosine from lr to floor * lr, ending at max_steps
            warmup = max(1, int(cfg.warmup_frac * cfg.max_steps))
            if step < warmup:
                return cfg.lr * (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, cfg.max_steps - warmup))
            return cfg.lr * (floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
        if cfg.schedule == "constant":
            warmup = math.ceil(cfg.warmup_tokens / self.tokens_per_step)
            return cfg.lr * min(1.0, (step + 1) / max(1, warmup))
        if step == 0:
            return cfg.lr
        # Progress is not clamped: past final_tokens the cosine rises again (the original's runs
        # of ~50 epochs go there).
        warmup, final = self.warmup_tokens, self.final_tokens
        if self.tokens < warmup:
            return cfg.lr * (self.tokens / max(1, warmup))
        progress = (self.tokens - warmup) / max(1, final - warmup)
        return cfg.lr * max(floor, 0.5 * (1.0 + math.cos(math.pi * progress)))

    def advance(self, n_tokens: int) -> None:
        """Add a batch's counted tokens (after its optimiser step)."""
        self.tokens += n_tokens
