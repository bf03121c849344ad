"""The Trajectory Transformer: a GPT over discretised transitions [s, a, r, V].

minGPT plus what the paper needs: every dimension of the transition has its own K-token
vocabulary (token id = bin + K·index) and one shared stop token; one output head per
position-in-transition; attention *to* value tokens is masked (V leaks the future); a KV cache
(:mod:`ttlib.kvcache`), so beam search appends one token per forward pass instead of re-running
the window for every token as the original does. Inputs are *raw* bins in [0, K] (K = stop);
an optional goal prefix (``goal_dim`` tokens) sits before the trajectory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ttlib.errors import ConfigError
from ttlib.kvcache import KVCache, shared_prefix_attention, value_keys


@dataclass
class GPTConfig:
    observation_dim: int
    action_dim: int
    n_bins: int = 100
    n_transitions: int = 10  # training window length, in transitions
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    action_weight: float = 5.0
    reward_weight: float = 1.0
    value_weight: float = 1.0
    goal_dim: int = 0  # > 0: that many goal tokens are given as a prefix
    mask_values: bool = True

    def __post_init__(self):
        # one line naming the values, before any weights are built (not an AssertionError)
        if self.n_head < 1 or self.n_embd < 1 or self.n_embd % self.n_head:
            raise ConfigError(
                f"GPTConfig: n_head={self.n_head} must be >= 1 and divide n_embd={self.n_embd}"
            )

    @property
    def transition_dim(self) -> int:
        return self.observation_dim + self.action_dim + 2

    @property
    def block_size(self) -> int:
        """Trajectory tokens the model can see: a window minus the last token (inputs = x[:-1])."""
        return self.n_transitions * self.transition_dim - 1

    @property
    def stop_token(self) -> int:
        return self.n_bins

    @property
    def vocab_size(self) -> int:
        return self.n_bins * self.transition_dim + 1

    def to_dict(self) -> dict:
        return asdict(self)


# Below this many queries per half, one SDPA call is cheaper than two.
MIN_QUERY_SPLIT = 32


def causal_attention_in_halves(q, k, v, allowed: torch.Tensor, dropout_p: float = 0.0):
    """SDPA of a whole window (no cache) in two query halves; ``allowed`` (T, T) is causal.

    The CPU kernels compute every query against every key and mask afterwards, so the causal
    upper triangle costs as much as the lower one. The first half of the queries cannot see
    the second half of the keys: computing it against the first half only wastes 3/8 instead
    of 1/2 of the score matrix. Same result up to float rounding.
    """
    h = q.shape[2] // 2
    first = F.scaled_dot_product_attention(
        q[:, :, :h], k[:, :, :h], v[:, :, :h], attn_mask=allowed[:h, :h], dropout_p=dropout_p
    )
    second = F.scaled_dot_product_attention(
        q[:, :, h:], k, v, attn_mask=allowed[h:], dropout_p=dropout_p
    )
    return torch.cat([first, second], 2)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)  # fused key/query/value
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_drop = config.dropout
        self.resid_drop = nn.Dropout(config.dropout)
        self.last_attention: torch.Tensor | None = None  # filled when record_attention is set
        self.record_attention = False

    def forward(self, x, allowed, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            at = cache.length - cache.shared  # where the new tokens go in the row buffers
            cache.k[layer, :, :, at : at + T] = k
            cache.v[layer, :, :, at : at + T] = v
            if cache.shared and T == 1:  # ``allowed`` is then an additive bias
                y = shared_prefix_attention(q, cache, layer, at + 1, allowed)
                return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))
            k, v = cache.keys_values(layer, at + T)
        if self.record_attention:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
            att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
            self.last_attention = att.detach()
            y = att @ v
        else:
            drop = self.attn_drop if self.training else 0.0
            if cache is None and T >= 2 * MIN_QUERY_SPLIT:
                y = causal_attention_in_halves(q, k, v, allowed, drop)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.dropout),
        )

    def forward(self, x, allowed, cache=None, layer=0):
        x = x + self.attn(self.ln1(x), allowed, cache, layer)
        return x + self.mlp(self.ln2(x))


class TrajectoryGPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, c.block_size, c.n_embd))
        if c.goal_dim > 0:
            self.goal_emb = nn.Embedding(c.n_bins * c.goal_dim, c.n_embd)
            self.goal_pos_emb = nn.Parameter(torch.zeros(1, c.goal_dim, c.n_embd))
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        # head[e] is applied at positions whose index-in-transition is e: it predicts the
        # token *after* that position, so each dimension gets its own output layer.
        self.head = nn.Parameter(torch.empty(c.transition_dim, c.n_bins + 1, c.n_embd))
        self.apply(self._init_weights)
        # The original's per-dimension head (EinLinear) keeps PyTorch's Linear default,
        # kaiming-uniform with a = sqrt(5): U(-1/sqrt(n_embd), 1/sqrt(n_embd)), std ~0.05 at
        # n_embd 128 (its normal(0.02) init only reaches nn.Linear and nn.Embedding).
        for w in self.head.data:
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        # Per-target loss weights, indexed by the target's index-in-transition.
        w = torch.ones(c.transition_dim)
        w[c.observation_dim : c.observation_dim + c.action_dim] = c.action_weight
        w[-2], w[-1] = c.reward_weight, c.value_weight
        self.register_buffer("dim_weights", w, persistent=False)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int) -> KVCache:
        p = self.pos_emb
        return KVCache(self.config, batch_size, device=p.device, dtype=p.dtype)

    def attention_mask(self, start: int, n_new: int, device=None) -> torch.Tensor:
        """Boolean (n_new, start + n_new) mask: True where a query may attend to a key (causal,
        value tokens hidden: :func:`ttlib.kvcache.value_keys`)."""
        q = torch.arange(start, start + n_new, device=device)[:, None]
        k = torch.arange(start + n_new, device=device)[None, :]
        return (k <= q) & ~value_keys(self.config, k)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
        goal: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ):
        """Logits (B, T, K+1) for the token after each input position, and the weighted loss.

        ``idx`` holds raw bins (B, T) of a trajectory that starts at s^0 of a transition (or
        continues the sequence already in ``cache``). ``goal`` (B, goal_dim) raw bins is
        required for goal-conditioned models on the first call (empty cache or no cache).
        """
        c = self.config
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        x_parts, n_goal = [], 0
        if c.goal_dim > 0 and start == 0:
            if goal is None:
                raise ValueError("this model is goal-conditioned: pass goal=(B, goal_dim) bins")
            g_off = torch.arange(c.goal_dim, device=idx.device) * c.n_bins
            x_parts.append(self.goal_emb(goal.clamp(0, c.n_bins - 1) + g_off) + self.goal_pos_emb)
            n_goal = c.goal_dim
        t0 = start + n_goal - c.goal_dim  # trajectory position of idx[:, 0]
        if t0 + T > c.block_size:
            raise ValueError(
                f"sequence of {t0 + T} trajectory tokens exceeds block_size {c.block_size}; "
                "crop the context (the planner does this automatically)"
            )
        pos = torch.arange(t0, t0 + T, device=idx.device)
        decoding = T == 1 and cache is not None and not x_parts  # one token: fewer small ops
        offset = (t0 % c.transition_dim if decoding else pos % c.transition_dim) * c.n_bins
        tok = torch.where(idx >= c.n_bins, c.vocab_size - 1, idx + offset)
        x_parts.append(self.tok_emb(tok) + self.pos_emb[:, t0 : t0 + T])
        x = self.drop(torch.cat(x_parts, dim=1) if len(x_parts) > 1 else x_parts[0])
        if not decoding:
            allowed = self.attention_mask(start, x.shape[1], device=idx.device)
        elif cache.shared:  # the shared-prefix path adds the mask to its scores
            allowed = cache.key_bias[: start + 1]
        else:
            allowed = cache.visible[None, : start + 1]
        for i, block in enumerate(self.blocks):
            x = block(x, allowed, cache, i)
        if cache is not None:
            cache.length = start + x.shape[1]
        x = self.ln_f(x[:, n_goal:])
        logits = self._heads(x, t0)

        loss = None
        if targets is not None:
            target_dims = (pos + 1) % c.transition_dim
            ce = F.cross_entropy(
                logits.reshape(-1, c.n_bins + 1), targets.reshape(-1), reduction="none"
            ).view(B, T)
            w = self.dim_weights[target_dims].expand(B, T)
            m = torch.ones_like(w) if loss_mask is None else loss_mask.to(w.dtype)
            # Averaged over all B·T positions, masked ones included, as the original does
            # (not over the unmasked targets): a window with masked targets weighs less.
            loss = (ce * w * m).mean()
        return logits, loss

    def _heads(self, x: torch.Tensor, t0: int) -> torch.Tensor:
        """Apply head[e] at positions with index-in-transition e, in one batched einsum."""
        td = self.config.transition_dim
        B, T, E = x.shape
        if T == 1:  # one decoded token (beam search): a single matrix-vector product
            return x @ self.head[t0 % td].T
        lead = t0 % td
        x = F.pad(x, (0, 0, lead, (-(lead + T)) % td)).view(B, -1, td, E)
        logits = torch.einsum("bnte,tve->bntv", x, self.head)
        return logits.reshape(B, -1, self.config.n_bins + 1)[:, lead : lead + T]

    def configure_optimizer(self, lr: float, weight_decay: float, betas=(0.9, 0.95)):
        """AdamW with decay on weight matrices (linear layers, heads) only, like minGPT."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            is_matrix = name.endswith("weight") and p.dim() >= 2 and "emb" not in name
            (decay if is_matrix or name == "head" else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights (n_layer, B, n_head, T, T) for a full forward pass of ``idx``."""
        attns = [b.attn for b in self.blocks]
        for a in attns:
            a.record_attention = True
        try:
            self.forward(idx, goal=goal)
            return torch.stack([a.last_attention for a in attns])
        finally:
            for a in attns:
                a.record_attention = False
                a.last_attention = None
