"""The key/value cache of beam search: one row per beam, shared past read once.

Beam search feeds one token per forward pass, so every layer's keys and values are kept
here instead of being recomputed. Beams of one episode share the context (``share_prefix``)
and the candidates of one beam share their parent's past (``expand``); the two attention
functions below read those shared keys once per group or parent instead of once per row.
"""

from __future__ import annotations

import torch


class KVCache:
    """Preallocated keys and values of every layer, for incremental decoding.

    ``config`` is the model's :class:`ttlib.model.GPTConfig` (read, not imported: the model
    imports this module).

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
    def bytes_needed(config, batch_size: int, bytes_per_element: int = 4) -> int:
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
