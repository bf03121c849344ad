import json
import os
from pathlib import Path

import pytest

from ttlib.experiments.presets import ConfigError, repo_root, resolve, results_dir
from ttlib.experiments.runs import RunRecord


def test_none_parameters_take_the_preset_and_given_ones_win():
    ns = {"preset": "cpu", "episodes": None, "horizon": 7, "np": None}
    ns.pop("np")
    p = resolve("d4rl", ns)
    assert p["horizon"] == 7 and p["preset"] == "cpu"
    assert p["episodes"] == resolve("d4rl", {"preset": "cpu"})["episodes"]


def test_unknown_preset_is_one_line_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'smoke'"):
        resolve("d4rl", {"preset": "smok"})


def test_unknown_parameter_is_named():
    with pytest.raises(ConfigError, match=r"horizn \(did you mean horizon\?\)"):
        resolve("d4rl", {"preset": "smoke", "horizn": 3})


def test_wrong_type_is_rejected():
    with pytest.raises(ConfigError, match="expected int"):
        resolve("d4rl", {"preset": "smoke", "episodes": "ten"})
    assert resolve("d4rl", {"preset": "smoke", "episodes": 3.0})["episodes"] == 3


def test_ipython_render_hook_is_one_line():
    err = ConfigError("bad thing")
    assert err._render_traceback_() == ["ConfigError: bad thing"]


def test_smoke_results_never_go_to_results(tmp_path, monkeypatch):
    monkeypatch.setenv("TTLIB_ROOT", str(tmp_path))
    assert results_dir("d4rl", "smoke") == tmp_path / "build" / "smoke" / "d4rl"
    assert results_dir("d4rl", "cpu") == tmp_path / "results" / "d4rl"
    assert results_dir("d4rl", "paper") == tmp_path / "results" / "d4rl-paper"


def test_run_record_has_what_it_takes_to_rerun(tmp_path):
    p = RunRecord("d4rl", {"preset": "smoke", "episodes": 2}).write(tmp_path)
    rec = json.loads(p.read_text())
    for key in ("preset", "params", "command", "versions", "hardware", "wall_time_s"):
        assert key in rec
    assert rec["command"].startswith("ttlib reproduce --preset smoke")
    assert "torch" in rec["versions"]


def test_run_record_keeps_the_commit_of_its_start(monkeypatch, tmp_path):
    import ttlib.experiments.runs as runs

    monkeypatch.setattr(runs, "_git", lambda *args: "sha-at-start")
    record = RunRecord("d4rl", {"preset": "smoke"})
    monkeypatch.setattr(runs, "_git", lambda *args: "sha-at-finish")  # a commit landed
    rec = json.loads(record.write(tmp_path).read_text())
    assert rec["git_sha"] == "sha-at-start"
    assert rec["ttlib_modified_at_start"] in (True, False)


def test_runs_summary_collects_every_run_record(tmp_path):
    import csv

    from ttlib.experiments.reproduce import summarize_runs

    RunRecord("d4rl", {"preset": "cpu"}, command="ttlib reproduce --preset cpu --only d4rl").write(
        tmp_path / "d4rl"
    )
    models = [  # a rerun that loaded one cached model and trained another
        {"model": "a", "trained_in_this_run": False, "train_seconds": 540.0},
        {"model": "b", "trained_in_this_run": True, "train_seconds": 60.0},
        {"model": "a", "trained_in_this_run": False, "train_seconds": 540.0},  # used twice
    ]
    RunRecord("attention", {"preset": "cpu"}, extra={"models": models}).write(
        tmp_path / "attention"
    )
    text = summarize_runs(tmp_path).read_text().splitlines()
    assert text[0].startswith("experiment,preset,command")
    assert [line.split(",")[0] for line in text[1:]] == ["attention", "d4rl"]
    # every model used counts once in the training time; only the loaded one (9 min) adds
    # to the notebook's own time in the total (the other was trained inside it)
    attention = next(csv.DictReader(text))
    assert attention["models_train_min"] == "10.0"
    assert float(attention["total_compute_min"]) == round(float(attention["notebook_min"]) + 9.0, 1)


def test_model_kwargs_pass_dropout_only_where_a_preset_sets_it():
    from ttlib.experiments.presets import model_kwargs, preset_params

    size = {"n_layer": 2, "n_head": 2, "n_embd": 32}
    assert model_kwargs({**size, "seed": 0}) == size  # the paper's default dropout stays
    assert model_kwargs({**size, "dropout": 0.0}) == {**size, "dropout": 0.0}
    assert preset_params("d4rl", "cpu")["dropout"] == 0.0
    assert "dropout" not in preset_params("d4rl", "paper")


def test_run_json_lists_the_models_a_run_trained_or_loaded(tmp_path, monkeypatch):
    import json

    import ttlib.experiments.runs as ex
    from ttlib.data import DataConfig
    from ttlib.experiments.cache import train_tt
    from ttlib.train import TrainConfig

    from conftest import linear_episodes, write_minari_dataset

    monkeypatch.setenv("TTLIB_KEEP_MINARI_PATH", "1")  # keep the test's Minari dir
    write_minari_dataset("ttlib/test/runlog-v0", linear_episodes(6, 20))
    data_cfg = DataConfig("ttlib/test/runlog-v0", "uniform", n_bins=10, n_transitions=3)
    train_cfg = TrainConfig(max_steps=4, batch_size=4, checkpoint_every=2)
    size = dict(n_layer=1, n_head=1, n_embd=8)
    records = []
    for _ in range(2):  # first run trains, the rerun loads the cache
        run = ex.start("attention", {"preset": "smoke"})
        run.out_dir = tmp_path / "out"
        train_tt(data_cfg, train_cfg, size)
        records.append(json.loads(run.finish().read_text())["models"])
    first, again = records
    assert [m["trained_in_this_run"] for m in first] == [True]
    assert [m["trained_in_this_run"] for m in again] == [False]
    assert first[0]["model"] == again[0]["model"] and first[0]["steps"] == 4
    assert again[0]["train_seconds"] == first[0]["train_seconds"] > 0


def test_presets_choose_the_learning_rate_schedule():
    from ttlib.experiments.presets import preset_params, train_kwargs
    from ttlib.train import TrainConfig

    for experiment in ("prediction", "attention", "imitation", "goal_reaching", "d4rl", "maze_q"):
        # the paper preset trains as the original; the short smoke and cpu runs use run_length
        assert train_kwargs(preset_params(experiment, "paper")) == {"schedule": "original"}
        for preset in ("smoke", "cpu"):
            kw = train_kwargs(preset_params(experiment, preset))
            assert TrainConfig(**kw).schedule == "run_length"
    assert train_kwargs({}) == {} and TrainConfig().schedule == "original"


# ------------------------------------------------------------ parameters out of range (#22)
@pytest.mark.parametrize(
    "given, fragment",
    [
        ({"episodes": -1}, "parameter episodes=-1 for imitation: must be an integer >= 1"),
        ({"beam_width": 0}, "parameter beam_width=0 for imitation: must be an integer >= 1"),
        ({"train_steps": 0}, "train_steps=0"),
        ({"seed": -1}, "parameter seed=-1 for imitation: must be an integer >= 0"),
        ({"envs": []}, "parameter envs=[] for imitation: must list at least one value"),
        ({"discretizer": "octile"}, "choose from ['quantile', 'uniform']"),
        ({"n_head": 3}, "n_embd=32 for imitation: must be a multiple of n_head=3"),
    ],
)
def test_parameters_out_of_range_are_refused_before_any_work(given, fragment):
    with pytest.raises(ConfigError) as err:
        resolve("imitation", {"preset": "smoke", **given})
    assert fragment in str(err.value)


def test_every_preset_block_passes_its_own_range_checks():
    from ttlib.experiments.presets import check_params, load_presets

    for block in load_presets().values():
        for experiment, params in block.items():
            check_params(experiment, dict(params))


@pytest.mark.slow
@pytest.mark.parametrize(
    "notebook, given, fragment",
    [
        ("imitation", {"episodes": -1}, "parameter episodes=-1 for imitation"),
        ("goal_reaching", {"beam_width": 0}, "parameter beam_width=0 for goal_reaching"),
    ],
)
def test_notebook_with_a_parameter_out_of_range_stops_in_its_first_cell(
    tmp_path, monkeypatch, notebook, given, fragment
):
    """papermill as a user runs it: the ConfigError is the notebook's error, before any work."""
    import time

    import papermill as pm

    import ttlib

    root = repo_root()
    here = Path(ttlib.__file__).resolve().parents[1]  # the kernel imports the ttlib under test
    monkeypatch.setenv("PYTHONPATH", f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out_dir = root / "build" / "smoke" / notebook  # results_dir(notebook, "smoke"), not made

    def listing():
        return sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else None

    before = listing()
    start = time.monotonic()
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(
            str(root / "notebooks" / f"{notebook}.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"preset": "smoke", **given},
            cwd=str(root / "notebooks"),
            progress_bar=False,
            kernel_name="python3",
        )
    assert err.value.ename == "ConfigError" and fragment in err.value.evalue
    assert time.monotonic() - start < 120  # kernel start and imports; no model was trained
    assert listing() == before  # nothing written
