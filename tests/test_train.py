import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ttlib.data import DataConfig, SequenceDataset
from ttlib.train import CheckpointError, TrainConfig, gpt_config_for, load_checkpoint, train

from conftest import linear_episodes

SMALL = dict(n_layer=2, n_head=2, n_embd=32, dropout=0.0)


def small_dataset(n_bins=20, n_transitions=4, seed=1):
    eps = linear_episodes(n_episodes=60, length=40, seed=seed)
    return SequenceDataset(eps, DataConfig("synthetic", n_bins=n_bins, n_transitions=n_transitions))


@pytest.mark.slow
def test_model_learns_the_dynamics_not_just_the_marginals():
    """Quantile bins make every state token's marginal uniform, so a model that ignored the
    previous transition could not beat ln K nats on state tokens. The dynamics are
    deterministic given (s, a); what is left is the error of knowing s only to within a bin.
    On held-out episodes, states after the first transition must cost < ln(K) / 2 nats."""
    K = 10
    ds = small_dataset(n_bins=K, n_transitions=3)
    cfg = TrainConfig(max_steps=250, batch_size=64, lr=3e-3, log_every=50, warmup_frac=0.02)
    model = train(ds, gpt_config_for(ds, **SMALL), cfg, progress=False).model
    held = SequenceDataset(linear_episodes(20, 40, seed=7), ds.cfg, discretizer=ds.discretizer)
    x, y, mask = held.batch(torch.arange(len(held)))
    with torch.no_grad():
        logits, _ = model(x)
    td = ds.transition_dim
    target_pos = torch.arange(1, x.shape[1] + 1)
    state_after_first = (target_pos % td < ds.observation_dim) & (target_pos >= td)
    ce = F.cross_entropy(
        logits[:, state_after_first].reshape(-1, K + 1),
        y[:, state_after_first].reshape(-1),
        reduction="none",
    ).view(len(x), -1)
    m = mask[:, state_after_first]
    held_out_state_loss = float((ce * m).sum() / m.sum())
    assert held_out_state_loss < 0.5 * math.log(K)


def test_interrupted_training_resumes_to_identical_weights(tmp_path):
    ds = small_dataset()
    mcfg = gpt_config_for(ds, n_layer=1, n_head=2, n_embd=16, dropout=0.1)
    cfg = TrainConfig(max_steps=30, batch_size=16, checkpoint_every=7, log_every=5)
    full = train(ds, mcfg, cfg, tmp_path / "a", progress=False)
    part = train(ds, mcfg, cfg, tmp_path / "b", progress=False, stop_at_step=16)
    assert part.steps_run == 16
    first_part = load_checkpoint(tmp_path / "b")[2]["train_seconds"]
    resumed = train(ds, mcfg, cfg, tmp_path / "b", progress=False)
    assert resumed.steps_run == 14
    for (k, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    assert full.history == resumed.history
    # the checkpoint keeps the wall time of all parts of a resumed run, not just the last
    assert load_checkpoint(tmp_path / "b")[2]["train_seconds"] > first_part > 0


def test_checkpoint_roundtrip_reproduces_logits(tmp_path):
    ds = small_dataset()
    mcfg = gpt_config_for(ds, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    res = train(ds, mcfg, TrainConfig(max_steps=5, batch_size=8), tmp_path, progress=False)
    model, disc, ckpt = load_checkpoint(tmp_path)
    x, *_ = ds.batch(torch.arange(4))
    torch.testing.assert_close(model(x)[0], res.model(x)[0], rtol=0, atol=0)
    np.testing.assert_array_equal(disc.edges, ds.discretizer.edges)
    assert ckpt["data_config"]["n_bins"] == 20


def test_resume_with_a_different_config_names_the_mismatch(tmp_path):
    ds = small_dataset()
    mcfg = gpt_config_for(ds, n_layer=1, n_head=2, n_embd=16)
    train(ds, mcfg, TrainConfig(max_steps=2, batch_size=4), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="n_embd: checkpoint 16 vs now 32"):
        train(
            ds,
            gpt_config_for(ds, n_layer=1, n_head=2, n_embd=32),
            TrainConfig(max_steps=2, batch_size=4),
            tmp_path,
            progress=False,
        )


def test_garbage_file_is_not_a_checkpoint(tmp_path):
    p = tmp_path / "checkpoint.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(p)


def test_run_length_schedule_is_an_option_and_unknown_ones_are_refused():
    from ttlib.schedule import LRSchedule

    cfg = TrainConfig(max_steps=100, schedule="run_length", warmup_frac=0.1)
    schedule = LRSchedule(cfg, n_windows=10**6, block_size=159)
    rates = [schedule.lr(s) for s in range(100)]
    assert rates[:10] == pytest.approx([cfg.lr * (s + 1) / 10 for s in range(10)])  # warm-up
    assert max(rates) == pytest.approx(cfg.lr) and rates[-1] == pytest.approx(
        0.1 * cfg.lr, rel=0.01
    )
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")


def test_held_out_loss_is_logged_without_changing_the_run():
    ds = small_dataset()
    held = SequenceDataset(linear_episodes(10, 40, seed=7), ds.cfg, discretizer=ds.discretizer)
    cfg = TrainConfig(max_steps=40, batch_size=16, lr=3e-3, log_every=20, schedule="run_length")
    mcfg = gpt_config_for(ds, **{**SMALL, "dropout": 0.1})  # dropout: eval mode must be restored
    plain = train(ds, mcfg, cfg, progress=False)
    watched = train(ds, mcfg, cfg, progress=False, eval_dataset=held, eval_windows=24)
    pairs = zip(plain.model.state_dict().values(), watched.model.state_dict().values(), strict=True)
    for a, b in pairs:
        assert torch.equal(a, b)  # its own random stream: the weights are those of the plain run
    first, last = watched.history[0], watched.history[-1]
    assert [h["loss"] for h in plain.history] == [h["loss"] for h in watched.history]
    assert "val_loss_state" not in plain.history[0]
    assert all(math.isfinite(h["val_loss_state"]) for h in watched.history)
    assert last["val_loss_state"] < first["val_loss_state"]  # it learns the held-out dynamics too
    assert watched.model.training is False  # train() returns the model in eval mode


def test_constant_schedule_warms_up_then_stays_flat_whatever_the_run_length():
    from ttlib.schedule import LRSchedule

    block = 50
    rates = {}
    for steps in (40, 400):
        cfg = TrainConfig(max_steps=steps, batch_size=4, schedule="constant", warmup_tokens=2000)
        schedule = LRSchedule(cfg, n_windows=10**6, block_size=block)
        rates[steps] = [schedule.lr(s) for s in range(40)]
    assert rates[40] == rates[400]  # the planned length of the run changes nothing
    warmup = 2000 // (4 * block)  # 10 steps of 200 tokens
    assert rates[40][:warmup] == pytest.approx([cfg.lr * (s + 1) / warmup for s in range(warmup)])
    assert rates[40][warmup - 1 :] == [cfg.lr] * (40 - warmup + 1)
    # only this schedule writes warmup_tokens, so the others keep their cache keys
    assert "warmup_tokens" not in TrainConfig(schedule="run_length").to_dict()
    assert cfg.to_dict()["warmup_tokens"] == 2000


def test_constant_schedule_run_extended_from_its_checkpoint_equals_one_long_run(tmp_path):
    ds = small_dataset()
    mcfg = gpt_config_for(ds, n_layer=1, n_head=2, n_embd=16, dropout=0.1)

    def cfg(steps, schedule="constant"):
        return TrainConfig(max_steps=steps, batch_size=8, schedule=schedule, warmup_tokens=500,
                           checkpoint_every=5, log_every=4)  # fmt: skip

    whole = train(ds, mcfg, cfg(30), tmp_path / "whole", progress=False)
    short = train(ds, mcfg, cfg(12), tmp_path / "grown", progress=False)  # a finished run
    assert short.steps_run == 12
    grown = train(ds, mcfg, cfg(30), tmp_path / "grown", progress=False)  # extended later
    assert grown.steps_run == 18
    for (k, a), b in zip(whole.model.state_dict().items(), grown.model.state_dict().values(),
                         strict=True):  # fmt: skip
        assert torch.equal(a, b), k
    assert [h["lr"] for h in whole.history] == [h["lr"] for h in grown.history]
    # a schedule that depends on the run's length cannot be extended like that
    train(ds, mcfg, cfg(12, "run_length"), tmp_path / "cosine", progress=False)
    with pytest.raises(CheckpointError, match="max_steps: checkpoint 12 vs now 30"):
        train(ds, mcfg, cfg(30, "run_length"), tmp_path / "cosine", progress=False)
