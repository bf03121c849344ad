"""The original Trajectory Transformer code's checkpoints in ttlib, and a faithful reference copy.

Two jobs, both written from the behaviour of ``jannerm/trajectory-transformer`` (see
``reference/paper-facts.md`` §1b–1e and §5), without importing that package:

1. **Import.** :func:`load_original_checkpoint` reads a run directory of the original code
   (``state_{E}.pt``, ``model_config.pkl``, ``data_config.pkl``) into a :class:`TrajectoryGPT`.
   The pickles are read by a restricted unpickler that only knows the original's ``Config``
   class and a handful of class *names* (never code). The original does not save its
   discretizer, so it is rebuilt from the D4RL-format HDF5 file the model was trained on,
   step for step as the original builds it (:func:`rebuild_original_discretizer`).

2. **Reference.** :class:`OriginalGPT` and :func:`original_beam_plan` re-implement the
   original model (separate key/query/value layers, a causal-mask buffer with the value
   columns zeroed, one output layer per transition dimension) and planner (a full forward pass
   per sampled token over a sliding window); :func:`original_windows` and
   :func:`original_learning_rates` its training windows and learning-rate schedule. They are
   the yardstick for the equivalence tests and the speed benchmarks in ``benchmarks/``.

How ttlib's cached planner differs on long plans. The original crops its input before *every*
forward pass to the last ``max_context_transitions·td - 1`` tokens (whole transitions, so the
window starts at s^0, positions re-based to 0). With the paper's 5 context transitions the
prefix (5·td + obs_dim tokens) is already too long, so even the first token is predicted from
only 4 past transitions, and the window then slides by one transition at a time: every token
sees the last 4 complete transitions plus the current partial one. Cached keys keep the
positions they were computed at, so ttlib's planner (``ttlib.search``) cannot slide like that:
it keeps one window of up to the training block (10 transitions - 1 token) and, when the next
token does not fit, jumps to a window starting ``max_context_transitions`` transitions back and
re-encodes it in one batched pass. With a full context each token sees 5 to 9 past transitions,
never fewer than the original's 4. When ``n_context + horizon <= max_context_transitions`` the
original never crops and both compute exactly the same thing (tested for context 2, horizon
3); ``benchmarks/README.md`` measures how often the plans agree at the paper's horizon of 15.
"""

from __future__ import annotations

import glob
import math
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ttlib.d4rl_hdf5 import observation_keep, qlearning_with_timeouts, read_d4rl_hdf5
from ttlib.discretize import QuantileDiscretizer
from ttlib.model import GPTConfig, TrajectoryGPT

VALUE_PLACEHOLDER = 1e6  # what the original writes for V in context transitions
REWARD_DIM = VALUE_DIM = 1


class OriginalCheckpointError(ValueError):
    """A run directory or file of the original code that cannot be imported, and why."""


# =============================================================== pickled configs
@dataclass(frozen=True)
class OriginalClass:
    """Stands in for a class the original pickled by reference (e.g. its ``GPT``)."""

    module: str
    name: str

    def __repr__(self) -> str:
        return f"<original {self.module}.{self.name}>"


class OriginalConfig:
    """Stands in for ``trajectory.utils.config.Config``: the target class and its kwargs."""

    def __init__(self, _class: OriginalClass | None = None, **kwargs):
        self._class = _class
        self._dict = dict(kwargs)

    def __setstate__(self, state):
        if not isinstance(state, dict) or not set(state) <= {"_class", "_dict"}:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise pickle.UnpicklingError(f"unexpected Config state {keys}")
        self._class = state.get("_class")
        self._dict = dict(state.get("_dict", {}))

    @property
    def class_name(self) -> str:
        return self._class.name if isinstance(self._class, OriginalClass) else str(self._class)

    def __getitem__(self, key):
        return self._dict[key]

    def get(self, key, default=None):
        return self._dict.get(key, default)

    def to_dict(self) -> dict:
        return dict(self._dict)

    def __repr__(self) -> str:
        return f"OriginalConfig({self.class_name}, {self._dict})"


# The only globals a config pickle of the original may name. Classes become OriginalClass
# markers, so unpickling never imports or runs code from the original package.
_KNOWN_CLASSES = {
    ("trajectory.models.transformers", "GPT"),
    ("trajectory.models.transformers", "ConditionalGPT"),
    ("trajectory.datasets.sequence", "SequenceDataset"),
    ("trajectory.datasets.sequence", "DiscretizedDataset"),
    ("trajectory.datasets.sequence", "GoalDataset"),
    ("trajectory.utils.training", "Trainer"),
}


def _reconstruct(cls, base, state):
    """``copyreg._reconstructor`` for protocol-0/1 pickles, for the Config stand-in only."""
    if cls is not OriginalConfig or base is not object or state is not None:
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r} from {base!r}")
    return OriginalConfig.__new__(OriginalConfig)


class _ConfigUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("trajectory.utils.config", "Config"):
            return OriginalConfig
        if (module, name) in _KNOWN_CLASSES:
            return OriginalClass(module, name)
        # protocol 0/1 pickles name these two (Python 2 spellings included)
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _reconstruct
        if module in ("builtins", "__builtin__") and name == "object":
            return object
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from an original config pickle: only "
            "trajectory.utils.config.Config and the model/dataset/trainer class names are allowed"
        )


def load_original_config(path: str | Path) -> OriginalConfig:
    """Read ``model_config.pkl`` / ``data_config.pkl`` without the original package."""
    path = Path(path)
    if not path.exists():
        raise OriginalCheckpointError(f"no config pickle at {path}")
    with open(path, "rb") as f:
        try:
            cfg = _ConfigUnpickler(f).load()
        except Exception as err:  # malformed or refused: any failure means "not importable"
            raise OriginalCheckpointError(f"{path}: {type(err).__name__}: {err}") from err
    if not isinstance(cfg, OriginalConfig):
        raise OriginalCheckpointError(f"{path} holds a {type(cfg).__name__}, not a Config")
    return cfg


# ============================================================== reference model
@dataclass
class OriginalGPTConfig:
    """The kwargs the original stores in ``model_config.pkl`` (``vocab_size`` = bins N)."""

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    observation_dim: int
    action_dim: int
    transition_dim: int
    action_weight: float = 5.0
    reward_weight: float = 1.0
    value_weight: float = 1.0
    embd_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1

    @classmethod
    def from_kwargs(cls, kwargs: Mapping) -> OriginalGPTConfig:
        names = {f.name for f in fields(cls)}
        missing = [n for n in names if n not in kwargs and n not in _GPT_DEFAULTS]
        if missing:
            raise OriginalCheckpointError(f"model config lacks {sorted(missing)}")
        return cls(**{k: v for k, v in kwargs.items() if k in names})

    @classmethod
    def like(cls, config: GPTConfig) -> OriginalGPTConfig:
        """The original-code config of a model shaped like ttlib's ``config``."""
        if config.goal_dim:
            raise ValueError("goal-conditioned models have no original GPT counterpart")
        p = config.dropout
        return cls(
            vocab_size=config.n_bins,
            block_size=config.block_size,
            n_layer=config.n_layer,
            n_head=config.n_head,
            n_embd=config.n_embd,
            observation_dim=config.observation_dim,
            action_dim=config.action_dim,
            transition_dim=config.transition_dim,
            action_weight=config.action_weight,
            reward_weight=config.reward_weight,
            value_weight=config.value_weight,
            embd_pdrop=p,
            resid_pdrop=p,
            attn_pdrop=p,
        )


_GPT_DEFAULTS = {
    "action_weight",
    "reward_weight",
    "value_weight",
    "embd_pdrop",
    "resid_pdrop",
    "attn_pdrop",
}


class _OriginalAttention(nn.Module):
    """Separate key / query / value layers and a stored causal mask, as the original has."""

    def __init__(self, c: OriginalGPTConfig):
        super().__init__()
        self.key = nn.Linear(c.n_embd, c.n_embd)
        self.query = nn.Linear(c.n_embd, c.n_embd)
        self.value = nn.Linear(c.n_embd, c.n_embd)
        self.proj = nn.Linear(c.n_embd, c.n_embd)
        self.attn_drop = nn.Dropout(c.attn_pdrop)
        self.resid_drop = nn.Dropout(c.resid_pdrop)
        mask = torch.tril(torch.ones(c.block_size, c.block_size))
        mask[:, c.transition_dim - 1 :: c.transition_dim] = 0  # no query sees a value token
        self.register_buffer("mask", mask.view(1, 1, c.block_size, c.block_size))
        self.n_head = c.n_head

    def forward(self, x):
        B, T, C = x.shape
        h = self.n_head

        def heads(layer):
            return layer(x).view(B, T, h, C // h).transpose(1, 2)

        q, k, v = heads(self.query), heads(self.key), heads(self.value)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf")).softmax(-1)
        y = self.attn_drop(att) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class _OriginalBlock(nn.Module):
    def __init__(self, c: OriginalGPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(c.n_embd)
        self.ln2 = nn.LayerNorm(c.n_embd)
        self.attn = _OriginalAttention(c)
        self.mlp = nn.Sequential(
            nn.Linear(c.n_embd, 4 * c.n_embd),
            nn.GELU(),
            nn.Linear(4 * c.n_embd, c.n_embd),
            nn.Dropout(c.resid_pdrop),
        )

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class EinLinear(nn.Module):
    """``n_models`` bias-free linear layers applied side by side: weight [n, out, in]."""

    def __init__(self, n_models: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_models, out_features, in_features))
        for w in self.weight.data:
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    def forward(self, x):  # x: [batch, n_models, in] -> [batch, n_models, out]
        return torch.einsum("noi,bni->bno", self.weight, x)


class OriginalGPT(nn.Module):
    """The original GPT, module for module, so its ``state_dict`` has the original's keys.

    Forward: raw bins (B, T) → logits (B, T, N+1). Positions are always 0..T-1 (the planner
    re-bases them by cropping); the head pads T to whole transitions and applies head e at
    positions t % transition_dim == e (the original's ``pad_to_full_observation``).
    """

    def __init__(self, config: OriginalGPTConfig):
        super().__init__()
        c = self.config = config
        if c.transition_dim != c.observation_dim + c.action_dim + 2:
            raise ValueError(
                f"transition_dim {c.transition_dim} != observation_dim + action_dim + 2"
            )
        self.tok_emb = nn.Embedding(c.vocab_size * c.transition_dim + 1, c.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, c.block_size, c.n_embd))
        self.drop = nn.Dropout(c.embd_pdrop)
        self.blocks = nn.Sequential(*[_OriginalBlock(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.head = EinLinear(c.transition_dim, c.n_embd, c.vocab_size + 1)
        self.vocab_size = c.vocab_size
        self.stop_token = c.vocab_size * c.transition_dim
        self.block_size = c.block_size
        self.transition_dim = c.transition_dim
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_block_size(self) -> int:
        return self.block_size

    def offset_tokens(self, idx: torch.Tensor) -> torch.Tensor:
        td, n = self.transition_dim, self.vocab_size
        dim = torch.arange(idx.shape[1], device=idx.device) % td
        out = idx + dim * n
        out[idx == n] = self.stop_token
        return out

    def pad_to_full_observation(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        b, t, e = x.shape
        n_pad = (self.transition_dim - t % self.transition_dim) % self.transition_dim
        x = torch.cat([x, x.new_zeros(b, n_pad, e)], dim=1)
        return x.view(-1, self.transition_dim, e), n_pad

    def forward(self, idx, targets=None, mask=None):
        b, t = idx.shape
        if t > self.block_size:
            raise ValueError(f"{t} tokens exceed block_size {self.block_size}")
        x = self.drop(self.tok_emb(self.offset_tokens(idx)) + self.pos_emb[:, :t])
        x = self.ln_f(self.blocks(x))
        x_pad, n_pad = self.pad_to_full_observation(x)
        logits = self.head(x_pad).reshape(b, t + n_pad, self.vocab_size + 1)[:, :t]
        if targets is None:
            return logits, None
        c = self.config
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
        )
        n_states = -(-t // c.transition_dim)
        w = torch.cat(
            [
                torch.ones(c.observation_dim, device=idx.device),
                torch.full((c.action_dim,), float(c.action_weight), device=idx.device),
                torch.full((1,), float(c.reward_weight), device=idx.device),
                torch.full((1,), float(c.value_weight), device=idx.device),
            ]
        ).repeat(n_states)[1 : t + 1]
        loss = loss * w.repeat(b)
        m = torch.ones_like(loss) if mask is None else mask.reshape(-1).to(loss.dtype)
        return logits, (loss * m).mean()


# ======================================================== weights: original <-> ttlib
def ttlib_config_from_original(c: OriginalGPTConfig) -> GPTConfig:
    """The ttlib config of an original model (block = n_transitions * td - 1 must hold)."""
    n_transitions, rem = divmod(c.block_size + 1, c.transition_dim)
    if rem:
        raise OriginalCheckpointError(
            f"block_size {c.block_size} is not a whole number of {c.transition_dim}-token "
            "transitions minus one; goal-conditioned (ConditionalGPT) runs are not supported"
        )
    pdrops = {c.embd_pdrop, c.resid_pdrop, c.attn_pdrop}
    return GPTConfig(
        observation_dim=c.observation_dim,
        action_dim=c.action_dim,
        n_bins=c.vocab_size,
        n_transitions=n_transitions,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        dropout=max(pdrops),  # ttlib has one rate; the three are equal in every original config
        action_weight=float(c.action_weight),
        reward_weight=float(c.reward_weight),
        value_weight=float(c.value_weight),
    )


def convert_original_state_dict(state: Mapping[str, torch.Tensor], config: GPTConfig) -> dict:
    """Original GPT ``state_dict`` → TrajectoryGPT ``state_dict``.

    key/query/value are stacked into ``qkv`` in the order (query, key, value), which is how
    ttlib splits it. Each layer's stored ``attn.mask`` is checked against ttlib's own causal +
    value mask and then dropped (ttlib builds its mask on the fly).
    """
    state = dict(state)
    ref = TrajectoryGPT.attention_mask
    allowed = ref(_MaskHost(config), 0, config.block_size).float()
    out: dict[str, torch.Tensor] = {}
    for i in range(config.n_layer):
        p = f"blocks.{i}.attn."
        mask = state.pop(p + "mask", None)
        if mask is None:
            raise OriginalCheckpointError(f"state dict lacks {p}mask")
        if tuple(mask.shape[-2:]) != (config.block_size, config.block_size) or not torch.equal(
            mask.reshape(config.block_size, config.block_size).float(), allowed
        ):
            raise OriginalCheckpointError(
                f"{p}mask is not the causal mask with value columns zeroed that ttlib uses"
            )
        for kind in ("weight", "bias"):
            parts = [state.pop(f"{p}{name}.{kind}") for name in ("query", "key", "value")]
            out[f"{p}qkv.{kind}"] = torch.cat(parts, dim=0)
    out["head"] = state.pop("head.weight")
    out.update(state)  # tok_emb, pos_emb, ln*, attn.proj, mlp.*: same names and shapes
    return out


def original_state_dict_from_ttlib(model: TrajectoryGPT) -> dict:
    """TrajectoryGPT weights in the original's layout (the inverse of the conversion)."""
    c = model.config
    ref = OriginalGPT(OriginalGPTConfig.like(c))
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach().clone()
        if name.endswith("attn.qkv.weight") or name.endswith("attn.qkv.bias"):
            stem, kind = name.rsplit(".qkv.", 1)
            for part, piece in zip(("query", "key", "value"), t.split(c.n_embd, 0), strict=True):
                out[f"{stem}.{part}.{kind}"] = piece.clone()
        elif name == "head":
            out["head.weight"] = t
        else:
            out[name] = t
    for i in range(c.n_layer):
        out[f"blocks.{i}.attn.mask"] = ref.blocks[i].attn.mask.clone()
    return out


def original_from_ttlib(model: TrajectoryGPT) -> OriginalGPT:
    """A reference :class:`OriginalGPT` holding the same weights as ``model`` (eval mode)."""
    ref = OriginalGPT(OriginalGPTConfig.like(model.config))
    ref.load_state_dict(original_state_dict_from_ttlib(model), strict=True)
    p = next(model.parameters())
    return ref.to(device=p.device, dtype=p.dtype).eval()


def ttlib_from_original(ref: OriginalGPT) -> TrajectoryGPT:
    """A :class:`TrajectoryGPT` holding the same weights as the reference model."""
    cfg = ttlib_config_from_original(ref.config)
    model = TrajectoryGPT(cfg)
    model.load_state_dict(convert_original_state_dict(ref.state_dict(), cfg), strict=True)
    return model.eval()


class _MaskHost:
    """Just enough of a TrajectoryGPT to call ``attention_mask`` without building one."""

    def __init__(self, config: GPTConfig):
        self.config = config


# ============================================================ discretizer rebuild
class OriginalQuantileDiscretizer(QuantileDiscretizer):
    """The original's quantile bins: ``thresholds = sort(x)[::ceil(n/N)]`` plus the maximum.

    That slicing yields ceil(n / ceil(n/N)) order statistics, which is N for any n >= N·(N-1)
    (every real D4RL dataset) but fewer for small data: then there are M < N bins. The raw
    thresholds (M+1 rows) are kept in ``thresholds``; ``edges`` (N+1 per dimension, as ttlib
    expects) repeat the maximum, so decoding any id >= M gives the maximum. Encoding follows
    the original exactly: the largest i with x >= threshold[i], 0 below the minimum, *M+1*
    (the number of thresholds) at or above the maximum, then clipped to [0, N-1]. (With
    M < N the original then fails when it reconstructs or plans; ttlib decodes to the maximum.)
    """

    def __init__(self, n_bins: int = 100):
        super().__init__(n_bins)
        self.thresholds: np.ndarray | None = None  # (M+1, D), as the original stores them

    def _edges(self, x: np.ndarray) -> np.ndarray:
        step = int(np.ceil(len(x) / self.n_bins))
        thresholds = np.concatenate([np.sort(x, axis=0)[::step], x.max(axis=0, keepdims=True)])
        return self._set_thresholds(thresholds)

    def _set_thresholds(self, thresholds: np.ndarray) -> np.ndarray:
        thresholds = np.asarray(thresholds, dtype=np.float64)
        if thresholds.ndim != 2 or not 2 <= len(thresholds) <= self.n_bins + 1:
            raise ValueError(
                f"expected (M+1, D) thresholds with 1 <= M <= {self.n_bins}, got {thresholds.shape}"
            )
        self.thresholds = thresholds
        pad = np.repeat(thresholds[-1:], self.n_bins + 1 - len(thresholds), axis=0)
        return np.concatenate([thresholds, pad]).T.copy()

    @classmethod
    def from_thresholds(
        cls, thresholds: np.ndarray, n_bins: int, data: np.ndarray | None = None
    ) -> OriginalQuantileDiscretizer:
        """From stored thresholds; ``data`` (optional) fills the per-bin means."""
        disc = cls(n_bins)
        disc.edges = disc._set_thresholds(thresholds)
        disc.bin_means = disc.centres
        if data is not None:
            ids = disc.encode(data)
            for d in range(ids.shape[1]):
                counts = np.bincount(ids[:, d], minlength=n_bins)
                sums = np.bincount(ids[:, d], weights=data[:, d], minlength=n_bins)
                disc.bin_means[d] = np.where(
                    counts > 0, sums / np.maximum(counts, 1), disc.bin_means[d]
                )
        return disc

    @property
    def n_real_bins(self) -> int:
        """M: the bins the thresholds define (N except for small datasets)."""
        return len(self._check_thresholds()) - 1

    def _check_thresholds(self) -> np.ndarray:
        if self.thresholds is None:
            raise RuntimeError("OriginalQuantileDiscretizer is not fitted")
        return self.thresholds

    def encode(self, x, dims=None) -> np.ndarray:
        thr = self._check_thresholds()
        if dims is not None:
            thr = thr[:, dims]
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != thr.shape[1]:
            raise ValueError(f"expected {thr.shape[1]} dimensions, got {x.shape[-1]}")
        flat = x.reshape(-1, thr.shape[1])
        ids = np.empty(flat.shape, dtype=np.int64)
        for d in range(thr.shape[1]):
            ids[:, d] = np.searchsorted(thr[:, d], flat[:, d], side="right") - 1
        n_thr = len(thr)
        ids[ids == n_thr - 1] = n_thr  # at/above every threshold: the original's "all true" case
        return np.clip(ids, 0, self.n_bins - 1).reshape(x.shape)


def original_transitions(
    arrays: Mapping[str, np.ndarray],
    discount: float = 0.99,
    penalty: float | None = -100.0,
    max_path_length: int = 1000,
    env_name: str | None = None,
) -> tuple[np.ndarray, list[int]]:
    """The original's ``joined_raw`` [s, a, r, V] (float64) and its episode lengths.

    Same steps and dtypes as the original: drop the file's last row, penalty on real
    terminals, split on terminals|timeouts, zero-pad each episode to ``max_path_length``, and
    V_t = sum_{k>=1} discount^(k-1) r_{t+k} as a float32·float64 sum over the padded rows, so
    the thresholds come out bit for bit.
    """
    from ttlib.d4rl_hdf5 import episode_bounds

    q = qlearning_with_timeouts(arrays)
    obs = q["observations"]
    keep = observation_keep(env_name)
    if keep is not None:
        obs = obs[:, :keep]
    rewards = q["rewards"].copy()[:, None]
    if penalty is not None:
        rewards[q["realterminals"]] = penalty
    bounds = episode_bounds(q["done"])
    lengths = [b - a for a, b in bounds]
    if max(lengths) > max_path_length:
        raise OriginalCheckpointError(
            f"an episode has {max(lengths)} steps, more than max_path_length {max_path_length}"
        )
    padded = np.zeros((len(bounds), max_path_length, 1), dtype=rewards.dtype)
    for i, (a, b) in enumerate(bounds):
        padded[i, : b - a] = rewards[a:b]
    discounts = (discount ** np.arange(max_path_length))[:, None]
    values = np.zeros(padded.shape)
    for t in range(max_path_length):
        values[:, t] = (padded[:, t + 1 :] * discounts[: -t - 1]).sum(axis=1)
    real = np.arange(max_path_length)[None, :] < np.array(lengths)[:, None]
    v = values.squeeze(-1).reshape(-1)[real.reshape(-1), None]
    joined = np.concatenate([np.concatenate([obs, q["actions"]], axis=-1), rewards, v], axis=-1)
    return joined, lengths


def rebuild_original_discretizer(
    source: str | Path | Mapping[str, np.ndarray], data_config: Mapping
) -> OriginalQuantileDiscretizer:
    """The discretizer the original computes at plan time from the training data.

    ``source``: the D4RL-format HDF5 file (or its arrays) the model was trained on;
    ``data_config``: the kwargs of ``data_config.pkl`` (N, penalty, discount, env, ...).
    """
    kind = data_config.get("discretizer", "QuantileDiscretizer")
    if kind != "QuantileDiscretizer":
        raise OriginalCheckpointError(f"discretizer {kind!r}: only QuantileDiscretizer exists")
    joined, _ = original_transitions(
        read_d4rl_hdf5(source),
        discount=float(data_config.get("discount", 0.99)),
        penalty=data_config.get("penalty"),
        max_path_length=int(data_config.get("max_path_length", 1000)),
        env_name=data_config.get("env"),
    )
    return OriginalQuantileDiscretizer(int(data_config["N"])).fit(joined)


# ===================================================== reference training pipeline
def _segment(x: np.ndarray, done: np.ndarray, max_path_length: int):
    """The original's ``segment``: split rows on ``done``, zero-pad each path to
    ``max_path_length``; flags are True from each path's end on (however it ended)."""
    paths: list[list[np.ndarray]] = [[]]
    for row, end in zip(x, done, strict=True):
        paths[-1].append(row)
        if end:
            paths.append([])
    if not paths[-1]:
        paths = paths[:-1]
    lengths = [len(p) for p in paths]
    if max(lengths) > max_path_length:
        raise OriginalCheckpointError(
            f"a path has {max(lengths)} steps, more than max_path_length {max_path_length}"
        )
    padded = np.zeros((len(paths), max_path_length, x.shape[1]), dtype=x.dtype)
    flags = np.zeros((len(paths), max_path_length), dtype=bool)
    for i, p in enumerate(paths):
        padded[i, : len(p)] = np.stack(p)
        flags[i, len(p) :] = True
    return padded, flags, lengths


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
    rewards = q["rewards"].copy()[:, None]
    if penalty is not None:
        rewards[q["realterminals"]] = penalty
    joined = np.concatenate([q["observations"], q["actions"]], axis=-1)
    joined_seg, flags, lengths = _segment(joined, q["done"], max_path_length)
    rewards_seg, _, _ = _segment(rewards, q["done"], max_path_length)
    discounts = (discount ** np.arange(max_path_length))[:, None]
    values_seg = np.zeros(rewards_seg.shape)
    for t in range(max_path_length):
        values_seg[:, t] = (rewards_seg[:, t + 1 :] * discounts[: -t - 1]).sum(axis=1)
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


# ================================================================== checkpoints
@dataclass
class OriginalCheckpoint:
    model: TrajectoryGPT
    discretizer: OriginalQuantileDiscretizer | None
    epoch: int
    model_config: dict
    data_config: dict
    directory: Path
    notes: list[str] = field(default_factory=list)


def latest_epoch(directory: str | Path) -> int:
    """The largest E of the ``state_{E}.pt`` files (what the original's 'latest' loads)."""
    epochs = []
    for p in glob.glob(os.path.join(glob.escape(str(directory)), "state_*.pt")):
        stem = Path(p).stem.removeprefix("state_")
        if stem.isdigit():
            epochs.append(int(stem))
    if not epochs:
        raise OriginalCheckpointError(f"no state_*.pt files in {directory}")
    return max(epochs)


def load_original_checkpoint(
    directory: str | Path,
    dataset_source: str | Path | Mapping[str, np.ndarray] | None,
    epoch: int | str = "latest",
    device: str | torch.device = "cpu",
) -> OriginalCheckpoint:
    """Import an original run directory into ttlib.

    ``dataset_source`` is the D4RL-format HDF5 file (or its arrays) the run was trained on;
    the discretizer is rebuilt from it (None skips that and leaves ``discretizer`` None).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise OriginalCheckpointError(f"{directory} is not a directory")
    if epoch == "latest":
        epoch = latest_epoch(directory)
    state_path = directory / f"state_{int(epoch)}.pt"
    if not state_path.exists():
        raise OriginalCheckpointError(f"no {state_path.name} in {directory}")
    mcfg = load_original_config(directory / "model_config.pkl")
    if mcfg.class_name != "GPT":
        raise OriginalCheckpointError(f"model_config.pkl is for {mcfg.class_name}, not GPT")
    ocfg = OriginalGPTConfig.from_kwargs(mcfg.to_dict())
    gcfg = ttlib_config_from_original(ocfg)
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    model = TrajectoryGPT(gcfg)
    try:
        model.load_state_dict(convert_original_state_dict(state, gcfg), strict=True)
    except (KeyError, RuntimeError) as err:
        raise OriginalCheckpointError(f"{state_path} does not fit its model config: {err}") from err
    model.to(device).eval()

    notes = []
    if len({ocfg.embd_pdrop, ocfg.resid_pdrop, ocfg.attn_pdrop}) > 1:
        notes.append("dropout rates differ; ttlib uses the largest (only matters for training)")
    data_cfg: dict = {}
    disc = None
    data_path = directory / "data_config.pkl"
    if data_path.exists():
        data_cfg = load_original_config(data_path).to_dict()
    if dataset_source is not None:
        if not data_cfg:
            raise OriginalCheckpointError(f"no data_config.pkl in {directory}")
        disc = rebuild_original_discretizer(dataset_source, data_cfg)
        if disc.dim != gcfg.transition_dim or disc.n_bins != gcfg.n_bins:
            raise OriginalCheckpointError(
                f"the dataset gives {disc.dim} dims x {disc.n_bins} bins but the model has "
                f"{gcfg.transition_dim} x {gcfg.n_bins}: wrong dataset for this checkpoint"
            )
        if disc.n_real_bins < disc.n_bins:
            notes.append(
                f"only {disc.n_real_bins} quantile bins (dataset too small for {disc.n_bins}); "
                "the original cannot plan with this discretizer"
            )
    return OriginalCheckpoint(
        model=model,
        discretizer=disc,
        epoch=int(epoch),
        model_config=mcfg.to_dict(),
        data_config=data_cfg,
        directory=directory,
        notes=notes,
    )


# ============================================================= reference planner
def filter_cdf(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """The original's cdf filter: set logits to -1000 for the least likely tokens.

    Sort probabilities ascending; the threshold probability is the one at the last index
    where the running sum is still below ``threshold`` (index 0 if none is); every token with
    probability <= that is dropped, so the most likely ~(1 - threshold) of the mass remains.
    """
    probs = logits.softmax(-1)
    sorted_p, _ = probs.sort(-1)
    below = sorted_p.cumsum(-1) < threshold
    idx = torch.arange(logits.shape[-1], device=logits.device)
    last = (below * idx).argmax(-1)
    cut = sorted_p.gather(-1, last[:, None])
    return logits.masked_fill(probs <= cut, -1000.0)


def top_k_logits(logits: torch.Tensor, k: int) -> torch.Tensor:
    kth = logits.topk(k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _crop(x: torch.Tensor, block: int, increment: int) -> torch.Tensor:
    """Drop whole transitions from the front until at most ``block`` tokens remain."""
    excess = x.shape[1] - block
    if excess <= 0:
        return x
    n_crop = -(-excess // increment) * increment
    return x[:, n_crop:]


def _choose(logits: torch.Tensor, allowed: torch.Tensor, rank, generator):
    """(tokens (R, 1), valid (R,)): sampled from the filtered logits, or the rank-th allowed.

    The rank rule is ttlib's deterministic mode (``ttlib.search.choose_tokens``): allowed
    tokens by decreasing logit, ties by index; a rank past the last allowed token is not a
    valid choice, and the planner drops that candidate.
    """
    if rank is None:
        tokens = torch.multinomial(logits.softmax(-1), 1, generator=generator)
        return tokens, torch.ones(len(tokens), dtype=torch.bool, device=tokens.device)
    order = logits.argsort(dim=-1, descending=True, stable=True)
    n_allowed = allowed.sum(-1)
    pick = torch.minimum(rank, n_allowed - 1).clamp_min(0)
    return order.gather(-1, pick[:, None]), rank < n_allowed


def _sample(model, x, block, increment, topk, cdf, rank, generator):
    logits, _ = model(_crop(x, block, increment))
    logits = logits[:, -1]
    raw_probs = logits.softmax(-1)
    if cdf is not None:
        logits = filter_cdf(logits, cdf)
    if topk is not None:
        logits = top_k_logits(logits, topk)
    allowed = torch.isfinite(logits) & (logits != -1000.0)
    tokens, valid = _choose(logits, allowed, rank, generator)
    return tokens, valid, raw_probs


def _sample_n(model, x, n, block, increment, topk, cdf, generator, first_rank=None):
    """``n`` tokens, one forward pass each: (x, probs, valid).

    ``first_rank`` (deterministic mode) picks the first token by rank and the rest greedily;
    None samples them all. ``valid`` is False where the first token's rank was out of range.
    """
    probs = []
    valid = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for i in range(n):
        rank = None
        if first_rank is not None:
            rank = first_rank if i == 0 else torch.zeros_like(first_rank)
        idx, ok, p = _sample(model, x, block, increment, topk, cdf, rank, generator)
        x = torch.cat([x, idx], dim=1)
        valid &= ok
        probs.append(p)
    return x, torch.stack(probs, dim=1), valid


def original_value_fn(discretizer) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """E[r], E[V] the original's way: drop the stop class, then probs @ bin midpoints."""
    thr = getattr(discretizer, "thresholds", None)
    if thr is None:
        thr = discretizer.edges.T
    n = discretizer.n_bins
    if len(thr) != n + 1:
        raise ValueError(
            f"{len(thr) - 1} quantile bins but the model predicts {n}: the original cannot plan "
            "with a discretizer fit on so little data"
        )
    r_thr, v_thr = thr[:, -2], thr[:, -1]

    def value_fn(probs: torch.Tensor):
        p = probs.detach().cpu().numpy()[:, :, :-1]
        r = (p[:, 0] @ r_thr[:-1] + p[:, 0] @ r_thr[1:]) / 2.0
        v = (p[:, 1] @ v_thr[:-1] + p[:, 1] @ v_thr[1:]) / 2.0
        dev = probs.device
        return torch.as_tensor(r, dtype=torch.float32, device=dev), torch.as_tensor(
            v, dtype=torch.float32, device=dev
        )

    return value_fn


@dataclass
class ReferencePlan:
    tokens: torch.Tensor  # (horizon, transition_dim) raw bins of the best plan
    score: float  # its score: sum_i gamma^i r_i + gamma^H V_H (expectations)


@torch.no_grad()
def original_beam_plan(
    model: OriginalGPT,
    value_fn: Callable,
    prefix: torch.Tensor,
    horizon: int,
    beam_width: int,
    n_expand: int,
    observation_dim: int,
    action_dim: int,
    discount: float = 0.99,
    max_context_transitions: int | None = 5,
    k_obs: int | None = 1,
    k_act: int | None = None,
    k_rew: int | None = 1,
    cdf_obs: float | None = None,
    cdf_act: float | None = 0.6,
    cdf_rew: float | None = None,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
) -> ReferencePlan:
    """The original ``beam_plan``; returns the best plan's tokens (horizon, td) and score.

    ``prefix`` (1, L) is the context transitions then the current observation, as raw bins.
    Every token is one full forward pass over the sequence so far, cropped to the last
    ``max_context_transitions * transition_dim - 1`` tokens (whole transitions, so it starts
    at s^0, positions from 0). Actions are sampled after the cdf/top-k filter; r and V are
    scored by their expectation under the unfiltered probabilities; the ``beam_width`` best of
    the ``beam_width * n_expand`` candidates survive; observations are then sampled (greedy
    with k_obs=1). ``deterministic`` replaces sampling by ttlib's rank rule: copy c of a beam
    takes the c-th most likely allowed first action token (at t=0 the copies are numbered
    0..beam_width*n_expand-1), every other token is the most likely one, and a copy whose
    rank exceeds the allowed tokens is dropped (score -inf, for good) instead of duplicating
    another candidate. Sampling mode is the original's algorithm unchanged.
    """
    model.eval()
    td = observation_dim + action_dim + REWARD_DIM + VALUE_DIM
    block = model.get_block_size()
    if max_context_transitions:
        block = min(block, max_context_transitions * td - 1)
    kw = {"block": block, "increment": td, "generator": generator}
    W, X = beam_width, n_expand

    x = prefix.repeat(W, 1)
    rewards = torch.zeros(W, horizon + 1, device=x.device)
    discounts = discount ** torch.arange(horizon + 1, device=x.device)
    values = torch.zeros(W, device=x.device)
    alive = torch.ones(W, dtype=torch.bool, device=x.device)  # deterministic mode only
    rows = torch.arange(W * X, device=x.device)
    for t in range(horizon):
        x = x.repeat(X, 1)  # row i is copy i // W of beam i % W
        rewards = rewards.repeat(X, 1)
        alive = alive.repeat(X)
        rank = None
        if deterministic:
            rank = rows if t == 0 else rows // W
        x, _, ok = _sample_n(model, x, action_dim, topk=k_act, cdf=cdf_act, first_rank=rank, **kw)
        alive &= ok
        greedy = torch.zeros_like(rows) if deterministic else None
        x, rv_probs, _ = _sample_n(
            model, x, REWARD_DIM + VALUE_DIM, topk=k_rew, cdf=cdf_rew, first_rank=greedy, **kw
        )
        r_t, v_t = value_fn(rv_probs)
        rewards[:, t] = r_t
        rewards[:, t + 1] = v_t
        values = (rewards * discounts).sum(-1).masked_fill(~alive, float("-inf"))
        values, keep = torch.topk(values, W)
        x, rewards, alive = x[keep], rewards[keep], alive[keep]
        if t < horizon - 1:
            greedy = torch.zeros(W, dtype=torch.long, device=x.device) if deterministic else None
            x, _, _ = _sample_n(
                model, x, observation_dim, topk=k_obs, cdf=cdf_obs, first_rank=greedy, **kw
            )
    best = values.argmax()
    return ReferencePlan(tokens=x.view(W, -1, td)[best, -horizon:], score=float(values[best]))


def make_prefix(discretizer, context: list[torch.Tensor], observation: np.ndarray) -> torch.Tensor:
    """Context transitions then the current observation's bins, as one (1, L) token row."""
    obs = discretizer.encode(np.asarray(observation)[None], dims=slice(0, len(observation)))
    return torch.cat([*context, torch.as_tensor(obs, dtype=torch.long)], dim=-1)


def update_context(
    context: list[torch.Tensor],
    discretizer,
    observation: np.ndarray,
    action: np.ndarray,
    reward: float,
    max_context_transitions: int,
) -> list[torch.Tensor]:
    """Append [s, a, r, V placeholder] as bins and keep the last ``max_context_transitions``."""
    row = np.concatenate([observation, action, [reward, VALUE_PLACEHOLDER]])
    context = [*context, torch.as_tensor(discretizer.encode(row[None]), dtype=torch.long)]
    return context[-max_context_transitions:]
