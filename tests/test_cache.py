"""The one cache of the experiments: entries keyed by what made them (data included), made
once, and every cached model listed in the run record."""

import pytest

from ttlib.baselines import BCConfig
from ttlib.data import DataConfig
from ttlib.experiments import maze_q, prediction
from ttlib.experiments.cache import MODELS_USED, cached
from ttlib.iql import IQLConfig

from conftest import linear_episodes


@pytest.fixture(autouse=True)
def _fresh_run():
    MODELS_USED.clear()


def counting_fit(calls):
    def fit(path):
        calls.append(path)
        path.write_text(str(len(calls)))
        return len(calls)

    return fit


def load(path):
    return int(path.read_text())


def test_an_entry_is_made_once_and_loaded_after(tmp_path):
    calls = []
    first = cached("things", {"a": 1}, counting_fit(calls), load, name="x", suffix=".txt")
    again = cached("things", {"a": 1}, counting_fit(calls), load, name="x", suffix=".txt")
    other = cached("things", {"a": 2}, counting_fit(calls), load, name="x", suffix=".txt")
    assert (first, again, other) == (1, 1, 2) and len(calls) == 2
    assert calls[0].parent == tmp_path / "cache" / "things"  # $TTLIB_CACHE, set by conftest
    assert calls[0].name.startswith("x-") and calls[0].suffix == ".txt"
    assert MODELS_USED == []  # no steps: not a model, not in run.json


def test_an_unfinished_entry_is_fitted_again():
    calls = []
    fit = counting_fit(calls)
    cached("things", {"a": 1}, fit, lambda path: None)  # load says: unfinished
    cached("things", {"a": 1}, fit, lambda path: None)
    assert len(calls) == 2


def test_an_episodes_entry_never_lies_on_disk_without_its_provenance(monkeypatch):
    """A kill after the episodes are written but before their provenance is (a cancelled Ray
    task is interrupted anywhere) leaves no entry: the rerun computes it again."""
    from ttlib.experiments import cache

    real_save = cache.save_json

    def killed_at_provenance(obj, path):
        if path.name.endswith(".provenance.json"):
            raise KeyboardInterrupt  # what ray.cancel raises in the worker
        return real_save(obj, path)

    monkeypatch.setattr(cache, "save_json", killed_at_provenance)
    fit = lambda path: real_save({"score": 1.0}, path)  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        cached("eps", None, fit, lambda p: p, name="seed0", suffix=".json", episodes=1)
    folder = cache.cache_dir("eps")
    assert not (folder / "seed0.json").exists()
    monkeypatch.setattr(cache, "save_json", real_save)
    path = cached("eps", None, fit, lambda p: p, name="seed0", suffix=".json", episodes=1)
    assert path == folder / "seed0.json" and cache.provenance_file(path).exists()


def test_models_are_listed_once_with_their_training_time():
    calls = []
    cached("models", {"a": 1}, counting_fit(calls), load, name="m", steps=7)
    cached("models", {"a": 1}, counting_fit(calls), load, name="m", steps=7)
    (entry,) = MODELS_USED
    assert entry["model"].startswith("m-") and entry["steps"] == 7
    assert entry["trained_in_this_run"] is True  # trained by the first call of this run
    assert entry["train_seconds"] >= 0
    MODELS_USED.clear()  # a rerun: loaded from the cache, its training time still known
    cached("models", {"a": 1}, counting_fit(calls), load, name="m", steps=7)
    assert MODELS_USED[0]["trained_in_this_run"] is False
    assert MODELS_USED[0]["train_seconds"] == entry["train_seconds"]


def _regenerated(episodes):
    for ep in episodes:
        ep.rewards = ep.rewards + 1.0
    return episodes


def prediction_mlp(cfg, episodes):
    return prediction.dynamics_cached(cfg, episodes, steps=3)


def maze_iql(cfg, episodes):
    return maze_q.iql_cached(cfg, IQLConfig(steps=3, hidden=(8,)), episodes)


def maze_bc(cfg, episodes):
    return maze_q.bc_cached(cfg, BCConfig(steps=3, hidden=(8,)), episodes)


@pytest.mark.parametrize("make", [prediction_mlp, maze_iql, maze_bc])
def test_experiment_models_are_keyed_by_their_data_and_recorded(make, monkeypatch):
    """Regenerated data under the same id trains anew, and run.json lists every model."""
    cfg = DataConfig("ttlib/test/lin-v0")
    make(cfg, linear_episodes(4, 10))
    make(cfg, linear_episodes(4, 10))  # same data: loaded
    make(cfg, _regenerated(linear_episodes(4, 10)))
    assert [m["trained_in_this_run"] for m in MODELS_USED] == [True, True]
    assert MODELS_USED[0]["model"] != MODELS_USED[1]["model"]
    assert all(m["steps"] == 3 and m["train_seconds"] > 0 for m in MODELS_USED)
