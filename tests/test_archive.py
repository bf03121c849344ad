"""A run's cache entries kept in the repository come back as a cache a rerun loads."""

import shutil

import pytest
import torch

from ttlib.experiments import archive
from ttlib.experiments.cache import EPISODES_USED, MODELS_USED, cache_dir, cached


@pytest.fixture(autouse=True)
def _fresh_run():
    MODELS_USED.clear()
    EPISODES_USED.clear()


def model_fit(folder):
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model": {"w": torch.arange(3.0)}, "step": 5, "optimizer": {"m": torch.ones(9)}}
    torch.save(state, folder / "checkpoint.pt")
    return state["model"]["w"]


def model_load(folder):
    return torch.load(folder / "checkpoint.pt")["model"]["w"]


def episode_fit(path):
    path.write_text('{"score": 7.0}')
    return path


def never(path):
    raise AssertionError(f"recomputed {path.name}: the archive was not used")


def test_packed_entries_are_loaded_on_a_fresh_cache(tmp_path):
    cached("models", {"m": 1}, model_fit, model_load, name="tt", steps=5)
    cached("models", {"m": 2}, model_fit, model_load, name="unused", steps=5)
    MODELS_USED.pop()  # an entry this run did not use stays out of the archive
    cached(
        "d4rl/episodes/abc",
        None,
        episode_fit,
        lambda p: p,
        name="seed0",
        suffix=".json",
        episodes=1,
    )
    # the checkpoint and its timing file, the episode and its provenance (key.json is
    # written by episode_scores, not by cached()); packing twice adds nothing
    assert archive.pack(tmp_path / "archive") == 4
    assert archive.pack(tmp_path / "archive") == 0
    (ckpt,) = (tmp_path / "archive" / "models").glob("tt-*/checkpoint.pt")
    assert set(torch.load(ckpt)) == {"model", "step"}  # the optimiser state is left out
    assert not list((tmp_path / "archive" / "models").glob("unused-*"))

    shutil.rmtree(cache_dir())  # a fresh machine
    assert archive.unpack(tmp_path / "archive") == 4
    w = cached("models", {"m": 1}, never, model_load, name="tt", steps=5)
    assert torch.equal(w, torch.arange(3.0))
    path = cached(
        "d4rl/episodes/abc", None, never, lambda p: p, name="seed0", suffix=".json", episodes=1
    )
    assert path.read_text() == '{"score": 7.0}'
    assert EPISODES_USED[-1]["wall_seconds"] is not None  # its provenance came back with it
