"""The prediction page's longer run: found among the cached models, kept in the repository,
and restored into a fresh cache without overwriting a run that got further."""

import json

import torch

from ttlib.data import DataConfig
from ttlib.experiments import prediction
from ttlib.train import TrainConfig


def _folder(root, name, data, train, step, n_embd=64):
    folder = root / name
    folder.mkdir(parents=True)
    config = {"data": data.to_dict(), "train": train.to_dict()}
    config["model"] = {"n_layer": 4, "n_head": 4, "n_embd": n_embd, "observation_dim": 11}
    (folder / "config.json").write_text(json.dumps(config))
    torch.save({"step": step}, folder / "checkpoint.pt")
    return folder


def test_the_run_folder_is_the_one_whose_configs_match(tmp_path):
    data = DataConfig(dataset_id="ttlib/hopper/medium-v0")
    long, short = TrainConfig(max_steps=16000), TrainConfig(max_steps=4000)
    small = {"n_layer": 4, "n_head": 4, "n_embd": 64}
    _folder(tmp_path, "a", data, short, 4000)
    _folder(tmp_path, "a-wide", data, long, 8000, n_embd=128)  # sorts first: another model
    b = _folder(tmp_path, "b", data, long, 8000)
    # config.json holds lists where the configs hold tuples (betas): they still match
    assert prediction.kept_run(tmp_path, data, long, small) == b
    assert prediction.kept_run(tmp_path, data, long, {**small, "n_embd": 128}).name == "a-wide"
    assert prediction.kept_run(tmp_path, data, TrainConfig(max_steps=8000), small) is None
    assert prediction.kept_run(tmp_path / "empty", data, long, small) is None


def test_a_kept_run_is_restored_only_where_the_cache_has_fewer_steps(tmp_path):
    data, train = DataConfig(dataset_id="ttlib/hopper/medium-v0"), TrainConfig(max_steps=16000)
    cache, keep = tmp_path / "models", tmp_path / "keep"
    run = _folder(cache, "run", data, train, 8000)
    run.with_suffix(".json").write_text(json.dumps({"train_seconds": 2736.0}))
    prediction.keep_run(run, keep)
    assert json.loads((keep / "run.json").read_text())["train_seconds"] == 2736.0

    fresh = tmp_path / "fresh"  # a fresh machine: the run and its training record come back
    assert prediction.restore_kept(keep, fresh) == ["run"]
    assert torch.load(fresh / "run" / "checkpoint.pt")["step"] == 8000
    assert json.loads((fresh / "run.json").read_text())["train_seconds"] == 2736.0

    torch.save({"step": 12000}, run / "checkpoint.pt")  # the cache got further: keep it
    assert prediction.restore_kept(keep, cache) == []
    assert torch.load(run / "checkpoint.pt")["step"] == 12000
    torch.save({"step": 500}, run / "checkpoint.pt")  # the cache is behind: restore
    assert prediction.restore_kept(keep, cache) == ["run"]
    assert torch.load(run / "checkpoint.pt")["step"] == 8000
