"""Every loader of a user-given file, fed empty, truncated, random and malicious bytes, fails
with the library's own errors (``ttlib.errors.TTLibError``) and one line naming the file.

A KeyError, RuntimeError or AssertionError from deep inside torch, h5py or Minari is a bug
here: a user cannot tell from it which file is bad or what to do.
"""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
import torch

from ttlib.baselines import BehaviourCloning, ProbabilisticDynamics
from ttlib.data import DataConfig, DatasetError, load_episodes, minari_root
from ttlib.datagen.actor import SACActor, load_actor, save_actor
from ttlib.discretize import Discretizer, make_discretizer
from ttlib.errors import (
    CheckpointError,
    ConfigError,
    OriginalCheckpointError,
    OutputError,
    PlanningMemoryError,
    TTLibError,
)
from ttlib.interop.checkpoint import load_original_checkpoint
from ttlib.interop.d4rl_hdf5 import read_d4rl_hdf5, write_d4rl_hdf5
from ttlib.io import load_torch_file, save_torch
from ttlib.iql import IQL
from ttlib.model import GPTConfig, TrajectoryGPT
from ttlib.train import TrainConfig, checkpoint_dict, load_checkpoint

from conftest import linear_episodes, write_minari_dataset

sys.path.insert(0, os.path.dirname(__file__))
from test_original import OriginalGPT, d4rl_episodes, original_config, write_original_run  # noqa: E402


class Evil:
    """A pickle that would run a command when loaded without weights_only."""

    def __reduce__(self):
        return os.system, ("echo pwned > /tmp/ttlib-pwned",)


def _damages(data: bytes) -> dict[str, bytes]:
    rng = np.random.default_rng(len(data))
    cuts = {f"first {f:.0%}": data[: int(len(data) * f)] for f in (0.1, 0.5, 0.9)}
    return {
        "empty": b"",
        **cuts,
        "all but the last byte": data[:-1],
        "random bytes": rng.bytes(len(data)),
        "random bytes, short": rng.bytes(64),
        "a zip header then random bytes": b"PK\x03\x04" + rng.bytes(500),
        "a pickle of os.system": pickle.dumps(Evil()),
        "a torch file of something else": _torch_bytes([1, 2, 3]),
    }


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _assert_one_line_naming(err: TTLibError, path, damage: str = "") -> None:
    message = f"{damage}: {err}"
    assert "\n" not in str(err), message
    assert str(path) in str(err), message
    assert "weights_only=False" not in str(err) and "WeightsUnpickler" not in str(err), message


# ------------------------------------------------------------------ model files
def _tiny_checkpoint(path):
    cfg = GPTConfig(2, 1, n_bins=5, n_transitions=2, n_layer=1, n_head=1, n_embd=8)
    disc = make_discretizer("uniform", 5).fit(np.random.default_rng(0).normal(size=(50, 5)))
    save_torch(checkpoint_dict(TrajectoryGPT(cfg), disc, DataConfig("x"), TrainConfig()), path)
    return lambda: load_checkpoint(path)


def _iql(path):
    IQL(3, 2).save(path)
    return lambda: IQL.load(path)


def _bc(path):
    BehaviourCloning(3, 2).save(path)
    return lambda: BehaviourCloning.load(path)


def _dynamics(path):
    ProbabilisticDynamics(3, 2).save(path)
    return lambda: ProbabilisticDynamics.load(path)


def _actor(path):
    save_actor(SACActor(3, 2, -np.ones(2), np.ones(2), hidden=8), path)
    return lambda: load_actor(path)


def _discretizer_state(path):
    disc = make_discretizer("quantile", 4).fit(np.random.default_rng(0).normal(size=(50, 3)))
    save_torch(disc.state_dict(), path)
    return lambda: Discretizer.from_state_dict(load_torch_file(path, "discretizer state"))


MODEL_FILES = {
    "ttlib checkpoint": _tiny_checkpoint,
    "IQL": _iql,
    "BC": _bc,
    "dynamics": _dynamics,
    "SAC actor": _actor,
    "discretizer state": _discretizer_state,
}


@pytest.mark.parametrize("kind", MODEL_FILES)
def test_damaged_model_files_fail_with_a_checkpoint_error(tmp_path, kind):
    path = tmp_path / "model.pt"
    load = MODEL_FILES[kind](path)
    load()  # the intact file loads
    intact = path.read_bytes()
    for damage, data in _damages(intact).items():
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            load()
        if damage != "a torch file of something else" or kind != "discretizer state":
            _assert_one_line_naming(err.value, path, damage)  # from_state_dict sees no path
    assert not os.path.exists("/tmp/ttlib-pwned")
    path.unlink()
    with pytest.raises(CheckpointError, match="no .* at"):  # and a missing one
        load()


def test_discretizer_states_that_are_not_one_are_refused():
    good = make_discretizer("uniform", 4).fit(np.random.default_rng(0).normal(size=(50, 3)))
    state = good.state_dict()
    bad_states = [
        None,
        [],
        {},
        {**state, "kind": "octile"},
        {**state, "kind": ["uniform"]},
        {**state, "n_bins": "4"},
        {**state, "n_bins": 1},
        {**state, "edges": state["edges"].numpy()},
        {**state, "edges": torch.zeros(5)},
        {**state, "bin_means": torch.zeros(3, 7)},
        {k: v for k, v in state.items() if k != "edges"},
    ]
    for bad in bad_states:
        with pytest.raises(CheckpointError):
            Discretizer.from_state_dict(bad)
    np.testing.assert_array_equal(Discretizer.from_state_dict(state).edges, good.edges)


def test_model_files_with_wrong_contents_fail_with_a_checkpoint_error(tmp_path):
    """Readable torch files, well-formed dicts, wrong inside: a key gone, a shape changed."""
    path = tmp_path / "iql.pt"
    IQL(3, 2).save(path)
    state = torch.load(path, weights_only=True)
    edits = [
        lambda s: s.pop("config"),
        lambda s: s["config"].pop("hidden"),
        lambda s: s["config"].update(hidden="wide"),
        lambda s: s["state_dict"].popitem(),
        lambda s: s.update(obs_dim=4),
        lambda s: s.update(state_dict=[1, 2]),
    ]
    for edit in edits:
        damaged = torch.load(path, weights_only=True)
        edit(damaged)
        save_torch(damaged, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError) as err:
            IQL.load(tmp_path / "bad.pt")
        _assert_one_line_naming(err.value, tmp_path / "bad.pt")
    assert IQL.load(path).obs_dim == state["obs_dim"]


def test_checkpoint_whose_config_cannot_build_a_model_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _tiny_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["gpt_config"]["n_head"] = 3  # does not divide n_embd 8: GPTConfig refuses it
    save_torch(ckpt, path)
    with pytest.raises(CheckpointError, match="n_head=3 must be >= 1 and divide n_embd=8"):
        load_checkpoint(path)


# ------------------------------------------------------------------ original run folders
def _original_run(directory):
    cfg = original_config()
    write_original_run(directory, {0: OriginalGPT(cfg).state_dict()}, cfg)
    return lambda: load_original_checkpoint(directory, None)


@pytest.mark.parametrize("name", ["state_0.pt", "model_config.pkl", "data_config.pkl"])
def test_damaged_original_run_folders_fail_with_an_original_checkpoint_error(tmp_path, name):
    load = _original_run(tmp_path)
    load()
    path = tmp_path / name
    for damage, data in _damages(path.read_bytes()).items():
        path.write_bytes(data)
        with pytest.raises(OriginalCheckpointError) as err:
            load()
        _assert_one_line_naming(err.value, path, damage)
    assert not os.path.exists("/tmp/ttlib-pwned")


def test_malicious_original_weights_are_refused_in_one_line(tmp_path):
    load = _original_run(tmp_path)
    (tmp_path / "state_0.pt").write_bytes(_torch_bytes(Evil()))
    with pytest.raises(OriginalCheckpointError) as err:
        load()
    assert str(err.value).startswith(f"{tmp_path / 'state_0.pt'} is not a readable")
    _assert_one_line_naming(err.value, tmp_path / "state_0.pt")
    assert not os.path.exists("/tmp/ttlib-pwned")


# ------------------------------------------------------------------ datasets
@pytest.mark.parametrize("name", ["data/main_data.hdf5", "data/metadata.json"])
def test_damaged_minari_dataset_files_fail_with_a_dataset_error(name):
    did = "ttlibtest/fuzz/medium-v0"
    write_minari_dataset(did, linear_episodes(3, 6))
    load = lambda: load_episodes(DataConfig(did))  # noqa: E731
    assert len(load()) == 3
    path = minari_root() / did / name
    for damage, data in _damages(path.read_bytes()).items():
        path.write_bytes(data)
        with pytest.raises(DatasetError) as err:
            load()
        assert "\n" not in str(err.value) and did in str(err.value), (damage, err.value)


def test_minari_data_file_missing_a_field_fails_with_a_dataset_error():
    import h5py

    did = "ttlibtest/fuzz/medium-v0"
    write_minari_dataset(did, linear_episodes(3, 6))
    with h5py.File(minari_root() / did / "data" / "main_data.hdf5", "a") as f:
        del f["episode_2"]["actions"]  # the first episode, read eagerly, is intact
    with pytest.raises(DatasetError, match="exists but cannot be read .KeyError"):
        load_episodes(DataConfig(did))


def test_damaged_d4rl_files_fail_with_a_dataset_error(tmp_path):
    path = write_d4rl_hdf5(tmp_path / "d.hdf5", d4rl_episodes())
    read_d4rl_hdf5(path)
    for damage, data in _damages(path.read_bytes()).items():
        path.write_bytes(data)
        with pytest.raises(DatasetError) as err:
            read_d4rl_hdf5(path)
        assert str(path) in str(err.value), damage


# ------------------------------------------------------------------ the error types
def test_every_error_type_is_a_ttlib_error_and_keeps_its_old_base():
    import ttlib.data
    import ttlib.experiments.presets
    import ttlib.interop.original
    import ttlib.memory
    import ttlib.train

    for cls in (ConfigError, DatasetError, CheckpointError, PlanningMemoryError):
        assert issubclass(cls, TTLibError) and issubclass(cls, ValueError)
    assert issubclass(OriginalCheckpointError, CheckpointError)
    assert issubclass(OutputError, TTLibError) and issubclass(OutputError, OSError)
    # the old import paths still give the same classes
    assert ttlib.data.DatasetError is DatasetError
    assert ttlib.train.CheckpointError is CheckpointError
    assert ttlib.memory.PlanningMemoryError is PlanningMemoryError
    assert ttlib.experiments.presets.ConfigError is ConfigError
    assert ttlib.interop.original.OriginalCheckpointError is OriginalCheckpointError
