"""benchmarks/bench_eval.py at a tiny size: the structure of its output and what it counts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_eval")


@pytest.fixture(scope="module")
def result(bench):
    # the smoke preset's d4rl block: a 1-layer, 32-wide model and a horizon-2 / beam-4 search
    search = ((("hopper", "medium-replay"), 30),)  # steps=2 below overrides the 30
    return bench.run_benchmark("smoke", search, episodes=(1, 2), steps=2, progress=False)


def test_counts_and_costs(result):
    (setting,) = result["settings"]
    runs = {r["episodes"]: r for r in setting["runs"]}
    assert sorted(runs) == [1, 2]
    planner = setting["planner"]
    for E, r in runs.items():
        assert r["episodes_evaluated"] == E
        assert r["env_steps_total"] == E * 2  # every episode ran its 2 steps (no early end)
        assert r["warmup_steps"] == 1  # the context would need 5 steps; 1 step stays measured
        assert r["measured_env_steps"] == E * (2 - r["warmup_steps"])
        assert r["rows"] == E * planner["beam_width"] * planner["n_expand"]
        assert r["cpu_s_per_env_step"] > 0
        assert r["cpu_min_per_1000_step_episode"] == pytest.approx(
            r["cpu_s_per_env_step"] * 1000 / 60
        )
        assert r["core_hours_10_episodes_1000_steps"] == pytest.approx(
            r["cpu_s_per_env_step"] * 10_000 / 3600
        )
        assert 0 < r["plan_share_of_cpu"] <= 1
    # the memory estimate grows with the rows
    assert runs[2]["memory_estimate_bytes"] > runs[1]["memory_estimate_bytes"]
    assert runs[1]["speedup_vs_1"] == pytest.approx(1.0)
    assert setting["repeat_1_episode_after_sweep"]["episodes"] == 1
    assert setting["recommendation"]["episodes_together"] in runs
    assert setting["steps_per_episode"] == 2
    assert set(setting["cost_model"]) >= {"fixed_cpu_s_per_plan", "cpu_s_per_row_per_plan"}
    assert result["machine"]["git_sha"] and result["machine"]["loadavg_start"]


def test_planner_comes_from_the_preset(bench, result):
    from ttlib.experiments.d4rl_table import planner_config
    from ttlib.experiments.presets import preset_params

    params = preset_params("d4rl", "smoke")
    expected = planner_config("hopper", "medium-replay", params)
    (setting,) = result["settings"]
    assert setting["planner"]["horizon"] == expected.horizon
    assert setting["planner"]["beam_width"] == expected.beam_width
    assert result["model"]["n_layer"] == params["n_layer"]
    assert result["model"]["n_embd"] == params["n_embd"]
    assert (result["model"]["observation_dim"], result["model"]["action_dim"]) == (17, 6)


def test_outputs(bench, result, tmp_path):
    paths = bench.write_outputs(result, tmp_path)
    assert json.loads(paths["json"].read_text())["settings"][0]["runs"][1]["episodes"] == 2
    with open(paths["csv"]) as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(bench.CSV_HEADER) and len(rows[0]) <= 6  # the book's table
    assert len(rows) == 1 + 2
    assert sum("(recommended)" in r[1] for r in rows[1:]) == 1


def test_recommendation_rule(bench):
    runs = [
        {"episodes": E, "cpu_s_per_env_step": c, "core_hours_10_episodes_1000_steps": 10 * c}
        for E, c in ((1, 1.0), (2, 0.7), (5, 0.52), (10, 0.5), (20, 0.49))
    ]
    rec = bench.recommend(runs)
    assert rec["saturates_at"] == 5  # the fewest within 10 % of the lowest (0.49)
    assert rec["episodes_together"] == 10  # the study's 10 in one batch: as cheap as any
    assert rec["batches_for_10_episodes"] == 1
    assert rec["speedup_vs_1"] == pytest.approx(1 / 0.5)
    # 10 together clearly worse than 5: plan 5 at a time, twice
    runs[3]["cpu_s_per_env_step"] = 0.6
    rec = bench.recommend(runs)
    assert rec["episodes_together"] == 20 and rec["saturates_at"] == 5
    runs[4]["cpu_s_per_env_step"] = 0.7
    rec = bench.recommend(runs)
    assert rec["episodes_together"] == 5 and rec["batches_for_10_episodes"] == 2
