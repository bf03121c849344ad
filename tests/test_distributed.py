"""Data-parallel training (torch DDP, gloo on CPU): two ranks on half a batch each take the
step one process takes on the whole batch, and a DDP run resumes bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ttlib.data import DataConfig, SequenceDataset
from ttlib.train import TrainConfig, gpt_config_for, load_checkpoint, train

from conftest import linear_episodes, write_minari_dataset

TINY = {"n_layer": 1, "n_head": 2, "n_embd": 16}
DATA = DataConfig("ttlibtest/linear/medium-v0", "uniform", n_bins=10, n_transitions=3)
CFG = TrainConfig(max_steps=6, batch_size=8, log_every=2, checkpoint_every=2, device="cpu")


def _dataset() -> SequenceDataset:
    return SequenceDataset(linear_episodes(10, 20), DATA)


def _weights(folder) -> dict:
    model, _, ckpt = load_checkpoint(folder, device="cpu")
    assert ckpt["step"] == CFG.max_steps
    return model.state_dict()


def _rank(rank: int, world: int, root: str) -> None:
    """One of ``world`` spawned ranks: a whole run, and a run stopped at step 3 and resumed."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", f"file://{root}/rendezvous", rank=rank, world_size=world)
    try:
        ds = _dataset()
        no_dropout = gpt_config_for(ds, **TINY, dropout=0.0)
        train(ds, no_dropout, CFG, f"{root}/whole", progress=False)
        dropout = gpt_config_for(ds, **TINY, dropout=0.1)
        train(ds, dropout, CFG, f"{root}/dropout", progress=False)
        train(ds, dropout, CFG, f"{root}/resumed", progress=False, stop_at_step=3)
        train(ds, dropout, CFG, f"{root}/resumed", progress=False)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_on_half_batches_equal_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_rank, args=(2, str(tmp_path)), nprocs=2)
    ds = _dataset()
    one = train(ds, gpt_config_for(ds, **TINY, dropout=0.0), CFG, tmp_path / "one", False)
    ddp, single = _weights(tmp_path / "whole"), one.model.state_dict()
    for name, w in single.items():
        torch.testing.assert_close(ddp[name], w, rtol=0, atol=1e-6, msg=name)
    # a DDP run stopped and resumed (dropout on: per-rank masks) ends bit for bit the same
    whole, resumed = _weights(tmp_path / "dropout"), _weights(tmp_path / "resumed")
    for name, w in whole.items():
        assert torch.equal(resumed[name], w), name


def test_one_process_keeps_the_single_rank_path():
    from ttlib import distributed

    ranks = distributed.ranks(torch.device("cpu"), batch_size=7)
    assert (ranks.rank, ranks.world, ranks.writes) == (0, 1, True)
    batch = [torch.arange(6)]
    assert ranks.shard(batch) is batch
    assert ranks.mean({"loss": 1.5}) == {"loss": 1.5}
    uneven = distributed.Ranks(rank=1, world=2)
    assert [t.tolist() for t in uneven.shard([torch.arange(6)])] == [[3, 4, 5]]


@pytest.mark.slow
def test_torchrun_trains_one_model_over_two_processes(tmp_path):
    write_minari_dataset(DATA.dataset_id, linear_episodes(10, 20))
    args = ["train", "--dataset", DATA.dataset_id, "--discretizer", "uniform", "--n-bins", "10"]
    args += ["--n-transitions", "3", "--steps", "4", "--batch-size", "8", "--n-layer", "1"]
    args += ["--n-head", "2", "--n-embd", "16", "--dropout", "0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--standalone", "-m", "ttlib"]  # --standalone: a free port of its own
    for cmd, out in (([sys.executable, "-m", "ttlib"], "one"), (launcher, "two")):
        r = subprocess.run(
            [*cmd, *args, "--out", str(tmp_path / out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-2000:]
    one, _, _ = load_checkpoint(tmp_path / "one")
    two, _, ckpt = load_checkpoint(tmp_path / "two")
    assert ckpt["step"] == 4
    for name, w in one.state_dict().items():
        torch.testing.assert_close(two.state_dict()[name], w, rtol=0, atol=1e-6, msg=name)


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path, monkeypatch):
    from ttlib import distributed
    from ttlib.errors import ConfigError

    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    with pytest.raises(ConfigError, match="batch size 7 does not split over 2 processes"):
        distributed.ranks(torch.device("cpu"), replace(CFG, batch_size=7).batch_size)


def test_ranks_drop_out_their_own_units_and_leave_the_global_stream_alone():
    from ttlib.distributed import Ranks

    torch.manual_seed(0)
    before = torch.get_rng_state()
    draws = []
    for rank in (0, 1, 0):
        with Ranks(rank, 2).step_rng(seed=42, step=5):
            draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])
    assert torch.equal(torch.get_rng_state(), before)  # what the checkpoint keeps
