import numpy as np
import pytest
import torch

from ttlib.experiments.attention import (
    TokenLayout,
    head_table,
    pattern_masks,
    pattern_shares,
    uniform_attention,
)

from conftest import tiny_gpt

LAYOUT = TokenLayout(observation_dim=3, action_dim=2, n_tokens=4 * 7 - 1)  # td = 7


def rows_on(keys_of_query) -> torch.Tensor:
    """An attention matrix whose row q spreads its mass evenly over keys_of_query(q)."""
    T = LAYOUT.n_tokens
    att = torch.zeros(T, T)
    for q in range(T):
        keys = keys_of_query(q) or [q]
        att[q, keys] = 1.0 / len(keys)
    return att


def test_token_kinds_and_steps():
    lay = TokenLayout(observation_dim=2, action_dim=1, n_tokens=8)
    assert lay.kind().tolist() == [0, 0, 1, 2, 3, 0, 0, 1]
    assert lay.step().tolist() == [0] * 5 + [1] * 3


def test_pure_markovian_matrix_has_markov_share_one():
    td = LAYOUT.transition_dim
    # every query looks only at the reward token of the transition before its target's
    att = rows_on(lambda q: [((q + 1) // td - 1) * td + td - 2] if q + 1 >= td else [])
    s = pattern_shares(att, LAYOUT).iloc[0]
    assert s["markov"] == pytest.approx(1.0) and s["smoothing"] == pytest.approx(0.0)


def test_pure_same_dimension_matrix_has_smoothing_share_one():
    td, N, M = LAYOUT.transition_dim, LAYOUT.observation_dim, LAYOUT.action_dim
    kinds, dims, steps = LAYOUT.kind(), LAYOUT.dim(), LAYOUT.step()

    def same_dim(q):
        t, d = (q + 1) // td, (q + 1) % td
        if d < N:  # state j: dimension j of every earlier state
            return [k for k in range(q + 1) if steps[k] < t and kinds[k] == 0 and dims[k] == d]
        if d < N + M:  # action: every earlier action dimension
            return [k for k in range(q + 1) if steps[k] < t and kinds[k] == 1]
        return []

    s = pattern_shares(rows_on(same_dim), LAYOUT).iloc[0]
    assert s["smoothing"] == pytest.approx(1.0)
    assert s["smoothing_state"] == pytest.approx(1.0) == s["smoothing_action"]
    assert s["markov"] < 0.9  # mass on transitions t-2, t-3 is not Markovian


def test_a_query_attending_to_itself_is_markovian_not_smoothing():
    s = pattern_shares(torch.eye(LAYOUT.n_tokens), LAYOUT).iloc[0]
    assert s["markov"] == pytest.approx(1.0) and s["smoothing"] == 0.0


def test_uniform_attention_sits_at_chance_and_masks_values():
    u = uniform_attention(LAYOUT)
    torch.testing.assert_close(u.sum(-1), torch.ones(LAYOUT.n_tokens, dtype=torch.float64))
    assert (u[:, LAYOUT.kind() == 3] == 0).all() and (torch.triu(u, 1) == 0).all()
    s = pattern_shares(u, LAYOUT).iloc[0]
    assert 0 < s["smoothing"] < s["markov"] < 1


def test_scored_queries_predict_states_or_actions_after_the_first_transition():
    m = pattern_masks(LAYOUT)
    td = LAYOUT.transition_dim
    scored = np.flatnonzero(m["queries"])
    assert scored.min() == td - 1  # the V position predicts s^0 of transition 1
    assert all(LAYOUT.kind(scored + 1) <= 1)


def test_head_table_of_a_real_model():
    model = tiny_gpt(n_head=3, n_embd=12)
    cfg = model.config
    maps = model.attention_maps(torch.randint(0, 10, (5, cfg.block_size)))
    df = head_table(maps, LAYOUT)
    assert list(zip(df["layer"], df["head"], strict=True)) == [
        (layer, h) for layer in range(2) for h in range(3)
    ]
    assert df[["markov", "smoothing"]].stack().between(0, 1).all()
    with pytest.raises(ValueError, match="does not match"):
        pattern_shares(maps[0, 0], TokenLayout(3, 2, 10))
