"""The D4RL table: published numbers, score statistics, caching, remote ids, planning scale."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from ttlib.data import DataConfig, load_episodes
from ttlib.experiments import cache
from ttlib.experiments import d4rl_data as d4data
from ttlib.experiments import d4rl_report as report
from ttlib.experiments import d4rl_table as dt
from ttlib.experiments.cache import MODELS_USED, train_tt
from ttlib.train import TrainConfig, load_checkpoint, train

from conftest import hopper_like_episodes, linear_episodes, tiny_params, write_minari_dataset

matplotlib.use("Agg")

TINY_MODEL = {"n_layer": 1, "n_head": 1, "n_embd": 16}


# ------------------------------------------------------------------ published numbers
def test_paper_averages_equal_the_published_average_row():
    paper = report.paper_table()
    assert len(paper) == 9 * 4
    averages = report.average_scores(paper).round(1).to_dict()
    assert averages == {"BC": 47.7, "IQL": 77.0, "TT (uniform)": 72.6, "TT (quantile)": 78.9}
    hopper_mr = paper[(paper["env"] == "hopper") & (paper["kind"] == "medium-replay")]
    assert hopper_mr.set_index("method")["score"].to_dict()["TT (uniform)"] == 99.4


def test_uniform_column_is_labelled_as_secondary_source():
    paper = report.paper_table()
    uniform = paper[paper["method"] == "TT (uniform)"]["source"].unique()
    assert len(uniform) == 1 and "secondary" in uniform[0]
    assert all("secondary" not in s for s in paper[paper["method"] != "TT (uniform)"]["source"])
    assert report.paper_column("TT (uniform)").endswith("†")


# ------------------------------------------------------------------ statistics
def episode_frame(scores: dict[tuple[str, str, str, int], list[float]]) -> pd.DataFrame:
    rows = [
        {"env": e, "kind": k, "method": m, "train_seed": s, "episode": i, "score": x}
        for (e, k, m, s), xs in scores.items()
        for i, x in enumerate(xs)
    ]
    return pd.DataFrame(rows)


def test_summary_is_mean_and_standard_error_pooled_over_seeds():
    eps = episode_frame(
        {
            ("hopper", "medium", "BC", 0): [10.0, 20.0],
            ("hopper", "medium", "BC", 1): [30.0, 40.0],
            ("hopper", "medium", "IQL", 0): [50.0, 50.0, 50.0],
        }
    )
    s = dt.summarise(eps).set_index("method")
    assert s.loc["BC", "score"] == pytest.approx(25.0)
    # sample (ddof=1) std of 10, 20, 30, 40 is sqrt(500 / 3); s.e. = std / sqrt(4)
    assert s.loc["BC", "se"] == pytest.approx(np.sqrt(500.0 / 3.0) / 2.0)
    assert (s.loc["BC", "episodes"], s.loc["BC", "seeds"]) == (4, 2)
    assert s.loc["IQL", "se"] == 0.0


def test_display_table_formats_ours_and_the_papers_columns_with_an_average_row():
    eps = episode_frame(
        {
            ("hopper", "medium", "TT (quantile)", 0): [60.0, 62.0],
            ("hopper", "medium", "BC", 0): [40.0, 40.0],
            ("walker2d", "medium", "TT (quantile)", 0): [80.0, 80.0],
            ("walker2d", "medium", "BC", 0): [20.0, 30.0],
        }
    )
    table = report.display_table(dt.summarise(eps))
    assert list(table["Env"]) == ["Hopper", "Walker2d", ""]
    assert table.loc[0, "TT (quantile)"] == "61.0 ± 1.0"
    assert table.loc[0, "paper: TT (quantile)"] == "61.1 ± 3.6"
    assert table.loc[0, "paper: BC"] == "63.9"
    avg = table.iloc[-1]
    assert (avg["Dataset"], avg["BC"], avg["TT (quantile)"]) == ("Average", "32.5", "70.5")
    assert avg["paper: BC"] == "70.6"  # (63.9 + 77.3) / 2: the paper over the same datasets


# ------------------------------------------------------------------ datasets
def test_remote_ids_map_d4rl_names_onto_minari_mujoco():
    assert d4data.remote_ids("hopper", "medium") == ["mujoco/hopper/medium-v0"]
    assert d4data.remote_ids("walker2d", "medium-expert") == [
        "mujoco/walker2d/medium-v0",
        "mujoco/walker2d/expert-v0",
    ]
    with pytest.raises(d4data.DatasetUnavailable, match="medium-replay"):
        d4data.remote_ids("hopper", "medium-replay")
    with pytest.raises(ValueError, match="unknown dataset kind"):
        d4data.remote_ids("hopper", "medium-random")


def test_mujoco_namespace_builds_medium_expert_from_both_remote_datasets():
    # Stand-ins for the remote datasets: load_minari reads local copies before downloading.
    write_minari_dataset("mujoco/hopper/medium-v0", linear_episodes(4, 10, seed=1))
    write_minari_dataset("mujoco/hopper/expert-v0", linear_episodes(4, 10, seed=2))
    params = tiny_params(dataset_namespace="mujoco", dataset_transitions=40)
    cfg = d4data.dataset_config("hopper", "medium", params)
    assert (cfg.dataset_id, cfg.max_transitions) == ("mujoco/hopper/medium-v0", 40)
    cfg = d4data.dataset_config("hopper", "medium-expert", params, "uniform")
    assert cfg.dataset_id == "ttlib-mujoco/hopper/medium-expert-v0"
    assert cfg.discretizer == "uniform"
    eps = load_episodes(cfg)  # the first 40 transitions: two episodes of each source
    first = [linear_episodes(4, 10, seed=s)[0].rewards for s in (1, 2)]
    np.testing.assert_allclose(eps[0].rewards, first[0], rtol=1e-6)
    np.testing.assert_allclose(eps[1].rewards, first[1], rtol=1e-6)
    assert len(eps) == 4
    with pytest.raises(d4data.DatasetUnavailable):
        d4data.dataset_config("hopper", "medium-replay", params)


# ------------------------------------------------------------------ planning
def test_planner_overrides_are_the_papers_at_paper_scale_and_scaled_below():
    paper = {"horizon": 15, "beam_width": 128}
    cfg = dt.planner_config("walker2d", "medium-replay", paper)
    assert (cfg.horizon, cfg.beam_width, cfg.k_act, cfg.cdf_act) == (20, 32, 40, None)
    cfg = dt.planner_config("hopper", "medium", paper)
    assert (cfg.horizon, cfg.beam_width, cfg.k_act, cfg.cdf_act) == (15, 128, None, 0.6)
    cpu = {"horizon": 5, "beam_width": 32}
    cfg = dt.planner_config("halfcheetah", "medium", cpu)
    assert (cfg.horizon, cfg.beam_width) == (2, 8)  # 5/3 and 32/4, rounded up
    cfg = dt.planner_config("walker2d", "medium-expert", cpu)
    assert (cfg.horizon, cfg.beam_width) == (2, 32)


# ------------------------------------------------------------------ caching
def test_staged_training_equals_one_run_and_a_second_call_loads(tmp_path, monkeypatch):
    write_minari_dataset("ttlib/test/lin-v0", linear_episodes(10, 20))
    data_cfg = DataConfig("ttlib/test/lin-v0", "uniform", n_bins=10, n_transitions=3)
    train_cfg = TrainConfig(max_steps=6, batch_size=4, log_every=1, checkpoint_every=6)
    first = train_tt(data_cfg, train_cfg, TINY_MODEL, snapshots=[2, 4])
    assert sorted(first.snapshots) == [2, 4, 6]
    assert [h["step"] for h in first.history] == [1, 2, 3, 4, 5, 6]
    early, _, saved = load_checkpoint(first.snapshots[2])
    assert saved["step"] == 2

    from ttlib.data import SequenceDataset
    from ttlib.train import gpt_config_for

    ds = SequenceDataset(load_episodes(data_cfg), data_cfg)
    whole = train(ds, gpt_config_for(ds, **TINY_MODEL), train_cfg, tmp_path / "one", progress=False)
    staged, direct = first.model.state_dict(), whole.model.state_dict()
    for name in direct:
        torch.testing.assert_close(staged[name], direct[name])

    def no_training(*args, **kw):
        raise AssertionError("trained again instead of loading the cache")

    with monkeypatch.context() as m:
        m.setattr(cache, "train", no_training)
        again = train_tt(data_cfg, train_cfg, TINY_MODEL, snapshots=[2, 4])
        assert again.folder == first.folder
    other = train_tt(data_cfg, TrainConfig(max_steps=6, batch_size=5), TINY_MODEL)
    assert other.folder != first.folder

    # the same id regenerated with other contents must not reuse the model fit on the old data
    fresh = linear_episodes(10, 20)
    for ep in fresh:
        ep.rewards = ep.rewards + 1.0
    import minari

    minari.delete_dataset("ttlib/test/lin-v0")
    write_minari_dataset("ttlib/test/lin-v0", fresh)
    regenerated = train_tt(data_cfg, train_cfg, TINY_MODEL)
    assert regenerated.folder != first.folder


def test_baselines_are_cached_by_config(monkeypatch):
    eps = linear_episodes(6, 20)
    cfg = DataConfig("ttlib/test/lin-v0")
    MODELS_USED.clear()
    bc = dt.baseline_cached(dt.BaselineSpec("BC", 5, 0), cfg, eps)
    monkeypatch.setattr(dt, "train_bc", lambda *a, **k: 1 / 0)
    again = dt.baseline_cached(dt.BaselineSpec("BC", 5, 0), cfg, eps)
    # the run record lists the model once (trained in this run, with its cost), not twice
    (entry,) = MODELS_USED
    assert entry["trained_in_this_run"] and entry["train_seconds"] > 0
    obs = eps[0].observations[:3]
    np.testing.assert_allclose(bc.act(obs), again.act(obs))
    with pytest.raises(ZeroDivisionError):  # another step count is another cache entry
        dt.baseline_cached(dt.BaselineSpec("BC", 6, 0), cfg, eps)
    with pytest.raises(ValueError, match="unknown baseline"):
        dt.baseline_cached(dt.BaselineSpec("CQL", 5, 0), cfg, eps)


def test_iql_reward_scale_spans_returns_to_1000():
    eps = linear_episodes(4, 10)
    returns = [float(e.rewards.sum()) for e in eps]
    scale = dt.iql_reward_scale(eps)
    assert scale * (max(returns) - min(returns)) == pytest.approx(1000.0)


def test_evaluation_episodes_are_cached_one_by_one():
    calls = []

    def make_agent(seeds):
        calls.append(seeds)
        return lambda obs: np.zeros((len(obs), 3))

    key = {"policy": "zeros"}
    rows = dt.episode_scores(key, make_agent, "hopper", 2, 4, first_seed=7)
    assert calls == [[7, 8]] and [r["seed"] for r in rows] == [7, 8]  # planned together
    assert all(r["length"] == 4 for r in rows)
    again = dt.episode_scores(key, make_agent, "hopper", 3, 4, first_seed=7)
    assert calls == [[7, 8], [9]]  # only the new episode ran
    assert again[:2] == rows


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_table_on_synthetic_hopper_data(monkeypatch):
    write_minari_dataset("ttlib/hopper/synthetic-v0", hopper_like_episodes())

    def synthetic(env, kind, params, discretizer="quantile"):
        return DataConfig("ttlib/hopper/synthetic-v0", discretizer)

    monkeypatch.setattr(dt, "dataset_config", synthetic)
    params = tiny_params()

    def no_episodes(*args, **kw):
        raise AssertionError("train-only ran evaluation episodes")

    with monkeypatch.context() as m:  # training alone fills the model caches, no episodes
        m.setattr(dt, "episode_scores", no_episodes)
        trained_only = dt.run_table(params, evaluate_agents=False)
    assert trained_only.episodes.empty and not trained_only.histories.empty
    run = dt.run_table(params)
    assert set(run.episodes["method"]) == set(dt.METHODS)
    assert len(run.episodes) == 4 * params["episodes"]
    assert run.episodes["length"].max() <= params["max_episode_steps"]
    assert set(run.histories["token"]) == {"state", "action", "reward", "value"}
    summary = dt.summarise(run.episodes)
    table = report.display_table(summary)
    assert list(table.columns[2:6]) == list(dt.METHODS)
    for fig in (report.plot_table(summary), report.plot_losses(run.histories)):
        assert fig.axes


def test_quiet_c_output_silences_both_file_descriptors(capfd):
    import os

    with d4data.quiet_c_output():
        os.write(1, b"from C to stdout\n")
        os.write(2, b"from C to stderr\n")
    os.write(1, b"after\n")
    out, err = capfd.readouterr()
    assert (out, err) == ("after\n", "")
