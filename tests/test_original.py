"""Original checkpoints import into ttlib, and ttlib computes what the original computes."""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from ttlib.data import DataConfig, Episode, SequenceDataset, returns_to_go
from ttlib.interop.checkpoint import (
    OriginalQuantileDiscretizer,
    latest_epoch,
    load_original_checkpoint,
    load_original_config,
    original_transitions,
)
from ttlib.interop.d4rl_hdf5 import episodes_from_d4rl, read_d4rl_hdf5, write_d4rl_hdf5
from ttlib.interop.original import (
    OriginalCheckpointError,
    OriginalGPT,
    OriginalGPTConfig,
    original_from_ttlib,
    original_state_dict_from_ttlib,
    ttlib_from_original,
)
from ttlib.interop.original_planner import filter_cdf, original_beam_plan, original_value_fn
from ttlib.model import GPTConfig, TrajectoryGPT

OBS, ACT, N = 3, 2, 10
TD = OBS + ACT + 2


def original_config(n_bins=N, n_transitions=4, **kw) -> OriginalGPTConfig:
    return OriginalGPTConfig(
        vocab_size=n_bins,
        block_size=n_transitions * TD - 1,
        n_layer=2,
        n_head=2,
        n_embd=16,
        observation_dim=OBS,
        action_dim=ACT,
        transition_dim=TD,
        **kw,
    )


def sharpen(model: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Random weights large enough that the model's distributions are far from uniform."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" not in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def d4rl_episodes(seed=0) -> list[Episode]:
    """Six short episodes, two of them ending in a real terminal, the rest in a time limit."""
    rng = np.random.default_rng(seed)
    eps = []
    for i, length in enumerate([40, 25, 33, 40, 28, 35]):
        eps.append(
            Episode(
                observations=rng.normal(size=(length, OBS)).astype(np.float32),
                actions=rng.uniform(-1, 1, (length, ACT)).astype(np.float32),
                rewards=rng.normal(1.0, 0.5, length).astype(np.float32),
                terminated=i in (1, 4),
            )
        )
    return eps


@contextlib.contextmanager
def fake_original_package():
    """Classes named like the original's, in modules that exist only inside this block."""
    names = [
        "trajectory",
        "trajectory.utils",
        "trajectory.utils.config",
        "trajectory.models",
        "trajectory.models.transformers",
        "trajectory.datasets",
        "trajectory.datasets.sequence",
    ]
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}

    class Config:
        def __init__(self, _class, **kwargs):
            self._class = _class
            self._dict = dict(kwargs)

    class GPT:
        pass

    class DiscretizedDataset:
        pass

    for cls, mod in (
        (Config, "trajectory.utils.config"),
        (GPT, "trajectory.models.transformers"),
        (DiscretizedDataset, "trajectory.datasets.sequence"),
    ):
        cls.__module__, cls.__qualname__ = mod, cls.__name__
        setattr(mods[mod], cls.__name__, cls)
    sys.modules.update(mods)
    try:
        yield Config, GPT, DiscretizedDataset
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def write_original_run(directory, states: dict[int, dict], cfg: OriginalGPTConfig, n_bins=N):
    """A run directory in the original's layout: state_{E}.pt + the two config pickles."""
    directory.mkdir(parents=True, exist_ok=True)
    for epoch, state in states.items():
        torch.save(state, directory / f"state_{epoch}.pt")
    with fake_original_package() as (Config, GPT, DiscretizedDataset):
        model_cfg = Config(GPT, **vars(cfg))
        data_cfg = Config(
            DiscretizedDataset,
            env="halfcheetah-medium-v2",
            N=n_bins,
            penalty=-100,
            sequence_length=10,
            step=1,
            discount=0.99,
            discretizer="QuantileDiscretizer",
        )
        (directory / "model_config.pkl").write_bytes(pickle.dumps(model_cfg))
        (directory / "data_config.pkl").write_bytes(pickle.dumps(data_cfg))
    assert "trajectory" not in sys.modules


# ------------------------------------------------------------------ model
def test_reference_logits_equal_ttlib_logits_with_the_same_weights():
    torch.manual_seed(0)
    ref = sharpen(OriginalGPT(original_config()))
    model = ttlib_from_original(ref)
    for length in (TD * 4 - 1, 2 * TD + 3, 1):
        x = torch.randint(0, N + 1, (3, length))  # includes the stop token N
        a, _ = ref(x)
        b, _ = model(x)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_weights_round_trip_between_layouts():
    torch.manual_seed(1)
    model = sharpen(TrajectoryGPT(GPTConfig(OBS, ACT, n_bins=N, n_transitions=4, n_embd=16)))
    back = ttlib_from_original(original_from_ttlib(model))
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_reference_loss_equals_ttlib_loss():
    torch.manual_seed(2)
    ref = sharpen(OriginalGPT(original_config()), std=0.05)
    model = ttlib_from_original(ref)
    T = 4 * TD - 1
    x, y = torch.randint(0, N + 1, (2, T)), torch.randint(0, N + 1, (2, T))
    mask = torch.ones(2, T)
    torch.testing.assert_close(model(x, y, mask)[1], ref(x, y, mask)[1], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- checkpoints
def test_original_checkpoint_imports_with_equal_logits(tmp_path):
    torch.manual_seed(3)
    cfg = original_config()
    old = OriginalGPT(cfg).state_dict()
    ref = sharpen(OriginalGPT(cfg), seed=3)
    run = tmp_path / "logs" / "halfcheetah-medium-v2" / "gpt" / "pretrained"
    write_original_run(run, {0: old, 16: ref.state_dict()}, cfg)
    h5 = write_d4rl_hdf5(tmp_path / "halfcheetah-medium-v2.hdf5", d4rl_episodes())

    ck = load_original_checkpoint(run, h5)  # 'latest' = state_16.pt
    assert ck.epoch == 16 == latest_epoch(run)
    assert ck.model_config["n_embd"] == 16 and ck.data_config["N"] == N
    x = torch.randint(0, N + 1, (2, cfg.block_size))
    torch.testing.assert_close(ck.model(x)[0], ref(x)[0], rtol=0, atol=1e-5)

    # The discretizer, rebuilt independently here from the rules the original follows.
    arrays = read_d4rl_hdf5(h5)
    rows = len(arrays["rewards"]) - 1
    done = (arrays["terminals"] | arrays["timeouts"])[:rows]
    r = arrays["rewards"][:rows].astype(np.float64)
    r[arrays["terminals"][:rows]] = -100.0
    ends = np.flatnonzero(done) + 1
    v = np.concatenate([returns_to_go(seg, 0.99) for seg in np.split(r, ends) if len(seg)])
    joined = np.c_[arrays["observations"][:rows], arrays["actions"][:rows], r, v]
    thresholds = np.r_[np.sort(joined, 0)[:: math.ceil(rows / N)], joined.max(0, keepdims=True)]
    np.testing.assert_allclose(ck.discretizer.thresholds, thresholds, rtol=1e-12, atol=1e-9)
    assert ck.discretizer.n_real_bins == N and not ck.notes

    # A D4RL file is also a dataset source; the imported discretizer tokenises it.
    episodes = episodes_from_d4rl(h5)
    ds = SequenceDataset(episodes, DataConfig("d4rl-file"), discretizer=ck.discretizer)
    assert len(ds) == rows - len(episodes)  # a window at every step but each episode's last


def test_load_without_latest_epoch_or_dataset(tmp_path):
    cfg = original_config()
    write_original_run(tmp_path, {4: OriginalGPT(cfg).state_dict()}, cfg)
    ck = load_original_checkpoint(tmp_path, None, epoch=4)
    assert ck.discretizer is None and ck.model.config.block_size == cfg.block_size
    with pytest.raises(OriginalCheckpointError, match="state_5.pt"):
        load_original_checkpoint(tmp_path, None, epoch=5)


def test_mask_that_is_not_the_value_mask_is_rejected(tmp_path):
    cfg = original_config()
    state = OriginalGPT(cfg).state_dict()
    state["blocks.1.attn.mask"] = torch.tril(torch.ones_like(state["blocks.1.attn.mask"]))
    write_original_run(tmp_path, {0: state}, cfg)
    with pytest.raises(OriginalCheckpointError, match="blocks.1.attn.mask"):
        load_original_checkpoint(tmp_path, None)


def test_config_unpickler_refuses_anything_but_config(tmp_path):
    evil = tmp_path / "model_config.pkl"
    evil.write_bytes(pickle.dumps(print))  # a global outside the allowed names
    with pytest.raises(OriginalCheckpointError, match="refusing to load builtins.print"):
        load_original_config(evil)
    with fake_original_package() as (Config, GPT, _):
        cfg = Config(GPT, n_layer=4)
        for protocol in (0, 2, 5):
            (tmp_path / f"p{protocol}.pkl").write_bytes(pickle.dumps(cfg, protocol=protocol))
        (tmp_path / "instance.pkl").write_bytes(pickle.dumps(GPT()))  # a class name, called
    with pytest.raises(OriginalCheckpointError):
        load_original_config(tmp_path / "instance.pkl")
    for protocol in (0, 2, 5):
        loaded = load_original_config(tmp_path / f"p{protocol}.pkl")
        assert loaded.class_name == "GPT" and loaded["n_layer"] == 4


# ------------------------------------------------------------ D4RL format
def test_d4rl_file_splits_where_the_original_does(tmp_path):
    eps = d4rl_episodes()
    h5 = write_d4rl_hdf5(tmp_path / "d.hdf5", eps)
    back = episodes_from_d4rl(h5)
    assert [len(e) for e in back] == [len(e) for e in eps]
    assert [e.terminated for e in back] == [e.terminated for e in eps]
    np.testing.assert_array_equal(back[2].actions, eps[2].actions)
    joined, lengths = original_transitions(read_d4rl_hdf5(h5))
    assert lengths == [len(e) for e in eps]
    ends = np.cumsum(lengths) - 1
    np.testing.assert_array_equal(joined[ends[[1, 4]], -2], [-100.0, -100.0])
    assert (joined[ends[[0, 2, 3, 5]], -2] != -100.0).all()  # time limits: no penalty
    np.testing.assert_array_equal(joined[ends, -1], 0.0)  # nothing after the last step


def test_missing_timeouts_key_is_named(tmp_path):
    arrays = {"observations": np.zeros((5, 2)), "actions": np.zeros((5, 1))}
    with pytest.raises(ValueError, match="timeouts"):
        read_d4rl_hdf5({**arrays, "rewards": np.zeros(5), "terminals": np.zeros(5)})


def test_small_datasets_get_fewer_quantile_bins_like_the_original():
    x = np.arange(150, dtype=np.float64)[:, None]  # step ceil(150/100)=2: 75 thresholds + max
    d = OriginalQuantileDiscretizer(100).fit(x)
    assert d.thresholds.shape == (76, 1) and d.n_real_bins == 75
    np.testing.assert_array_equal(d.encode(np.array([[0.0], [3.0], [148.5]]))[:, 0], [0, 1, 74])
    # At or above the maximum every threshold is passed: the original returns their count.
    np.testing.assert_array_equal(d.encode(np.array([[149.0], [1e6]]))[:, 0], [76, 76])
    assert d.decode(np.array([[76]]))[0, 0] == 149.0
    with pytest.raises(ValueError, match="cannot plan"):
        original_value_fn(d)
    # With enough data the encoding is the plain quantile one.
    big = np.random.default_rng(0).normal(size=(20_000, 2))
    d = OriginalQuantileDiscretizer(100).fit(big)
    assert d.n_real_bins == 100
    probe = np.r_[big[:500], [[9.0, 9.0], [-9.0, -9.0]]]
    np.testing.assert_array_equal(d.encode(probe), np.clip(_searchsorted(d, probe), 0, 99))


def _searchsorted(d, x):
    return np.stack(
        [np.searchsorted(d.thresholds[:, j], x[:, j], side="right") - 1 for j in range(2)], 1
    )


# ------------------------------------------------------------------ planner
def test_filter_cdf_keeps_the_most_likely_tokens_holding_the_top_mass():
    probs = torch.tensor([[0.05, 0.1, 0.15, 0.3, 0.4]])
    kept = filter_cdf(probs.log(), 0.6) > -1000
    # ascending cumsum: .05 .15 .30 .60 1.0 -> below 0.6: the three smallest are dropped
    assert kept.tolist() == [[False, False, False, True, True]]


def _planning_pair(seed=0, n_bins=20):
    torch.manual_seed(seed)
    cfg = GPTConfig(OBS, ACT, n_bins=n_bins, n_transitions=10, n_layer=2, n_head=2, n_embd=32)
    model = sharpen(TrajectoryGPT(cfg), seed=seed)
    model.config.dropout = 0.0
    disc = OriginalQuantileDiscretizer(n_bins).fit(
        np.random.default_rng(seed).normal(size=(n_bins * n_bins, TD))
    )
    return model, original_from_ttlib(model), disc


def test_deterministic_plan_equals_the_reference_plan_when_the_window_fits():
    search = pytest.importorskip("ttlib.search")
    model, ref, disc = _planning_pair()
    n_bins = model.config.n_bins
    for trial in range(2):
        g = torch.Generator().manual_seed(trial)
        context = torch.randint(0, n_bins, (1, 2 * TD + OBS), generator=g)
        context[0, TD - 1 : 2 * TD : TD] = n_bins - 1  # the value placeholder
        cfg = search.PlannerConfig(horizon=3, beam_width=6, n_expand=2, deterministic=True)
        plan = search.beam_search(model, disc, context, cfg)
        want = original_beam_plan(
            ref, original_value_fn(disc), context, 3, 6, 2, OBS, ACT, deterministic=True
        )
        assert torch.equal(plan.tokens[0], want.tokens)
        assert float(plan.score[0]) == pytest.approx(want.score, abs=1e-5)


def test_reference_planner_crops_to_whole_transitions_and_samples_valid_tokens():
    _, ref, disc = _planning_pair(seed=1)
    context = torch.randint(0, 20, (1, 5 * TD + OBS))  # longer than the 5-transition window
    plan = original_beam_plan(
        ref, original_value_fn(disc), context, 2, 4, 2, OBS, ACT,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert plan.tokens.shape == (2, TD)
    assert plan.tokens.min() >= 0 and plan.tokens.max() <= 20


def test_state_dict_in_original_layout_has_the_original_keys():
    model = TrajectoryGPT(GPTConfig(OBS, ACT, n_bins=N, n_transitions=4, n_layer=1, n_embd=16))
    keys = set(original_state_dict_from_ttlib(model))
    assert {"blocks.0.attn.query.weight", "blocks.0.attn.mask", "head.weight"} <= keys
    assert not any("qkv" in k for k in keys)
