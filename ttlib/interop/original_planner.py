"""The original Trajectory Transformer's beam-search planner, as a faithful reference.

:func:`original_beam_plan` re-implements the released planner: a full forward pass of
:class:`ttlib.interop.original.OriginalGPT` per sampled token, over a sliding window. It is the
yardstick of the planner equivalence tests and of ``benchmarks/``.

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

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ttlib.interop.original import OriginalGPT

REWARD_DIM = VALUE_DIM = 1


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
        return tuple(torch.as_tensor(x, dtype=torch.float32, device=probs.device) for x in (r, v))

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
