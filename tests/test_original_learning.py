"""benchmarks/original_learning.py: the original's training loop and ttlib's learn alike.

With the same initial weights (ttlib's, converted), the same batches (ttlib's draws), no
dropout and the same learning rates, the original code's run (:func:`train_original`:
OriginalGPT, its weighted loss, its optimiser groups, its schedule) and ttlib's
(:func:`ttlib.train.train`) must log the same losses step for step, on the training batch and
on held-out windows: the benchmark then compares codes, not set-ups.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_fidelity import ACT, OBS, L, N, hopper_like_episodes

from ttlib.data import DataConfig, SequenceDataset
from ttlib.interop.original import original_state_dict_from_ttlib
from ttlib.model import GPTConfig, TrajectoryGPT
from ttlib.train import TrainConfig, train

from conftest import load_benchmark

KINDS = ("state", "action", "reward", "value")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("original_learning")


def _data(dropout=0.0):
    cfg = DataConfig("hopper-like", n_bins=N, n_transitions=L)
    train_set = SequenceDataset(hopper_like_episodes(seed=0), cfg)
    held_out = SequenceDataset(hopper_like_episodes(seed=1), cfg, discretizer=train_set.discretizer)
    model_cfg = GPTConfig(
        OBS, ACT, n_bins=N, n_transitions=L, n_layer=2, n_head=2, n_embd=16, dropout=dropout
    )
    return train_set, held_out, model_cfg


@pytest.mark.parametrize("schedule", ["run_length", "original"])
def test_original_code_and_ttlib_learn_alike_from_equal_weights_and_batches(bench, schedule):
    train_set, held_out, model_cfg = _data()
    k = 12
    cfg = TrainConfig(
        max_steps=k, batch_size=16, lr=3e-3, log_every=1, seed=3, schedule=schedule, device="cpu"
    )
    ours = train(train_set, model_cfg, cfg, progress=False, eval_dataset=held_out, eval_windows=48)
    torch.manual_seed(cfg.seed)  # ttlib's initial weights, as train() builds them
    init = original_state_dict_from_ttlib(TrajectoryGPT(model_cfg))
    theirs = bench.train_original(
        train_set, model_cfg, cfg, eval_dataset=held_out, eval_windows=48, init=init,
        sampler="ttlib",
    )  # fmt: skip
    assert [h["step"] for h in theirs.history] == list(range(1, k + 1))
    assert [h["tokens"] for h in theirs.history] == [h["tokens"] for h in ours.history]
    # the same rate at every step (for "original": each code's own implementation of it)
    np.testing.assert_allclose(
        [h["lr"] for h in theirs.history], [h["lr"] for h in ours.history], rtol=1e-12
    )
    keys = ["loss"] + [f"{p}loss_{kind}" for p in ("", "val_") for kind in KINDS]
    got = np.array([[h[key] for key in keys] for h in theirs.history])
    want = np.array([[h[key] for key in keys] for h in ours.history])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # and they did learn: k steps moved the held-out state loss by far more than the tolerance
    assert want[-1, keys.index("val_loss_state")] < want[0, keys.index("val_loss_state")] - 0.01


def test_original_order_is_a_permutation_per_epoch_and_resumes(bench):
    order = bench.OriginalOrder(10, 4, seed=0)
    first = [order.next() for _ in range(3)]  # 4 + 4 + 2: the epoch's last batch is smaller
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    state = order.state_dict()
    again = bench.OriginalOrder(10, 4, seed=0)
    again.load_state_dict(state)
    torch.testing.assert_close(again.next(), order.next())


def test_original_run_resumes_where_it_stopped(bench, tmp_path):
    train_set, held_out, model_cfg = _data()
    cfg = TrainConfig(max_steps=6, batch_size=8, log_every=2, checkpoint_every=2, device="cpu")
    kw = {"eval_dataset": held_out, "eval_windows": 16}
    whole = bench.train_original(train_set, model_cfg, cfg, tmp_path / "a", **kw)
    bench.train_original(train_set, model_cfg, cfg, tmp_path / "b", stop_at_step=3, **kw)
    resumed = bench.train_original(train_set, model_cfg, cfg, tmp_path / "b", **kw)
    assert resumed.steps_run == 3
    assert [h["step"] for h in resumed.history] == [2, 4, 6]
    np.testing.assert_allclose(
        [h["val_loss_state"] for h in resumed.history],
        [h["val_loss_state"] for h in whole.history],
        rtol=0,
        atol=1e-6,
    )


def test_windows_check_and_outputs(bench, tmp_path):
    train_set, _, _ = _data()
    eps = train_set.episodes
    assert bench.check_original_windows(train_set, eps, [1, 3, 4]) == sum(
        len(eps[i]) - 1 for i in (1, 3, 4)
    )
    history = [
        {
            "step": s,
            "tokens": 100 * s,
            "lr": 1e-3,
            "loss": 2.0,
            **{f"val_loss_{k}": 3.0 for k in KINDS},
        }
        for s in (1, 2)
    ]
    csv = tmp_path / "o.csv"
    bench.write_csv(bench.rows_of(history, "hopper", "run_length", "ttlib"), csv)
    table = bench.write_csv(bench.rows_of(history, "hopper", "run_length", "ttlib"), csv)
    assert len(table) == 2  # a rerun replaces its rows
    table = bench.write_csv(bench.rows_of(history, "hopper", "run_length", "original"), csv)
    assert sorted(set(table["code"])) == ["original", "ttlib"] and len(table) == 4
    bench.plot(table, N, tmp_path / "o.svg")
    assert (tmp_path / "o.svg").stat().st_size > 0


def test_original_run_does_not_depend_on_how_often_it_is_scored(bench):
    train_set, held_out, model_cfg = _data(dropout=0.1)  # dropout draws from torch's stream
    finals = []
    for log_every in (1, 6):
        cfg = TrainConfig(max_steps=6, batch_size=8, log_every=log_every, device="cpu")
        run = bench.train_original(
            train_set, model_cfg, cfg, eval_dataset=held_out, eval_windows=16
        )
        finals.append(run.history[-1])
    assert finals[0] == finals[1]
