import pytest
import torch

from ttlib.kvcache import KVCache
from ttlib.model import GPTConfig

from conftest import tiny_gpt


def tiny(goal_dim=0, **kw):
    return tiny_gpt(n_transitions=6, goal_dim=goal_dim, **kw)


def test_block_size_and_vocabulary_follow_the_paper():
    cfg = GPTConfig(observation_dim=17, action_dim=6)
    assert cfg.transition_dim == 25 and cfg.block_size == 249 and cfg.vocab_size == 2501


@pytest.mark.parametrize("t", [0, 7, 13, 20])
def test_perturbing_future_tokens_leaves_past_logits_unchanged(t):
    m = tiny()
    x = torch.randint(0, 11, (3, 4 * m.config.transition_dim))
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randint(0, 11, x2[:, t + 1 :].shape)
    a, _ = m(x)
    b, _ = m(x2)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_value_tokens_are_invisible_to_every_query():
    m = tiny()
    td = m.config.transition_dim
    x = torch.randint(0, 10, (2, 3 * td))
    x2 = x.clone()
    x2[:, td - 1] = (x2[:, td - 1] + 5) % 10  # change the first value token
    a, _ = m(x)
    b, _ = m(x2)
    # Only the value position's own output may change (its residual stream holds its embedding).
    changed = (a - b).abs().amax(dim=(0, 2)) > 0
    assert changed.nonzero().flatten().tolist() == [td - 1]


@pytest.mark.parametrize("goal_dim", [0, 2])
def test_cached_logits_equal_full_forward(goal_dim):
    m = tiny(goal_dim)
    td = m.config.transition_dim
    x = torch.randint(0, 11, (4, 5 * td))
    g = torch.randint(0, 10, (4, goal_dim)) if goal_dim else None
    full, _ = m(x, goal=g)
    cache = m.new_cache(4)
    outs, p = [], 0
    # A 3-transition prefix, then two generated transitions one token at a time.
    for n in [3 * td] + [1] * (2 * td):
        out, _ = m(x[:, p : p + n], goal=g, cache=cache)
        outs.append(out)
        p += n
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=0, atol=1e-5)


def test_cache_select_reorders_rows():
    m = tiny()
    td = m.config.transition_dim
    x = torch.randint(0, 11, (3, 2 * td))
    cache = m.new_cache(3)
    m(x[:, :td], cache=cache)
    cache.select(torch.tensor([2, 2, 0, 1]))
    out, _ = m(x[[2, 2, 0, 1], td:], cache=cache)
    full, _ = m(x[[2, 2, 0, 1]])
    torch.testing.assert_close(out, full[:, td:], rtol=0, atol=1e-5)


def test_too_long_sequence_raises_a_clear_error():
    m = tiny()
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(1, m.config.block_size + 1, dtype=torch.long))


def test_loss_weights_actions_five_times():
    m = tiny()
    td, obs = m.config.transition_dim, m.config.observation_dim
    x = torch.randint(0, 10, (2, 2 * td))
    y = torch.randint(0, 10, (2, 2 * td))
    logits, loss = m(x, y)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), y.reshape(-1), reduction="none")
    dims = (torch.arange(2 * td) + 1) % td
    w = torch.ones(2 * td)
    w[(dims >= obs) & (dims < obs + 2)] = 5.0
    torch.testing.assert_close(loss, (ce.view(2, -1) * w).mean())


def test_cache_memory_estimate_matches_allocation():
    m = tiny()
    c = KVCache(m.config, 5)
    assert KVCache.bytes_needed(m.config, 5) == c.k.numel() * 4 * 2


def test_attention_maps_are_causal_distributions():
    m = tiny()
    x = torch.randint(0, 10, (1, 2 * m.config.transition_dim))
    att = m.attention_maps(x)
    assert att.shape == (2, 1, 2, x.shape[1], x.shape[1])
    torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:-1]))
    assert torch.triu(att[0, 0, 0], diagonal=1).abs().max() == 0


@pytest.mark.parametrize("goal_dim", [0, 2])
def test_shared_prefix_cache_gives_the_logits_of_a_plain_cache(goal_dim):
    """Two episodes' contexts, shared by 3 beams each, then reordered and decoded as beams."""
    m = tiny(goal_dim)
    td = m.config.transition_dim
    x = torch.randint(0, 11, (2, 2 * td + 3))  # two transitions and an observation
    g = torch.randint(0, 10, (2, goal_dim)) if goal_dim else None
    plain, shared = m.new_cache(2), m.new_cache(2)
    for cache in (plain, shared):
        m(x, goal=g, cache=cache)
    rows = torch.arange(2).repeat_interleave(3)
    plain.select(rows)
    shared.share_prefix(3)
    assert shared.shared == plain.length and shared.n_groups == 2
    new = torch.randint(0, 11, (6, td))
    reorders = {2: torch.tensor([1, 1, 0, 5, 3, 3]), 5: torch.tensor([2, 0, 1, 4, 4, 5])}
    with torch.no_grad():
        for j in range(td):
            a, _ = m(new[:, j : j + 1], cache=plain)
            b, _ = m(new[:, j : j + 1], cache=shared)
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
            if j in reorders:
                for cache in (plain, shared):
                    cache.select(reorders[j])
                new = new[reorders[j]]
        # Several tokens at once over a shared prefix take the general path.
        a, _ = m(new[:, :4], cache=plain)
        b, _ = m(new[:, :4], cache=shared)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    assert plain.length == shared.length


def test_shared_prefix_rows_must_stay_with_their_episode():
    m = tiny()
    cache = m.new_cache(2)
    m(torch.randint(0, 10, (2, 4)), cache=cache)
    cache.share_prefix(2)
    cache.select(torch.tensor([1, 1, 2, 3]))  # fine: rows 0, 1 from group 0, rows 2, 3 from 1
    with pytest.raises(ValueError, match="group"):
        cache.select(torch.tensor([2, 1, 0, 3]))
    with pytest.raises(ValueError, match="already"):
        cache.share_prefix(2)


def test_a_head_count_that_does_not_divide_the_width_is_a_config_error():
    from ttlib.errors import ConfigError

    with pytest.raises(ConfigError, match="n_head=3 .* n_embd=8"):
        GPTConfig(observation_dim=2, action_dim=1, n_head=3, n_embd=8)
