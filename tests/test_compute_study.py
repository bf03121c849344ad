"""The compute study: FLOPs, the log-linear fit and its crossing, runs that extend bit for bit
from their committed files, fp16 points, cached evaluation, and the smoke notebook."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ttlib.data import DataConfig
from ttlib.errors import ConfigError
from ttlib.experiments import compute_report as report
from ttlib.experiments import compute_study as cs
from ttlib.experiments import episodes as episodes_module
from ttlib.experiments.compute_fit import (
    crossing,
    fit_log_tokens,
    paper_tokens,
    tokens_text,
    train_flops_per_token,
)
from ttlib.experiments.presets import repo_root
from ttlib.io import load_torch
from ttlib.model import GPTConfig
from ttlib.train import load_checkpoint

from conftest import hopper_like_episodes, write_minari_dataset


# ------------------------------------------------------------------ arithmetic
def test_flops_per_token_are_the_training_benchmarks():
    bench = json.loads((repo_root() / "results/benchmarks/training.json").read_text())
    for name, setting in bench["settings"].items():  # HalfCheetah windows, 4 layers
        c = GPTConfig(17, 6, n_layer=setting["n_layer"], n_head=4, n_embd=setting["n_embd"])
        assert train_flops_per_token(c) == setting["flop_per_token"], name


def test_paper_tokens_follow_the_original_recipe():
    # n_epochs_ref (80 for hopper medium-replay, else 50) x 1e6 windows x block size
    assert paper_tokens("hopper", "medium-replay", 159) == 80 * 10**6 * 159
    assert paper_tokens("halfcheetah", "medium-replay", 249) == 50 * 10**6 * 249


def test_fit_recovers_a_known_slope_with_calibrated_standard_errors():
    rng = np.random.default_rng(0)
    tokens = np.geomspace(3e6, 3e8, 6).repeat(2)  # six token counts, two seeds
    slopes, ses = [], []
    for _ in range(2000):
        scores = 10.0 + 4.0 * np.log10(tokens) + rng.normal(0, 3.0, len(tokens))
        fit = fit_log_tokens(tokens, scores)
        slopes.append(fit.slope)
        ses.append(fit.slope_se)
    assert np.mean(slopes) == pytest.approx(4.0, abs=0.05)
    # the reported s.e. (from the residuals, ddof = 2) matches the slopes' actual scatter
    true_se = 3.0 / np.sqrt(((np.log10(tokens) - np.log10(tokens).mean()) ** 2).sum())
    assert np.std(slopes, ddof=1) == pytest.approx(true_se, rel=0.05)
    assert np.sqrt(np.mean(np.square(ses))) == pytest.approx(true_se, rel=0.05)
    with pytest.raises(ValueError, match="3 points"):
        fit_log_tokens([1e6, 1e7], [1.0, 2.0])


def test_crossing_is_where_the_line_meets_the_target_within_two_standard_errors():
    rng = np.random.default_rng(1)
    tokens = np.geomspace(1e6, 1e8, 8)
    fit = fit_log_tokens(tokens, 5.0 * np.log10(tokens) - 20 + rng.normal(0, 0.5, 8))
    target = 5.0 * 10 - 20  # the true line reaches it at 1e10 tokens, past the data
    cross = crossing(fit, target)
    assert cross.determinable and cross.extrapolation
    assert cross.tokens == pytest.approx(10 ** ((target - fit.intercept) / fit.slope))
    assert cross.low < cross.tokens < cross.high
    assert cross.low < 1e10 < cross.high
    for edge in (cross.low, cross.high):  # Fieller: the line is exactly 2 s.e. from the target
        y, se = fit.predict([edge])
        assert abs(y[0] - target) == pytest.approx(2 * se[0], rel=1e-6)
    assert "extrapolation" in cross.text()
    inside = crossing(fit, float(fit.predict([1e7])[0][0]))
    assert inside.tokens == pytest.approx(1e7) and not inside.extrapolation
    # no clear slope: no crossing, whatever the point estimate says
    flat = fit_log_tokens(tokens, rng.normal(0, 3.0, 8) + 0.01 * np.log10(tokens))
    assert not flat.slope_clear
    assert not crossing(flat, 50.0).determinable and "within two s.e." in crossing(flat, 50).text()
    falling = fit_log_tokens(tokens, -5.0 * np.log10(tokens) + rng.normal(0, 0.1, 8))
    assert "falls" in crossing(falling, 50.0).reason


def test_points_of_other_runs_must_be_points_of_the_base_run():
    params = {"tokens": [1, 2, 4], "second_seed_tokens": [1, 3], "equal_flops_tokens": [2],
              "seed": 0, "kind": "medium-replay", "n_embd": 16, "large_n_embd": 32,
              "envs": ["hopper"], "second_seed_envs": ["hopper"], "large_envs": []}  # fmt: skip
    with pytest.raises(ConfigError, match="second_seed_tokens=\\[1, 3\\]"):
        cs.run_specs(params)
    specs = cs.run_specs({**params, "second_seed_tokens": [4, 1]})
    assert [(s.seed, s.n_embd, s.points) for s in specs] == [(0, 16, (1, 2, 4)), (1, 16, (1, 4))]


def test_equal_flops_pairs_each_wide_point_with_the_base_point_of_its_flops():
    rows = []
    for model, flops_per_token, tokens, shift in (
        ("4×64", 1.0, [10, 40], 0.0),
        ("4×128", 4.0, [10], 2.0),
    ):
        for t in tokens:
            for seed in range(3):
                rows.append({"env": "hopper", "kind": "medium-replay", "train_seed": 0,
                             "model": model, "tokens": t, "flops": t * flops_per_token,
                             "seed": seed, "score": seed + shift + (t == 40)})  # fmt: skip
    diffs = report.equal_flops(pd.DataFrame(rows), "4×64", "4×128")
    (row,) = diffs.itertuples()
    assert (row.base_tokens, row.large_tokens) == (40, 10)  # 40 tokens of 4x64 = 10 of 4x128
    # paired over reset seeds: the seed-to-seed spread cancels, the +1 shift is all that is left
    assert row.mean == pytest.approx(1.0) and row.se == 0 and row.clear


# ------------------------------------------------------------------ runs and points
def tiny_params(**kw) -> dict:
    params = {
        "preset": "smoke", "envs": ["hopper"], "kind": "medium-replay",
        "dataset_namespace": "ttlib", "dataset_transitions": 180, "batch_size": 4,
        "n_layer": 1, "n_head": 1, "n_embd": 16, "dropout": 0.0, "warmup_tokens": 600,
        "tokens": [1000, 2000], "second_seed_envs": ["hopper"], "second_seed_tokens": [1000],
        "large_envs": ["hopper"], "large_n_embd": 32, "equal_flops_tokens": [2000],
        "horizon": 1, "beam_width": 2, "episodes": 2, "max_episode_steps": 3,
        "baseline_steps": 5, "seed": 0, "train_up_to": None, "paper_search_envs": None,
        "paper_search_at": None,
    }  # fmt: skip
    return {**params, **kw}


@pytest.fixture
def synthetic_data(monkeypatch):
    write_minari_dataset("ttlib/hopper/synthetic-v0", hopper_like_episodes(length=60))

    def synthetic(env, kind, params, discretizer="quantile"):
        return DataConfig("ttlib/hopper/synthetic-v0", discretizer)

    monkeypatch.setattr(cs, "dataset_config", synthetic)


def test_an_extended_run_equals_one_long_run_and_keeps_fp16_points(tmp_path, synthetic_data):
    spec = cs.RunSpec("hopper", "medium-replay", 0, 16, (1000, 2000))
    short = cs.train_run(spec, tiny_params(), tmp_path / "a")
    assert sorted(short.points) == [2, 3]  # 1000 and 2000 tokens at 4 x 159 per step
    longer = cs.RunSpec("hopper", "medium-replay", 0, 16, (1000, 2000, 4000))
    grown = cs.train_run(longer, tiny_params(), tmp_path / "a")  # a later session extends it
    assert grown.folder == short.folder and sorted(grown.points) == [2, 3, 6]
    whole = cs.train_run(cs.RunSpec("hopper", "medium-replay", 0, 16, (4000,)), tiny_params(),
                         tmp_path / "b")  # fmt: skip
    a, b = (load_torch(r.folder / "checkpoint.pt")["model"] for r in (grown, whole))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    point = load_torch(grown.points[6])
    assert "optimizer" not in point and point["model"]["tok_emb.weight"].dtype == torch.float16
    model, _, _ = load_checkpoint(grown.points[6], device="cpu")  # plans as an fp32 model
    assert torch.equal(model.state_dict()["tok_emb.weight"], b["tok_emb.weight"].half().float())


def test_until_trains_a_sessions_chunk_and_a_later_call_goes_on(tmp_path, synthetic_data):
    spec = cs.RunSpec("hopper", "medium-replay", 0, 16, (1000, 2000, 4000))
    none = cs.train_run(spec, tiny_params(), tmp_path, until=500)  # below the first point
    assert none.points == {} and not (none.folder / "checkpoint.pt").exists()
    chunk = cs.train_run(spec, tiny_params(), tmp_path, until=2000)
    assert sorted(chunk.points) == [2, 3]
    assert load_torch(chunk.folder / "checkpoint.pt")["step"] == 3
    first = json.loads(chunk.folder.with_suffix(".json").read_text())
    rest = cs.train_run(spec, tiny_params(), tmp_path)
    assert sorted(rest.points) == [2, 3, 6]
    # run.json's record of the model: the whole run's seconds, the extending session's time
    timing = json.loads(rest.folder.with_suffix(".json").read_text())
    assert timing["train_seconds"] == load_torch(rest.folder / "checkpoint.pt")["train_seconds"]
    assert timing["train_seconds"] > first["train_seconds"] and timing["trained_utc"].endswith("Z")
    assert set(timing) >= {"git_sha", "ttlib_modified"}
    again = cs.train_run(spec, tiny_params(), tmp_path, until=2000)  # a preset's train_up_to
    assert sorted(again.points) == [2, 3]  # shows no point beyond it, though more are kept


@pytest.mark.slow
def test_study_evaluates_every_kept_point_once_and_reuses_its_episodes(tmp_path, monkeypatch,
                                                                       synthetic_data):  # fmt: skip
    monkeypatch.setattr(cs, "results_dir", lambda name, preset: tmp_path)
    monkeypatch.setattr(cs, "data_episode_scores",  # the real one regenerates the dataset
                        lambda params: pd.DataFrame({"env": ["hopper"], "kind": ["medium-replay"],
                                                     "episode": [0], "score": [1.0]}))  # fmt: skip
    study = cs.run_study(tiny_params())
    points = report.point_summary(study.episodes)
    assert set(points["model"]) == {"1×16", "1×32"} and set(points["train_seed"]) == {0, 1}
    assert (points["n"] == 2).all() and len(points) == 4
    assert set(study.references["method"]) == {"data", "BC", "IQL"}
    wide = points[points["model"] == "1×32"].iloc[0]
    base = points[(points["model"] == "1×16") & (points["tokens"] == 2000 // 636 * 636)]
    assert wide["flops"] == pytest.approx(base["flops"].iloc[0], rel=0.3)  # equal FLOPs

    def no_planning(*args, **kw):
        raise AssertionError("a cached point was planned again")

    monkeypatch.setattr(episodes_module, "evaluate", no_planning)
    again = cs.run_study(tiny_params())
    pd.testing.assert_frame_equal(again.episodes, study.episodes)
    assert study.paper_search.empty  # paper_search_at: None


@pytest.mark.slow
def test_paper_search_replans_the_base_runs_listed_point_with_the_originals_search(
    tmp_path, monkeypatch, synthetic_data
):
    monkeypatch.setattr(cs, "results_dir", lambda name, preset: tmp_path)
    monkeypatch.setattr(cs, "data_episode_scores",
                        lambda params: pd.DataFrame({"env": ["hopper"], "kind": ["medium-replay"],
                                                     "episode": [0], "score": [1.0]}))  # fmt: skip
    params = tiny_params(paper_search_envs=["hopper"], paper_search_at=[2000], max_episode_steps=2)
    study = cs.run_study(params)
    again = study.paper_search
    # only seed 0 of the 1 x 16 model, at its 2000-token point; Hopper medium-replay's search
    assert set(again["model"]) == {"1×16"} and set(again["train_seed"]) == {0}
    assert set(again["step"]) == {3} and len(again) == 2
    assert set(again["horizon"]) == {15} and set(again["beam_width"]) == {128}
    table = report.paper_search_table(again, study.episodes, tiny_params())
    assert len(table) == 1 and table["preset's search"].iloc[0].endswith("(H1/B2)")
    assert table["original's search"].iloc[0].endswith("(H15/B128)")


# ------------------------------------------------------------------ the notebook
@pytest.mark.slow
def test_smoke_notebook_runs(tmp_path, monkeypatch):
    """The notebook at the smoke preset, as `ttlib reproduce --preset smoke` runs it."""
    import papermill as pm

    import ttlib

    here = Path(ttlib.__file__).resolve().parents[1]  # the kernel imports the ttlib under test
    monkeypatch.setenv("PYTHONPATH", f"{here}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = tmp_path / "compute_study.ipynb"
    pm.execute_notebook(str(here / "notebooks" / "compute_study.ipynb"), str(out),
                        parameters={"preset": "smoke"}, cwd=str(here / "notebooks"),
                        progress_bar=False, kernel_name="python3")  # fmt: skip
    glued = out.read_text()
    for key in ("compute_study_verdict", "compute_study_paper", "cs_paper_tokens"):
        assert key in glued, f"{key} was not glued"
    folder = here / "build" / "smoke" / "compute_study"
    record = json.loads((folder / "run.json").read_text())
    assert any(m["model"].startswith("hopper-medium-replay") for m in record["models"])
    points = pd.read_csv(folder / "points.csv")
    assert set(points["env"]) == {"hopper", "halfcheetah"} and (points["n"] >= 2).all()


def test_token_counts_read_with_a_unit_or_a_power_of_ten():
    assert [tokens_text(t) for t in (950, 3e6, 12.4e9, 947e9, 2.5e14)] == [
        "950", "3M", "12.4B", "947B", "250T"]  # fmt: skip
    assert tokens_text(2.07e25) == "2.07×10²⁵"  # not 2.07e+13T


def test_train_up_to_is_one_count_or_one_per_dataset():
    per_env = {"train_up_to": {"hopper": 300_000_000, "halfcheetah": 120_000_000}}
    assert cs.until_for(per_env, "hopper") == 300_000_000
    assert cs.until_for(per_env, "halfcheetah") == 120_000_000
    assert cs.until_for(per_env, "walker2d") is None  # not listed: every point
    assert cs.until_for({"train_up_to": 5}, "hopper") == 5
    assert cs.until_for({"train_up_to": None}, "hopper") is None
