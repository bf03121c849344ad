"""The D4RL table and the mazes on Ray: the tasks fill the serial run's caches with the serial
run's numbers, and a task that fails is one error naming it, with nothing half-written in the
cache."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from ttlib.errors import ConfigError
from ttlib.experiments import d4rl_table as dt
from ttlib.experiments import maze_q, ray_tasks
from ttlib.experiments.cache import EPISODES_USED, MODELS_USED
from ttlib.experiments.presets import preset_params
from ttlib.train import load_checkpoint

from conftest import hopper_like_episodes, tiny_params, write_minari_dataset


def hopper_data() -> None:
    """ttlib/hopper/medium-v0 of 180 transitions: what tiny_params' dataset_config asks for."""
    write_minari_dataset("ttlib/hopper/medium-v0", hopper_like_episodes())


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False)
    yield ray
    ray.shutdown()


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def without_timing(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["seconds"]).reset_index(drop=True)


# ------------------------------------------------------------------ the tasks
def test_table_tasks_train_each_model_once_and_batch_each_agents_episodes():
    hopper_data()
    params = tiny_params(episodes=3, discretizers=["uniform"])
    tasks = ray_tasks.table_tasks(params, ["TT (uniform)", "BC"], together=2)
    names = {t.name: t for t in tasks}
    assert len(names) == len(tasks)
    trainings = [t.name for t in tasks if t.kind != "eval"]
    assert trainings == ["train TT (uniform) hopper/medium seed 0", "train BC hopper/medium seed 0"]
    first = dt.EVAL_SEED
    # each agent's 3 episodes in batches of 2, after its training
    prefix = "evaluate TT (uniform) hopper/medium seed 0 episodes"
    final = [n for n in names if n.startswith(prefix)]
    assert final == [f"{prefix} {first}-{first + 1}", f"{prefix} {first + 2}-{first + 2}"]
    assert {names[n].after for n in final} == {(trainings[0],)}
    bc = [n for n in names if n.startswith("evaluate BC")]
    assert bc == [
        f"evaluate BC hopper/medium seed 0 episodes {first}-{first + 1}",
        f"evaluate BC hopper/medium seed 0 episodes {first + 2}-{first + 2}",
    ]
    assert tasks.index(names[bc[0]]) > tasks.index(names[trainings[-1]])  # trainings first


def test_resources_parse_sizes_and_name_the_bad_item():
    res = ray_tasks.Resources.parse("train_gpus=0.5, train_memory=8G")
    assert res.options("train") == {"num_cpus": 1, "num_gpus": 0.5, "memory": 8 * 2**30}
    assert res.options("eval")["num_gpus"] == 0
    with pytest.raises(ConfigError, match="'gpus=1'"):
        ray_tasks.Resources.parse("gpus=1")


def test_without_ray_installed_a_ray_run_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[ray\]"'):
        ray_tasks._connect("local")


def test_reproduce_passes_ray_only_to_the_notebooks_that_take_it(tmp_path, monkeypatch):
    import papermill

    from ttlib.experiments import reproduce

    seen = {}

    def execute(notebook, out, parameters, **kw):
        seen[Path(notebook).stem] = (parameters, os.environ["TTLIB_COMMAND"])
        Path(out).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    monkeypatch.setattr(reproduce, "executed_dir", lambda preset: tmp_path)
    reproduce.reproduce("smoke", ["d4rl", "maze_q", "attention"], progress=False, ray="local")
    assert seen == {
        "d4rl": (
            {"preset": "smoke", "ray": "local"},
            "ttlib reproduce --preset smoke --only d4rl --ray local",
        ),
        "maze_q": (
            {"preset": "smoke", "ray": "local"},
            "ttlib reproduce --preset smoke --only maze_q --ray local",
        ),
        "attention": ({"preset": "smoke"}, "ttlib reproduce --preset smoke --only attention"),
    }


@pytest.mark.slow
def test_ttlib_imports_no_ray_until_a_run_asks_for_it():
    code = "import sys, ttlib.cli, ttlib.experiments.d4rl_table; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# ------------------------------------------------------------------ on a local Ray
@pytest.mark.slow
def test_ray_local_fills_the_caches_with_the_serial_runs_numbers(tmp_path, monkeypatch, local_ray):
    hopper_data()
    params = tiny_params(episodes=3)
    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path / "serial"))
    serial = dt.run_table(params)

    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path / "ray"))
    monkeypatch.setattr(ray_tasks, "EPISODES_TOGETHER", 2)  # an agent's 3 episodes: 2 tasks
    MODELS_USED.clear()
    EPISODES_USED.clear()
    run = dt.run_table({**params, "ray": "local"})
    # the tasks made everything: this process only loaded it
    assert MODELS_USED and not any(m["trained_in_this_run"] for m in MODELS_USED)
    assert len(EPISODES_USED) == 4 * 3  # 4 methods, 3 episodes each
    assert not any(e["computed_in_this_run"] for e in EPISODES_USED)

    pd.testing.assert_frame_equal(without_timing(run.episodes), without_timing(serial.episodes))
    pd.testing.assert_frame_equal(run.histories, serial.histories)
    assert files(tmp_path / "ray") == files(tmp_path / "serial")  # the same cache keys
    for ckpt in (tmp_path / "serial").rglob("checkpoint.pt"):
        a, _, _ = load_checkpoint(ckpt)
        b, _, _ = load_checkpoint(tmp_path / "ray" / ckpt.relative_to(tmp_path / "serial"))
        for name, w in a.state_dict().items():
            assert torch.equal(b.state_dict()[name], w), name


def smoke_maze_params(tmp_path: Path, monkeypatch) -> dict:
    """The smoke maze_q block, its dataset generated under ``tmp_path``."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return {**preset_params("maze_q", "smoke"), "preset": "smoke", "ray": None}


@pytest.mark.slow
def test_maze_tasks_train_each_maze_once_before_its_evaluations(tmp_path, monkeypatch):
    params = smoke_maze_params(tmp_path, monkeypatch)
    tasks = ray_tasks.maze_tasks({**params, "mazes": ["pointmaze-medium", "pointmaze-large"]})
    for maze in ("pointmaze-medium", "pointmaze-large"):
        mine = [t for t in tasks if t.name.endswith(maze)]
        assert [t.name for t in mine] == [f"train {maze}"] + [
            f"evaluate {method} {maze}" for method in maze_q.METHODS
        ]
        assert [t.kind for t in mine] == ["train"] + ["eval"] * len(maze_q.METHODS)
        assert all(t.after == (f"train {maze}",) for t in mine[1:])


@pytest.mark.slow
def test_ray_local_fills_the_maze_caches_with_the_serial_runs_numbers(
    tmp_path, monkeypatch, local_ray
):
    params = smoke_maze_params(tmp_path, monkeypatch)
    (maze,) = maze_q.mazes_for(params)
    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path / "serial"))
    serial = maze_q.evaluate_maze(maze_q.train_maze(maze, params), params)

    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path / "ray"))
    ray_tasks.fill_mazes({**params, "ray": "local"})
    MODELS_USED.clear()
    EPISODES_USED.clear()
    loaded = maze_q.evaluate_maze(maze_q.train_maze(maze, params), params)
    # the tasks made everything: this process only loaded it
    assert len(MODELS_USED) == 3 and not any(m["trained_in_this_run"] for m in MODELS_USED)
    assert len(EPISODES_USED) == len(maze_q.METHODS)
    assert not any(e["computed_in_this_run"] for e in EPISODES_USED)
    assert loaded == serial
    assert files(tmp_path / "ray") == files(tmp_path / "serial")  # the same cache keys


def crashing_training(env, kind, disc, params, seed):
    """A TT training that dies after its step-2 checkpoint, as a crash or kill would."""
    from ttlib.experiments import cache

    real = cache.train

    def train_then_crash(*args, **kw):
        real(*args[:5], stop_at_step=2)
        raise RuntimeError("simulated crash at step 2")

    cache.train = train_then_crash
    try:
        dt.train_table_tt(env, kind, disc, params, seed)
    finally:
        cache.train = real


@pytest.mark.slow
def test_a_failing_task_is_one_error_naming_it_with_nothing_half_written(
    tmp_path, monkeypatch, local_ray
):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers lack tests/
    hopper_data()
    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path / "cache"))
    params = tiny_params(discretizers=["uniform"])
    tasks = ray_tasks.table_tasks(params, ["TT (uniform)", "BC"])
    crash = [replace(t, fn=crashing_training) if "train TT" in t.name else t for t in tasks]
    with pytest.raises(ray_tasks.TaskFailed) as err:
        ray_tasks.run_tasks(crash)
    assert str(err.value).startswith(
        "Ray task 'train TT (uniform) hopper/medium seed 0' failed: RuntimeError: simulated crash"
    )
    assert "\n" not in str(err.value)
    # the model's entry is a resumable checkpoint at step 2, not a finished model
    (folder,) = (tmp_path / "cache" / "models").iterdir()
    _, _, ckpt = load_checkpoint(folder)
    assert ckpt["step"] == 2 and not folder.with_suffix(".json").exists()
    for key in (tmp_path / "cache").glob("d4rl/episodes/*/key.json"):
        episodes = list(key.parent.glob("seed*[0-9].json"))
        assert '"model"' not in key.read_text() or not episodes  # none of the TT model's
        for ep in episodes:  # BC's, if it got that far: each complete with its provenance
            assert ep.with_name(f"{ep.stem}.provenance.json").exists()
    for baseline in (tmp_path / "cache").glob("d4rl/baselines/*.pt"):  # done or never begun
        assert baseline.with_suffix(".json").exists()
    run = dt.run_table(params, methods=["TT (uniform)", "BC"])  # a rerun resumes and finishes
    assert len(run.episodes) == 2 * params["episodes"]


# ------------------------------------------------------------------ the compute study's tasks
def study_params(**kw) -> dict:
    """test_compute_study's tiny study on a Hopper medium-replay dataset of 180 transitions."""
    from test_compute_study import tiny_params as tiny_study

    write_minari_dataset("ttlib/hopper/medium-replay-v0", hopper_like_episodes())
    return tiny_study(**kw)


def test_study_tasks_train_each_run_once_before_its_points(tmp_path):
    params = study_params(paper_search_envs=["hopper"], train_up_to=1000)
    tasks = ray_tasks.study_tasks(params, models=tmp_path)
    base, second, wide = (f"hopper/medium-replay 1x{n} seed {s}" for n, s in ((16, 0), (16, 1),
                                                                              (32, 0)))  # fmt: skip
    assert [t.name for t in tasks] == [
        f"train {base}",
        f"evaluate {base} at 1000 tokens",  # not 2000: beyond train_up_to
        f"evaluate {base} with the original's search",
        f"train {second}",
        f"evaluate {second} at 1000 tokens",
        f"train {wide}",  # its only point (2000 tokens) is beyond train_up_to
        "reference BC hopper/medium-replay",
        "reference IQL hopper/medium-replay",
    ]
    for t in tasks:
        trained_first = (f"train {t.name.split(' ', 1)[1].split(' at ')[0].split(' with ')[0]}",)
        assert t.after == (trained_first if t.kind == "eval" else ())
    assert [t.kind for t in tasks] == ["train", "eval", "eval", "train", "eval", "train",
                                       "baseline", "baseline"]  # fmt: skip
    only = ray_tasks.study_tasks(params, train_only=True, until=2000, models=tmp_path)
    assert [t.name for t in only] == [f"train {base}", f"train {second}", f"train {wide}"]
    assert all(t.args[-1] == 2000 for t in only)


@pytest.mark.slow
def test_ray_local_fills_the_study_with_the_serial_runs_numbers(tmp_path, monkeypatch, local_ray):
    from ttlib.experiments import compute_study as cs

    params = study_params(paper_search_envs=["hopper"],
                          paper_search_at=[2000], max_episode_steps=2)  # fmt: skip
    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path / "serial" / "cache"))
    monkeypatch.setattr(cs, "results_dir", lambda name, preset: tmp_path / "serial")
    serial = cs.run_study(params)

    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path / "ray" / "cache"))
    ray_tasks.fill_study({**params, "ray": "local"}, models=tmp_path / "ray" / "models")
    monkeypatch.setattr(cs, "results_dir", lambda name, preset: tmp_path / "ray")
    MODELS_USED.clear()
    EPISODES_USED.clear()
    loaded = cs.run_study(params)
    # the tasks made everything: this process only loaded it
    assert MODELS_USED and not any(m["trained_in_this_run"] for m in MODELS_USED)
    assert EPISODES_USED and not any(e["computed_in_this_run"] for e in EPISODES_USED)
    for name in ("episodes", "references", "paper_search", "histories"):
        a, b = getattr(serial, name), getattr(loaded, name)
        assert len(a) > 0
        pd.testing.assert_frame_equal(a.drop(columns="seconds", errors="ignore"),
                                      b.drop(columns="seconds", errors="ignore"))  # fmt: skip
    for run in ("hopper-medium-replay-1x16-seed0", "hopper-medium-replay-1x32-seed0"):
        (a,) = (tmp_path / "serial" / "models").glob(f"{run}-*/checkpoint.pt")
        (b,) = (tmp_path / "ray" / "models").glob(f"{run}-*/checkpoint.pt")
        wa, wb = (torch.load(p, weights_only=False)["model"] for p in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)  # the same weights, bit for bit
    assert files(tmp_path / "ray" / "cache") == files(tmp_path / "serial" / "cache")


# ------------------------------------------------------------------ the prediction page's tasks
def prediction_params() -> dict:
    """The smoke prediction page on a Hopper medium dataset of 300 transitions (the last
    episode held out)."""
    write_minari_dataset("ttlib/hopper/medium-v0", hopper_like_episodes(n_episodes=10))
    params = {**preset_params("prediction", "smoke"), "preset": "smoke", "ray": None}
    return {**params, "dataset_transitions": 300, "train_steps": 6, "dynamics_steps": 10}


def test_prediction_tasks_train_a_tt_and_an_mlp_per_env():
    tasks = ray_tasks.prediction_tasks(prediction_params())
    assert [(t.name, t.kind, t.after) for t in tasks] == [
        ("train TT hopper", "train", ()),
        ("train MLP hopper", "baseline", ()),
    ]


@pytest.mark.slow
def test_ray_local_trains_the_prediction_models_the_notebook_loads(tmp_path, monkeypatch,
                                                                   local_ray):  # fmt: skip
    from ttlib.experiments import prediction, runs
    from ttlib.experiments.cache import train_tt

    params = prediction_params()

    def notebook_models():  # what the notebook's predict() trains or loads
        did = runs.ensure_dataset("hopper", "medium", 300, 0)
        data_cfg, train_cfg, model_kw = prediction.tt_configs(did, params)
        train_eps, test_eps = prediction.split_episodes(data_cfg)
        tt = train_tt(data_cfg, train_cfg, model_kw, eval_episodes=test_eps)
        return tt, prediction.dynamics_cached(data_cfg, train_eps, 10, 0)

    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path / "serial"))
    serial_tt, serial_mlp = notebook_models()
    assert "val_loss_state" in serial_tt.history[-1]  # the page's held-out curve
    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path / "ray"))
    ray_tasks.fill_prediction({**params, "ray": "local"})
    MODELS_USED.clear()
    tt, mlp = notebook_models()
    assert len(MODELS_USED) == 2 and not any(m["trained_in_this_run"] for m in MODELS_USED)
    assert tt.history == serial_tt.history  # held-out loss included
    a, b = tt.model.state_dict(), serial_tt.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert files(tmp_path / "ray") == files(tmp_path / "serial")  # the same cache keys
