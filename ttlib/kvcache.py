"""The key/value cache of beam search: one row per beam, shared past read once.

Beam search feeds one token per forward pass, so every layer's keys and values are kept
here instead of being recomputed. Beams of one episode share the context (``share_prefix``);
the attention function below reads those shared keys once per episode instead of once per row.
"""

from __future__ import annotations

import torch


def value_keys(config, pos: torch.Tensor) -> torch.Tensor:
    """Which positions (goal prefix included) hold value tokens, hidden from every query when
    ``config.mask_values``: V_t is a sum of future rewards, so it would leak the future."""
    traj = pos - config.goal_dim
    hidden = (traj >= 0) & (traj % config.transition_dim == config.transition_dim - 1)
    return hidden if config.mask_values else torch.zeros_like(hidden)


class KVCache:
    """Preallocated keys and values of every layer of a :class:`ttlib.model.GPTConfig` model.

    ``length`` counts the tokens stored (goal prefix included). After :meth:`share_prefix` the
    first ``shared`` positions are stored once per *group* of consecutive rows (``prefix_k``,
    ``prefix_v``) and the row buffers ``k``, ``v`` hold positions ``shared, ...`` from index 0:
    an episode's context is kept (and read) once, not once per beam, and reordering beams
    copies only what they generated.
    """

    def __init__(self, config, batch_size: int, device=None, dtype=torch.float32):
        self.config = config
        self.max_len = config.goal_dim + config.block_size
        hd = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, self.max_len, hd)
        # Only positions below ``length`` are ever read, so the buffers need no zeroing.
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0
        self.shared = 0
        # Which keys any query may see, as a boolean mask and as an additive bias: one new
        # token at position p sees keys [0, p] of these.
        self.visible = ~value_keys(config, torch.arange(self.max_len, device=device))
        self.key_bias = torch.zeros(self.max_len, device=device, dtype=dtype).masked_fill(
            ~self.visible, float("-inf")
        )
        self.prefix_k: torch.Tensor | None = None
        self.prefix_v: torch.Tensor | None = None
        self._spare: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def n_groups(self) -> int:
        """Groups of rows with a common prefix (each row its own group before sharing)."""
        return self.prefix_k.shape[1] if self.shared else self.batch_size

    def share_prefix(self, copies: int) -> KVCache:
        """``select(arange(batch).repeat_interleave(copies))`` without copying what is stored:
        it becomes the shared prefix of each group."""
        if self.shared:
            raise ValueError("this cache already has a shared prefix")
        n = self.length
        self.prefix_k = self.k[:, :, :, :n].clone()
        self.prefix_v = self.v[:, :, :, :n].clone()
        L, B, H, cap, hd = self.k.shape
        # full capacity (positions past max_len - n stay unused): what bytes_needed says
        self.k, self.v = self._buffers((L, B * copies, H, cap, hd))
        self.shared = n
        return self

    def _buffers(self, shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Uninitialised key and value buffers: the spare pair of this shape, or new ones."""
        new = lambda: torch.empty(shape, device=self.k.device, dtype=self.k.dtype)  # noqa: E731
        return self._spare.pop(shape, None) or (new(), new())

    def select(self, index: torch.Tensor) -> KVCache:
        """Keep rows ``index`` (repeats allowed) in place, copying only the positions in use into
        spare buffers of the same shape (reuse avoids page faults); with a shared prefix every
        row must come from its own group."""
        L, B, H, cap, hd = self.k.shape
        n_new = index.shape[0]
        if self.shared:
            G = self.n_groups
            old_group = torch.div(index, B // G, rounding_mode="floor")
            new_group = torch.arange(n_new, device=index.device) // max(n_new // G, 1)
            if n_new % G or not torch.equal(old_group, new_group):
                raise ValueError("rows of a cache with a shared prefix must stay in their group")
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

    def keys_values(self, layer: int, used: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, H, shared + used, hd) of one layer, the prefix repeated."""
        k, v = self.k[layer, :, :, :used], self.v[layer, :, :, :used]
        if self.shared:
            copies = self.batch_size // self.n_groups
            pk = self.prefix_k[layer].repeat_interleave(copies, 0)
            pv = self.prefix_v[layer].repeat_interleave(copies, 0)
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        return k, v

    @staticmethod
    def bytes_needed(config, batch_size: int, bytes_per_element: int = 4) -> int:
        """Memory of a cache for ``batch_size`` rows (keys and values, all layers)."""
        positions = config.goal_dim + config.block_size
        return 2 * config.n_layer * batch_size * positions * config.n_embd * bytes_per_element


def shared_prefix_attention(
    q: torch.Tensor, cache: KVCache, layer: int, used: int, bias: torch.Tensor
) -> torch.Tensor:
    """Attention of one new token per row (q: B, H, 1, hd) over a cache with a shared prefix.

    A group's prefix scores are one matrix product per head, the rest one per row; one softmax
    over both. ``bias`` (shared + used,) is 0 where a key may be seen and -inf where not.
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
