"""The Trajectory Transformer: a GPT over discretised transitions [s, a, r, V].

Reads like minGPT, with four additions the paper needs:

* every dimension of the transition has its own K-token vocabulary (token id = bin + K·index),
  plus one shared stop token;
* one output head per position-in-transition (a batched linear layer, as in the original);
* attention *to* value tokens is masked, because V is a return-to-go that leaks the future;
* a KV cache, so beam search appends one token per forward pass instead of re-running the
  whole window for every sampled token as the original code does.

Token ids given to the model are *raw* bins in [0, K] (K = stop); the model adds the offsets.
An optional goal prefix (``goal_dim`` tokens) sits before the trajectory for goal reaching.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


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


class KVCache:
    """Preallocated keys and values of every layer, for incremental decoding.

    ``length`` counts the tokens stored (goal prefix included). Beam search reorders rows
    with :meth:`select` after it ranks and prunes candidates.

    After :meth:`share_prefix` the first ``shared`` positions are stored once per *group* of
    consecutive rows (``prefix_k``, ``prefix_v``: layer, group, head, position, dim) and the
    row buffers ``k``, ``v`` hold positions ``shared, shared + 1, ...`` from index 0: the
    context that all beams of an episode start from is kept (and read) once per episode, not
    once per beam, and reordering beams copies only what they generated.

    After :meth:`expand` (a second level of sharing, below the prefix) every row is the
    *parent* of ``copies`` consecutive child rows: the positions the parents generated so far
    (``parent_len`` of them, after the prefix) stay in the parents' buffers (``parent_k``,
    ``parent_v``: layer, parent, head, position, dim), read once per parent, and the row
    buffers ``k``, ``v`` hold only what each child adds from then on. Expanding beams then
    copies nothing; the next :meth:`select` (pruning) builds whole rows again, each from its
    parent's past and its own new positions.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device=None, dtype=torch.float32):
        self.config = config
        self.max_len = config.goal_dim + config.block_size
        hd = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, self.max_len, hd)
        # Only positions below ``length`` are ever read, so the buffers need no zeroing.
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0
        self.shared = 0
        # Which keys any query may see, by position (all but value tokens), as a boolean mask
        # and as an additive bias: one new token at position p sees keys [0, p] of these.
        pos = torch.arange(self.max_len, device=device)
        traj = pos - config.goal_dim
        hidden = (traj >= 0) & (traj % config.transition_dim == config.transition_dim - 1)
        self.visible = ~hidden if config.mask_values else torch.ones_like(hidden)
        self.key_bias = torch.zeros(self.max_len, device=device, dtype=dtype).masked_fill(
            ~self.visible, float("-inf")
        )
        self.prefix_k: torch.Tensor | None = None
        self.prefix_v: torch.Tensor | None = None
        # The parent level (see expand): 0 positions while every row holds its whole past.
        self.parent_len = 0
        self.copies = 1
        self.parent_k: torch.Tensor | None = None
        self.parent_v: torch.Tensor | None = None
        self._spare: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def n_groups(self) -> int:
        """Groups of rows with a common prefix (each row its own group before sharing)."""
        return self.prefix_k.shape[1] if self.shared else self.batch_size

    def room(self) -> int:
        return self.max_len - self.length

    @property
    def offset(self) -> int:
        """Position of index 0 of the row buffers: after the prefix and the parents' past."""
        return self.shared + self.parent_len

    def reserve(self, n_new: int) -> None:
        """Make room in the row buffers for ``n_new`` more positions (called by the model).

        Only child buffers (after :meth:`expand`) can be short: they are then merged with
        their parents into whole rows, as a select of every row would.
        """
        if self.parent_len and self.length - self.offset + n_new > self.k.shape[3]:
            self._merge_parents()

    def _merge_parents(self) -> None:
        """After :meth:`expand`: whole rows again (a select that keeps every row in place)."""
        if self.parent_len:
            self.select(torch.arange(self.batch_size, device=self.k.device))

    def share_prefix(self, copies: int) -> KVCache:
        """Make every row ``copies`` consecutive rows that share what is stored so far.

        Equivalent to ``select(arange(batch).repeat_interleave(copies))``, without copying
        the stored keys and values: they become the shared prefix of each group.
        """
        if self.shared:
            raise ValueError("this cache already has a shared prefix")
        self._merge_parents()
        n = self.length
        self.prefix_k = self.k[:, :, :, :n].clone()
        self.prefix_v = self.v[:, :, :, :n].clone()
        L, B, H, cap, hd = self.k.shape
        # The row buffers keep their full capacity (positions past max_len - n stay unused),
        # so the memory taken is what :meth:`bytes_needed` says.
        self.k, self.v = self._buffers((L, B * copies, H, cap, hd))
        self.shared = n
        return self

    def expand(self, copies: int, capacity: int | None = None) -> KVCache:
        """Make every row ``copies`` consecutive rows, sharing what each has generated so far.

        Equivalent to ``select(arange(batch).repeat_interleave(copies))``, without copying: the
        row buffers become the parents' buffers, read once per parent by the children's
        single-token passes, and new row buffers with room for ``capacity`` positions (default
        all that is left; more are made by merging, see :meth:`reserve`) take what each child
        adds. The next :meth:`select` gathers whole rows again.
        """
        self._merge_parents()  # one parent level at a time: make whole rows first
        L, B, H, _, hd = self.k.shape
        used = self.length - self.shared
        grad = torch.is_grad_enabled() and (self.k.requires_grad or self.v.requires_grad)
        if copies == 1 or used == 0 or grad:
            return self.select(torch.arange(B, device=self.k.device).repeat_interleave(copies))
        room = self.max_len - self.length
        capacity = room if capacity is None else max(1, min(capacity, room))
        self.parent_k, self.parent_v = self.k, self.v
        self.k, self.v = self._buffers((L, B * copies, H, capacity, hd))
        self.parent_len, self.copies = used, copies
        return self

    def _buffers(self, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Uninitialised key and value buffers: the spare pair of this shape, or new ones."""
        spare = self._spare.pop(shape, None)
        if spare is not None:
            return spare
        return (
            torch.empty(shape, device=self.k.device, dtype=self.k.dtype),
            torch.empty(shape, device=self.k.device, dtype=self.k.dtype),
        )

    def select(self, index: torch.Tensor) -> KVCache:
        """Keep rows ``index`` (may repeat rows or change the batch size), in place.

        Copies only the positions in use, into buffers kept from an earlier reorder of the
        same shape where there is one (beam search alternates between two batch sizes, and
        reusing memory avoids the page faults of fresh allocations). With a shared prefix
        every new row must come from a row of the same group: groups stay in order, and
        each keeps ``len(index) / n_groups`` rows.
        """
        L, B, H, cap, hd = self.k.shape
        n_new = index.shape[0]
        if self.shared:
            G = self.n_groups
            old_group = torch.div(index, B // G, rounding_mode="floor")
            new_group = torch.arange(n_new, device=index.device) // max(n_new // G, 1)
            if n_new % G or not torch.equal(old_group, new_group):
                raise ValueError("rows of a cache with a shared prefix must stay in their group")
        if self.parent_len:
            return self._select_children(index)
        if torch.is_grad_enabled() and (self.k.requires_grad or self.v.requires_grad):
            # Keys computed with autograd on: keep the graph (a copy with out= cannot).
            self.k = self.k.index_select(1, index)
            self.v = self.v.index_select(1, index)
            return self
        k, v = self._buffers((L, n_new, H, cap, hd))
        used = self.length - self.shared
        if used > 0:
            flat = (torch.arange(L, device=index.device)[:, None] * B + index).flatten()
            for src, dst in ((self.k, k), (self.v, v)):
                torch.index_select(
                    src.view(L * B, H, cap, hd)[:, :, :used],
                    0,
                    flat,
                    out=dst.view(L * n_new, H, cap, hd)[:, :, :used],
                )
        self._spare[tuple(self.k.shape)] = (self.k, self.v)
        self.k, self.v = k, v
        return self

    def _select_children(self, index: torch.Tensor) -> KVCache:
        """:meth:`select` after :meth:`expand`: whole rows again, each gathered from the past
        of its child's parent and the positions that child added, into buffers of the
        parents' capacity (spare ones where there are)."""
        L, B, H, cap_c, hd = self.k.shape
        P, cap = self.parent_k.shape[1], self.parent_k.shape[3]
        n_new, plen = index.shape[0], self.parent_len
        used = self.length - self.offset
        k, v = self._buffers((L, n_new, H, cap, hd))
        layers = torch.arange(L, device=index.device)[:, None]
        parents = (layers * P + torch.div(index, self.copies, rounding_mode="floor")).flatten()
        children = (layers * B + index).flatten()
        for src, dst in ((self.parent_k, k), (self.parent_v, v)):
            torch.index_select(
                src.view(L * P, H, cap, hd)[:, :, :plen],
                0,
                parents,
                out=dst.view(L * n_new, H, cap, hd)[:, :, :plen],
            )
        if used > 0:
            for src, dst in ((self.k, k), (self.v, v)):
                torch.index_select(
                    src.view(L * B, H, cap_c, hd)[:, :, :used],
                    0,
                    children,
                    out=dst.view(L * n_new, H, cap, hd)[:, :, plen : plen + used],
                )
        self._spare[tuple(self.parent_k.shape)] = (self.parent_k, self.parent_v)
        self._spare[tuple(self.k.shape)] = (self.k, self.v)
        self.k, self.v = k, v
        self.parent_k = self.parent_v = None
        self.parent_len, self.copies = 0, 1
        return self

    def keys_values(self, layer: int, used: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, offset + used, hd) of one layer: the first ``used``
        positions of the row buffers, after the shared prefix and the parents' past (each
        repeated for every row that shares it)."""
        k, v = self.k[layer, :, :, :used], self.v[layer, :, :, :used]
        if self.parent_len:
            n = self.parent_len
            pk = self.parent_k[layer, :, :, :n].repeat_interleave(self.copies, 0)
            pv = self.parent_v[layer, :, :, :n].repeat_interleave(self.copies, 0)
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        if self.shared:
            copies = self.batch_size // self.n_groups
            pk = self.prefix_k[layer].repeat_interleave(copies, 0)
            pv = self.prefix_v[layer].repeat_interleave(copies, 0)
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        return k, v

    @staticmethod
    def bytes_needed(config: GPTConfig, batch_size: int, bytes_per_element: int = 4) -> int:
        """Memory of a cache for ``batch_size`` rows (keys and values, all layers)."""
        return (
            2
            * config.n_layer
            * batch_size
            * (config.goal_dim + config.block_size)
            * (config.n_embd * bytes_per_element)
        )


def shared_prefix_attention(
    q: torch.Tensor, cache: KVCache, layer: int, used: int, bias: torch.Tensor
) -> torch.Tensor:
    """Attention of one new token per row (q: B, H, 1, hd) over a cache with a shared prefix.

    The prefix scores of all rows of a group are one matrix product per head (queries of the
    group against its prefix keys), the rest a product per row; one softmax over both, as
    over the concatenated keys. The keys are the prefix and the first ``used`` positions of
    the row buffers (the new token's own key included); ``bias`` (shared + used,) is 0 where a
    key may be seen and -inf where not.
    """
    B, H, _, hd = q.shape
    G, P = cache.n_groups, cache.shared
    R = B // G
    pk, pv = cache.prefix_k[layer], cache.prefix_v[layer]  # (G, H, P, hd)
    k, v = cache.k[layer, :, :, :used], cache.v[layer, :, :, :used]  # (B, H, used, hd)
    q_groups = q.view(G, R, H, hd).transpose(1, 2)  # (G, H, R, hd)
    s_prefix = (q_groups @ pk.transpose(-1, -2)).transpose(1, 2).reshape(B, H, 1, P)
    s = torch.cat([s_prefix, q @ k.transpose(-1, -2)], -1)
    p = torch.softmax(s.mul_(hd**-0.5).add_(bias), -1)
    y_prefix = p[..., :P].reshape(G, R, H, P).transpose(1, 2) @ pv  # (G, H, R, hd)
    y = p[..., P:] @ v
    return y.add_(y_prefix.transpose(1, 2).reshape(B, H, 1, hd))


def tree_attention(
    q: torch.Tensor, cache: KVCache, layer: int, used: int, bias: torch.Tensor
) -> torch.Tensor:
    """Attention of one new token per row (q: B, H, 1, hd) over a cache after :meth:`expand`.

    The keys are, in order: the shared prefix of the row's group (if any), the past of its
    parent, and the first ``used`` positions of its own row buffer (the new token's included).
    The scores against a parent's past are one matrix product per parent and head (the
    ``copies`` queries of its children at once), so those keys and values are read once per
    parent, not once per child; the prefix ones once per group; the few own keys of each row
    elementwise. Scores are laid out per parent (parents, H, copies, keys) and go through one
    softmax, as over the concatenated keys; ``bias`` (offset + used,) is 0 where a key may be
    seen and -inf where not.
    """
    B, H, _, hd = q.shape
    S, n, X = cache.shared, cache.parent_len, cache.copies
    P = B // X
    k, v = cache.k[layer, :, :, :used], cache.v[layer, :, :, :used]  # (B, H, used, hd)
    pk = cache.parent_k[layer, :, :, :n]  # (P, H, n, hd)
    pv = cache.parent_v[layer, :, :, :n]
    q_parents = q.reshape(P, X, H, hd).transpose(1, 2)  # (P, H, X, hd)
    s_own = (q.reshape(B, H, 1, hd) * k).sum(-1).view(P, X, H, used).transpose(1, 2)
    parts = [q_parents @ pk.transpose(-1, -2), s_own]
    if S:
        G = cache.n_groups
        pre_k, pre_v = cache.prefix_k[layer], cache.prefix_v[layer]  # (G, H, S, hd)
        q_groups = q.reshape(G, B // G, H, hd).transpose(1, 2)  # (G, H, B / G, hd)
        s_pre = (q_groups @ pre_k.transpose(-1, -2)).view(G, H, P // G, X, S)
        parts.insert(0, s_pre.transpose(1, 2).reshape(P, H, X, S))
    p = torch.softmax(torch.cat(parts, -1).mul_(hd**-0.5).add_(bias), -1)
    y = p[..., S : S + n] @ pv  # (P, H, X, hd)
    if S:
        p_pre = p[..., :S].reshape(G, P // G, H, X, S).transpose(1, 2).reshape(G, H, B // G, S)
        y_pre = (p_pre @ pre_v).view(G, H, P // G, X, hd).transpose(1, 2)
        y = y.add_(y_pre.reshape(P, H, X, hd))
    y_own = (p[..., S + n :].transpose(1, 2).reshape(B, H, used, 1) * v).sum(-2)  # (B, H, hd)
    return y.transpose(1, 2).reshape(B, H, hd).add_(y_own).view(B, H, 1, hd)


# Below this many queries per half, one SDPA call is cheaper than two.
MIN_QUERY_SPLIT = 32


def causal_attention_in_halves(q, k, v, allowed: torch.Tensor, dropout_p: float = 0.0):
    """SDPA of a whole window (no cache) in two query halves; ``allowed`` (T, T) is causal.

    The CPU kernels (flash without dropout, math with it) compute every query against every
    key and mask afterwards: at the training window (249 tokens) a key block of 512 covers the
    whole window, so the causal upper triangle costs as much as the lower one. The first half
    of the queries cannot see the second half of the keys, so it is computed against the
    first half only: 3/8 instead of 1/2 of the score matrix is wasted. Same result up to
    float rounding (the softmax sums run over fewer masked zeros).
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
        assert config.n_embd % config.n_head == 0
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
            at = cache.length - cache.offset  # where the new tokens go in the row buffers
            cache.k[layer, :, :, at : at + T] = k
            cache.v[layer, :, :, at : at + T] = v
            if cache.offset and T == 1:  # ``allowed`` is then an additive bias
                if cache.parent_len:
                    y = tree_attention(q, cache, layer, at + 1, allowed)
                else:
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
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int) -> KVCache:
        p = self.pos_emb
        return KVCache(self.config, batch_size, device=p.device, dtype=p.dtype)

    # ------------------------------------------------------------------ masks
    def attention_mask(self, start: int, n_new: int, device=None) -> torch.Tensor:
        """Boolean (n_new, start + n_new) mask: True where a query may attend to a key.

        Causal, and (if ``mask_values``) no query sees a value-token key: V_t is a sum of
        future rewards, so attending to it would leak the future during training.
        """
        c = self.config
        q = torch.arange(start, start + n_new, device=device)[:, None]
        k = torch.arange(start + n_new, device=device)[None, :]
        allowed = k <= q
        if c.mask_values:
            traj = k - c.goal_dim
            is_value = (traj >= 0) & (traj % c.transition_dim == c.transition_dim - 1)
            allowed = allowed & ~is_value
        return allowed

    # ---------------------------------------------------------------- forward
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
        if cache is not None:
            cache.reserve(T)  # before the mask is chosen: merging changes the cache's layout
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
        if T == 1 and cache is not None and not x_parts:  # one decoded token: fewer small ops
            offset = (t0 % c.transition_dim) * c.n_bins
            tok = torch.where(idx >= c.n_bins, c.vocab_size - 1, idx + offset)
            x = self.drop(self.tok_emb(tok) + self.pos_emb[:, t0 : t0 + 1])
            # The shared-prefix and tree paths add the mask to their scores; the other one
            # takes booleans.
            if cache.offset:
                allowed = cache.key_bias[: start + 1]
            else:
                allowed = cache.visible[None, : start + 1]
        else:
            dim_index = pos % c.transition_dim
            tok = torch.where(
                idx >= c.n_bins, torch.full_like(idx, c.vocab_size - 1), idx + dim_index * c.n_bins
            )
            x_parts.append(self.tok_emb(tok) + self.pos_emb[:, t0 : t0 + T])
            x = self.drop(torch.cat(x_parts, dim=1) if len(x_parts) > 1 else x_parts[0])
            allowed = self.attention_mask(start, x.shape[1], device=idx.device)
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
        total = lead + T
        pad_back = (-total) % td
        x = F.pad(x, (0, 0, lead, pad_back))
        x = x.view(B, -1, td, E)
        logits = torch.einsum("bnte,tve->bntv", x, self.head)
        return logits.reshape(B, -1, self.config.n_bins + 1)[:, lead : lead + T]

    # ----------------------------------------------------------- optimiser
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

    # --------------------------------------------------------------- analysis
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
