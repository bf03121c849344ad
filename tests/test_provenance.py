"""Provenance of cached artefacts (#20): every cached evaluation episode and trained model keeps
the commit, start time and seconds of the code that made it, run.json lists what a run used,
and results/runs.csv sums the notebook's own time with that of the caches it loaded."""

from __future__ import annotations

import csv
import json

import pytest

from ttlib.experiments import cache, provenance, runs
from ttlib.experiments import d4rl_table as dt
from ttlib.experiments.cache import EPISODES_USED, MODELS_USED, cached, config_key
from ttlib.experiments.reproduce import summarize_runs

SHA_X = "1111111111111111111111111111111111111111"
SHA_Y = "2222222222222222222222222222222222222222"


@pytest.fixture(autouse=True)
def _fresh_run():
    MODELS_USED.clear()
    EPISODES_USED.clear()
    cache.code_version.cache_clear()
    yield
    MODELS_USED.clear()
    EPISODES_USED.clear()
    cache.code_version.cache_clear()


def at_commit(monkeypatch, sha: str) -> None:
    """Pretend the process runs the code of commit ``sha`` (clean working tree)."""
    answers = {"rev-parse": sha, "status": ""}
    monkeypatch.setattr(cache, "_git", lambda *args: answers[args[0]])
    cache.code_version.cache_clear()


def episode_fit(path):
    path.write_text(json.dumps({"seed": 1, "return": 2.0, "score": 3.0}))
    return path


def test_a_cached_episode_keeps_the_commit_and_time_of_the_run_that_computed_it(
    tmp_path, monkeypatch
):
    at_commit(monkeypatch, SHA_X)  # a fill worker at commit X computes the episode
    path = cached("d4rl/episodes/k", None, episode_fit, lambda p: p, name="seed1", suffix=".json",
                  episodes=1)  # fmt: skip
    assert json.loads(path.read_text())["score"] == 3.0  # the entry itself is unchanged
    side = json.loads(path.with_name("seed1.provenance.json").read_text())
    assert side["git_sha"] == SHA_X and side["started_utc"].endswith("Z")
    assert side["wall_seconds"] >= 0 and side["cpu_seconds"] >= 0
    (used,) = EPISODES_USED
    assert used["computed_in_this_run"] is True and used["git_sha"] == SHA_X

    # the notebook, later, at commit Y, loads it: it still says X
    EPISODES_USED.clear()
    at_commit(monkeypatch, SHA_Y)
    cached("d4rl/episodes/k", None, episode_fit, lambda p: p, name="seed1", suffix=".json",
           episodes=1)  # fmt: skip
    (used,) = EPISODES_USED
    assert used["computed_in_this_run"] is False and used["git_sha"] == SHA_X
    assert used["kind"] == "d4rl/episodes/k" and used["entry"] == "seed1.json"
    assert used["episodes"] == 1 and used["wall_seconds"] == side["wall_seconds"]

    run = runs.Run("d4rl", {"preset": "cpu"}, tmp_path / "out", runs.RunRecord("d4rl", {}))
    run.record.git_sha = SHA_Y
    rec = json.loads(run.finish().read_text())
    assert rec["cached_episodes"][0]["git_sha"] == SHA_X
    text = provenance.provenance_markdown(rec)
    assert "| `d4rl/episodes` | 1 (1) | 0 |" in text and SHA_X[:8] in text


def test_d4rl_episodes_are_found_under_their_old_keys_and_old_entries_say_not_recorded(
    tmp_path, monkeypatch
):
    # an entry written before provenance was kept: where episode_scores always put it, with
    # its own wall time in "seconds" and no sidecar
    key = {"policy": "BC", "env": "hopper", "max_steps": 4}
    folder = tmp_path / "cache" / "d4rl" / "episodes" / config_key(key)
    folder.mkdir(parents=True)
    old = {"seed": 7, "return": 1.0, "length": 4, "score": 5.0, "seconds": 12.0}
    (folder / "seed7.json").write_text(json.dumps(old))

    def no_agent(seed):
        raise AssertionError("the cached episode must be loaded, not computed again")

    (row,) = dt.episode_scores(key, no_agent, "hopper", 1, 4, first_seed=7)
    assert row["score"] == 5.0
    (used,) = EPISODES_USED
    assert used["git_sha"] is None and used["wall_seconds"] == 12.0
    assert used["cpu_seconds"] is None and used["computed_in_this_run"] is False

    # a maze_q-style entry without any time: loads, and its time is not recorded either
    cached("maze_q", {"m": 1}, episode_fit, lambda p: p, name="eval", suffix=".json", episodes=3)
    EPISODES_USED.clear()
    side = tmp_path / "cache" / "maze_q" / f"eval-{config_key({'m': 1})}.provenance.json"
    side.unlink()  # as if computed before provenance was kept
    cached("maze_q", {"m": 1}, lambda p: 1 / 0, lambda p: p, name="eval", suffix=".json",
           episodes=3)  # fmt: skip
    (maze,) = EPISODES_USED
    assert maze["wall_seconds"] is None and maze["git_sha"] is None

    record = {"git_sha": SHA_Y, "wall_time_s": 60, "cached_episodes": [used, maze]}
    text = provenance.provenance_markdown(record)
    assert "not recorded" in text
    assert (
        "| `maze_q` | 3 (1) | 0 | not recorded / not recorded | not recorded, not recorded |"
        in text
    )


def test_a_model_trained_outside_a_notebook_keeps_its_commit(monkeypatch, tmp_path):
    # d4rl_fill workers never call Run.finish: the cache itself stamps the commit
    at_commit(monkeypatch, SHA_X)
    cached("models", {"a": 1}, lambda p: p.write_text("w"), lambda p: None, name="m", steps=3)
    side = json.loads((tmp_path / "cache" / "models").glob("m-*.json").__next__().read_text())
    assert side["git_sha"] == SHA_X and "train_seconds" in side and "trained_utc" in side
    assert MODELS_USED[0]["git_sha"] == SHA_X


def _write_record(folder, **fields):
    folder.mkdir(parents=True)
    base = {"experiment": folder.name, "preset": "cpu", "command": "c", "hardware": {}}
    (folder / "run.json").write_text(json.dumps(base | fields))


def test_runs_csv_sums_notebook_models_and_episodes_without_counting_twice(tmp_path):
    _write_record(
        tmp_path / "d4rl",
        git_sha="n" * 40,
        wall_time_s=60.0,
        models=[
            {"model": "a", "trained_in_this_run": False, "train_seconds": 600.0,
             "git_sha": "a" * 40},
            {"model": "b", "trained_in_this_run": True, "train_seconds": 120.0,
             "git_sha": "n" * 40},
            {"model": "c", "trained_in_this_run": False, "train_seconds": 60.0},  # no commit
        ],
        cached_episodes=[
            {"kind": "d4rl/episodes/1", "entry": "s1.json", "episodes": 1,
             "computed_in_this_run": False, "wall_seconds": 300.0, "git_sha": "b" * 40},
            {"kind": "d4rl/episodes/1", "entry": "s2.json", "episodes": 1,
             "computed_in_this_run": True, "wall_seconds": 30.0, "git_sha": "n" * 40},
            {"kind": "d4rl/episodes/2", "entry": "s1.json", "episodes": 1,
             "computed_in_this_run": False, "wall_seconds": None, "git_sha": None},
        ],
        episode_seconds=999.0,  # the notebook's own older total: the list above wins
    )  # fmt: skip
    # a record from before episodes were listed: its total episode time, loaded from the cache
    _write_record(
        tmp_path / "old",
        git_sha="o" * 40,
        wall_time_s=30.0,
        episode_seconds=600.0,
        models=[
            {"model": "m", "trained_in_this_run": False, "train_seconds": 120.0},
            # trained by the notebook itself: its commit is the notebook's
            {"model": "m2", "trained_in_this_run": True, "train_seconds": 60.0, "git_sha": None},
        ],
    )
    _write_record(tmp_path / "older", git_sha="p" * 40, wall_time_s=90.0)  # nothing listed
    with open(summarize_runs(tmp_path)) as f:
        rows = {r["experiment"]: r for r in csv.DictReader(f)}

    new = rows["d4rl"]
    assert new["notebook_min"] == "1.0"
    assert new["models_train_min"] == "13.0"  # every model used, trained here or not
    assert new["episodes_min"] == "5.5"  # every episode whose time was kept
    assert new["total_compute_min"] == "17.0"  # 1 + (10 + 1) loaded + 5 loaded
    assert new["commits"].split()[:3] == ["nnnnnnnn", "aaaaaaaa", "bbbbbbbb"]
    assert "1 model" in new["not_recorded"] and "1 episode entry" in new["not_recorded"]

    old = rows["old"]
    assert (old["notebook_min"], old["models_train_min"], old["episodes_min"]) == (
        "0.5",
        "3.0",
        "10.0",
    )
    assert old["total_compute_min"] == "12.5"  # m2 was trained inside the notebook's time
    assert old["commits"] == "oooooooo + not recorded"
    assert "commit of 2 models" not in old["not_recorded"]
    assert "commit of 1 model" in old["not_recorded"]  # m, loaded; m2 is the notebook's

    older = rows["older"]
    assert older["models_train_min"] == "not recorded" == older["episodes_min"]
    assert older["total_compute_min"] == "1.5" and older["not_recorded"]


def test_maze_q_evaluations_are_found_under_their_old_names_and_keys(tmp_path):
    from ttlib.experiments import maze_q

    maze = maze_q.Maze("pointmaze-medium", "pointmaze", "ttlib/pointmaze/medium-v0")
    params = {"episodes": 2, "max_episode_steps": 5, "seed": 0}
    key = {"planner": {"horizon": 3}}
    identity = {"maze": maze.dataset_id, "method": "BC", "episodes": 2}
    identity |= {"max_steps": 5, "seed": 0, **key}
    # where evaluate_cached has always kept it, written before provenance was kept
    entry = tmp_path / "cache" / "maze_q" / f"eval-pointmaze-medium-BC-{config_key(identity)}.json"
    entry.parent.mkdir(parents=True)
    entry.write_text(json.dumps({"maze": maze.name, "method": "BC", "success": [True, False]}))

    def no_agent():
        raise AssertionError("the cached evaluation must be loaded, not computed again")

    out = maze_q.evaluate_cached(maze, "BC", no_agent, params, key)
    assert out["success"] == [True, False]
    (used,) = EPISODES_USED
    assert used["entry"] == entry.name and used["episodes"] == 2
    assert used["git_sha"] is None and used["wall_seconds"] is None
