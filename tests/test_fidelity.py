"""ttlib trains as the original Trajectory Transformer does (issue #17).

Each test compares ttlib with the reference copy of the original in ``ttlib.interop`` on
Hopper-like data: short episodes that end in a fall (a real terminal), one cut by a time
limit early, and two that run to the time limit at ``max_path_length`` (1000, as in D4RL).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ttlib.data import DataConfig, Episode, SequenceDataset
from ttlib.interop.checkpoint import OriginalQuantileDiscretizer, original_transitions
from ttlib.interop.d4rl_hdf5 import episodes_from_d4rl, read_d4rl_hdf5, write_d4rl_hdf5
from ttlib.interop.original import (
    OriginalGPT,
    original_from_ttlib,
    ttlib_from_original,
)
from ttlib.interop.original_planner import original_beam_plan, original_value_fn
from ttlib.interop.original_training import original_learning_rates, original_windows
from ttlib.model import GPTConfig, TrajectoryGPT
from ttlib.search import PlannerConfig, beam_search
from ttlib.train import TrainConfig, train

from test_original import original_config  # the same small original model

OBS, ACT, N, L = 3, 2, 10, 4  # dims, bins, transitions per window
TD = OBS + ACT + 2
MAX_PATH = 1000  # the original's max_path_length, DataConfig's default


def hopper_like_episodes(seed=0) -> list[Episode]:
    """Falls (terminated) at 12 and 7 steps, a time limit at 20, two at MAX_PATH."""
    rng = np.random.default_rng(seed)
    eps = []
    for length, fell in [(MAX_PATH, False), (12, True), (20, False), (7, True), (MAX_PATH, False)]:
        eps.append(
            Episode(
                observations=rng.normal(size=(length, OBS)).astype(np.float32),
                actions=rng.uniform(-1, 1, (length, ACT)).astype(np.float32),
                rewards=rng.normal(1.0, 0.5, length).astype(np.float32),
                terminated=fell,
            )
        )
    return eps


def both_pipelines(tmp_path):
    """(ttlib's dataset, the original's items) on one D4RL-format file and one discretizer."""
    h5 = write_d4rl_hdf5(tmp_path / "hopper-like.hdf5", hopper_like_episodes())
    arrays = read_d4rl_hdf5(h5)
    joined, _ = original_transitions(arrays)
    disc = OriginalQuantileDiscretizer(N).fit(joined)
    cfg = DataConfig("hopper-like", n_bins=N, n_transitions=L)
    ours = SequenceDataset(episodes_from_d4rl(h5), cfg, discretizer=disc)
    theirs = original_windows(arrays, disc, N, sequence_length=L, max_path_length=MAX_PATH)
    return ours, theirs


def test_windows_targets_and_masks_equal_the_originals(tmp_path):
    ours, theirs = both_pipelines(tmp_path)
    assert len(ours) == len(theirs) == sum(n - 1 for n in (MAX_PATH, 12, 20, 7, MAX_PATH))
    x, y, mask = ours.batch(torch.arange(len(ours)))
    X, Y, M = (torch.stack(t) for t in zip(*theirs, strict=True))
    torch.testing.assert_close(x, X, rtol=0, atol=0)
    torch.testing.assert_close(y, Y, rtol=0, atol=0)
    torch.testing.assert_close(mask, M.float(), rtol=0, atol=0)
    # The data does exercise both kinds of ending: stop targets are trained after the falls
    # and the early time limit, and some are masked only past MAX_PATH.
    assert ((Y == N) & M).any() and ((Y == N) & ~M).any()


def _twin_models(seed=0):
    torch.manual_seed(seed)
    ref = OriginalGPT(original_config(N, L, embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0))
    with torch.no_grad():  # non-zero position embeddings, so they get checked too
        ref.pos_emb.normal_(0, 0.02)
    return ref.double(), ttlib_from_original(ref).double()


def test_loss_and_gradients_equal_the_originals_on_the_originals_windows(tmp_path):
    _, theirs = both_pipelines(tmp_path)
    # the windows near the ends of the episodes: stop targets trained and masked ones
    near_end = [i for i, (_, y, _) in enumerate(theirs) if (y == N).any()]
    X, Y, M = (torch.stack(t) for t in zip(*[theirs[i] for i in near_end], strict=True))
    assert not M.all()  # a mix of masked and unmasked targets: where normalisation matters
    ref, model = _twin_models()
    ref.train(), model.train()
    _, ref_loss = ref(X, Y, M)
    _, loss = model(X, Y, M)
    assert abs(loss.item() - ref_loss.item()) < 1e-6, (loss.item(), ref_loss.item())
    ref_loss.backward()
    loss.backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        if ".attn.qkv." in name:
            stem, kind = name.rsplit(".qkv.", 1)
            parts = [ref_grads[f"{stem}.{k}.{kind}"].grad for k in ("query", "key", "value")]
            expected = torch.cat(parts)
        else:
            expected = ref_grads["head.weight" if name == "head" else name].grad
        torch.testing.assert_close(p.grad, expected, rtol=0, atol=1e-5, msg=name)


def test_head_initialisation_is_the_original_einlinear():
    torch.manual_seed(0)
    cfg = GPTConfig(observation_dim=11, action_dim=3, n_embd=128)
    head = TrajectoryGPT(cfg).head.detach()
    bound = 1 / math.sqrt(cfg.n_embd)  # kaiming-uniform, a = sqrt(5), fan_in = n_embd
    assert head.abs().max() <= bound
    assert abs(float(head.std()) - bound / math.sqrt(3)) < 0.002, float(head.std())


def _paper_preset_counts(steps, batch, block, seed=0):
    """Non-stop targets per batch: a few windows of each batch run past an episode's end."""
    rng = np.random.default_rng(seed)
    return (
        batch * block - rng.binomial(batch, 0.02, steps) * rng.integers(1, block, steps)
    ).tolist()


def test_learning_rate_of_every_step_of_a_paper_preset_run_equals_the_originals():
    from ttlib.schedule import LRSchedule

    # The d4rl paper preset on Hopper: 1M transitions in ~1000-step episodes, 200k steps.
    steps, batch, block, lr = 200_000, 256, 10 * 16 - 1, 6e-4
    n_windows = 1_000_000 - 1000
    counts = _paper_preset_counts(steps, batch, block)
    expected = original_learning_rates(counts, lr, n_windows * block, 20 * n_windows * block)
    schedule = LRSchedule(TrainConfig(max_steps=steps, batch_size=batch, lr=lr), n_windows, block)
    got = []
    for count in counts:
        got.append(schedule.lr(len(got)))
        schedule.advance(count)
    got, expected = np.array(got), np.array(expected)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    # the run goes past final_tokens, where the original's cosine rises again
    assert expected[-1] > 2 * expected.min()


def test_training_runs_at_the_originals_learning_rates():
    from conftest import linear_episodes

    eps = linear_episodes(6, 12, terminate_every=2)
    ds = SequenceDataset(eps, DataConfig("lin", n_bins=N, n_transitions=L))
    mcfg = GPTConfig(
        ds.observation_dim,
        ds.action_dim,
        n_bins=N,
        n_transitions=L,
        n_layer=1,
        n_head=2,
        n_embd=16,
        dropout=0.0,
    )
    cfg = TrainConfig(max_steps=40, batch_size=16, log_every=1, seed=3)
    history = train(ds, mcfg, cfg, progress=False).history
    # The same batches, drawn as the training loop draws them, counted as the original does.
    gen = torch.Generator().manual_seed(cfg.seed)
    counts = []
    for _ in range(cfg.max_steps):
        index = torch.randint(len(ds), (cfg.batch_size,), generator=gen)
        counts.append(int((ds.batch(index, generator=gen)[1] != N).sum()))
    warmup = len(ds) * mcfg.block_size
    expected = original_learning_rates(counts, cfg.lr, warmup, 20 * warmup)
    np.testing.assert_allclose([h["lr"] for h in history], expected, rtol=1e-12)


# ------------------------------------------------------------------ planner
def falling_episodes(n=200, length=12, seed=0) -> list[Episode]:
    """One-dimensional toy: an action >= 0 keeps the agent up (reward 1 per step), an action
    < 0 makes it fall at once (reward 3, the episode ends). Tempting but fatal."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        obs, act, rew = [], [], []
        for _t in range(length):
            a = rng.uniform(0, 1) * (-1 if rng.random() < 0.3 else 1)
            obs.append([rng.uniform(-1, 1)])
            act.append([a])
            rew.append(3.0 if a < 0 else 1.0)
            if a < 0:
                break
        eps.append(
            Episode(
                observations=np.array(obs, np.float32),
                actions=np.array(act, np.float32),
                rewards=np.array(rew, np.float32),
                terminated=act[-1][0] < 0,
            )
        )
    return eps


@pytest.mark.slow
def test_a_plan_that_runs_into_a_termination_loses_to_one_that_does_not():
    # No termination penalty: only the stop token tells the model the episode is over, and
    # the planner drops its mass from E[r] and E[V] without renormalising (the original's
    # value_fn), so a fall scores its one reward and nothing after it.
    cfg = DataConfig(
        "falls", n_bins=N, n_transitions=L, termination_penalty=None, discretizer="uniform"
    )
    ds = SequenceDataset(falling_episodes(), cfg)
    mcfg = GPTConfig(1, 1, n_bins=N, n_transitions=L, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    model = train(
        ds, mcfg, TrainConfig(max_steps=400, batch_size=64, lr=3e-3, seed=0), progress=False
    ).model
    # After a falling transition the model predicts the stop token.
    fall = ds.discretizer.encode(np.array([[0.0, -0.8, 3.0, 0.0]]))
    logits, _ = model(torch.as_tensor(fall, dtype=torch.long))
    assert logits[0, -1].softmax(-1)[N] > 0.5
    # Plan from a fresh state with the two first actions on offer: the upright one wins.
    obs = torch.as_tensor(ds.discretizer.encode(np.array([[0.0]]), dims=[0]), dtype=torch.long)
    plan_cfg = PlannerConfig(
        horizon=3,
        beam_width=N,
        n_expand=1,
        cdf_act=None,
        max_context_transitions=0,
        deterministic=True,
    )
    plan = beam_search(model, ds.discretizer, obs, plan_cfg)
    assert float(plan.action[0, 0]) > 0, plan.sequence
    # The original planner, on the same weights, scores and picks the same plan.
    ref = original_beam_plan(
        original_from_ttlib(model),
        original_value_fn(ds.discretizer),
        obs,
        horizon=3,
        beam_width=N,
        n_expand=1,
        observation_dim=1,
        action_dim=1,
        cdf_act=None,
        deterministic=True,
    )
    torch.testing.assert_close(plan.tokens[0], ref.tokens)
    assert abs(float(plan.score[0]) - ref.score) < 1e-4
