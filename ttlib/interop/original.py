"""The original Trajectory Transformer's model, re-implemented as a faithful reference.

Written from the behaviour of ``jannerm/trajectory-transformer`` (see
``reference/paper-facts.md`` §1b–1e and §5), without importing that package:
:class:`OriginalGPT` has separate key/query/value layers, a causal-mask buffer with the value
columns zeroed and one output layer per transition dimension, and its weights convert to and
from a :class:`ttlib.model.TrajectoryGPT` exactly. It is the yardstick of the equivalence tests
and the speed benchmarks in ``benchmarks/``; its planner is :mod:`ttlib.interop.original_planner`
and its checkpoints import with :mod:`ttlib.interop.checkpoint`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ttlib.errors import OriginalCheckpointError  # noqa: F401  (re-exported)
from ttlib.model import GPTConfig, TrajectoryGPT


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
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in kwargs]
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
