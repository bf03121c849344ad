"""The paper's numbers come from one sourced CSV; the noise rule and the verdicts built on it;
the provenance footer of the experiment pages."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ttlib.envs import REF_SCORES
from ttlib.experiments import d4rl_report, paper, provenance, runs, verdicts


# ------------------------------------------------------------------ the sourced CSV
def test_every_number_has_a_table_a_method_a_value_and_a_source():
    df = paper.paper_numbers()
    assert list(df.columns[: len(paper.COLUMNS)]) == paper.COLUMNS
    assert df["value"].notna().all() and (df["source"].str.len() > 10).all()
    assert not df.duplicated(["table", "env", "dataset", "method"]).any()


def test_table_1_has_every_baseline_column_of_the_tt_paper_for_all_nine_datasets():
    d4rl = paper.paper_numbers("d4rl")
    rows = d4rl[d4rl["dataset"] != "average"]
    for method in ("BC", "MBOP", "BRAC", "CQL", "DT", "IQL", "TT (uniform)", "TT (quantile)"):
        assert len(rows[rows["method"] == method]) == 9, method
    # the printed averages are the means of their rows
    for method in ("BC", "MBOP", "BRAC", "CQL", "DT", "TT (uniform)", "TT (quantile)"):
        mean = rows[rows["method"] == method]["value"].mean()
        assert round(mean, 1) == paper.paper_value("d4rl", method, "", "average"), method
    assert paper.paper_value("d4rl", "TT (quantile)", "hopper", "medium-replay") == 91.5


def test_iql_is_labelled_as_the_iql_papers_and_uniform_as_secondary():
    d4rl = paper.paper_numbers("d4rl")
    iql = d4rl[d4rl["method"] == "IQL"]["source"].unique()
    assert len(iql) == 1 and iql[0].startswith("IQL paper")
    assert "average" not in set(d4rl[d4rl["method"] == "IQL"]["dataset"])  # not printed
    uniform = d4rl[d4rl["method"] == "TT (uniform)"]["source"].unique()
    assert len(uniform) == 1 and "secondary" in uniform[0]
    tt_own = d4rl[d4rl["method"].isin(["BC", "MBOP", "BRAC", "CQL", "DT", "TT (quantile)"])]
    assert tt_own["source"].str.startswith("TT paper Table 1").all()


def test_standard_errors_keep_their_printed_digits():
    d4rl = paper.paper_numbers("d4rl")
    hop = d4rl[(d4rl["env"] == "hopper") & (d4rl["dataset"] == "medium-expert")]
    assert hop.set_index("method").loc["TT (uniform)", "text"] == "106.0 ± 0.28"


def test_reference_returns_match_the_normaliser():
    ref = paper.paper_numbers("reference_return")
    for env, (lo, hi) in REF_SCORES.items():
        assert paper.paper_value("reference_return", "random", env) == pytest.approx(lo)
        assert paper.paper_value("reference_return", "expert", env) == pytest.approx(hi)
    assert len(ref) == 2 * len(REF_SCORES)


def test_a_missing_number_is_a_key_error():
    with pytest.raises(KeyError, match="antmaze"):
        paper.paper_value("antmaze", "TT(+Q)", "antmaze", "umaze-diverse")


def test_the_d4rl_paper_tables_fit_the_page():
    baselines, tt = d4rl_report.paper_tables()
    assert baselines.shape[1] <= 6 and tt.shape[1] <= 6
    assert list(baselines["Dataset"])[-1] == "Average"
    assert tt.set_index("Dataset").loc["Average", "IQL ‡"] == "77.0*"  # computed, marked


# ------------------------------------------------------------------ the noise rule
def test_paired_difference_uses_the_sample_standard_deviation():
    d = paper.paired_difference([3.0, 5.0, 7.0], [1.0, 1.0, 1.0])  # differences 2, 4, 6
    assert (d.mean, d.n) == (4.0, 3)
    assert d.se == pytest.approx(2.0 / np.sqrt(3))  # ddof = 1 std of 2, 4, 6 is 2
    assert d.clear and d.sign == 1
    assert d.text() == "+4.0 ± 1.2 (n = 3)"


def test_a_difference_inside_two_standard_errors_is_noise():
    d = paper.Difference(1.9, 1.0, 5)
    assert not d.clear and d.sign == 0
    assert not paper.Difference(5.0, float("nan"), 1).clear
    assert not paper.Difference(0.0, 0.0, 4).clear  # identical outcomes: no difference
    assert paper.Difference(-1.0, 0.0, 4).sign == -1


def test_independent_difference_combines_the_two_errors():
    d = paper.independent_difference([1.0, 3.0], [10.0, 10.0, 10.0])
    assert d.mean == -8.0 and d.n == 2
    assert d.se == pytest.approx(np.std([1.0, 3.0], ddof=1) / np.sqrt(2))


def test_mean_of_differences_combines_the_datasets_errors():
    d = paper.mean_of_differences([paper.Difference(2.0, 3.0, 3), paper.Difference(4.0, 4.0, 3)])
    assert (d.mean, d.se, d.n) == (3.0, 2.5, 6)


def test_cell_is_mean_se_and_n():
    assert paper.cell(12.345, 1.5, 3) == "12.3 ± 1.5 (3)"
    assert paper.cell(12.345, float("nan")) == "12.3"


# ------------------------------------------------------------------ verdicts
def test_verdict_words_are_checked_and_rendered():
    with pytest.raises(ValueError):
        paper.Verdict("x", "p", "o", "maybe", "w")
    v = paper.Verdict("x", "claim", "ours", "partly", "because *this*")
    assert v.markdown().startswith("**Verdict: partly.** because *this*")
    assert paper.share_verdict(2, 2) == "reproduced"
    assert paper.share_verdict(1, 2) == "partly"
    assert paper.share_verdict(0, 2) == "not at this scale"


def test_prediction_verdict_needs_tt_clearly_closer():
    rng = np.random.default_rng(0)
    close = {"TT (argmax)": rng.normal(0.5, 0.05, 20), "MLP": rng.normal(2.0, 0.05, 20)}
    far = {"TT (argmax)": rng.normal(2.0, 0.05, 20), "MLP": rng.normal(0.5, 0.05, 20)}
    assert verdicts.prediction({"hopper": close}, 100).verdict == "reproduced"
    assert verdicts.prediction({"hopper": close, "walker2d": far}, 100).verdict == "partly"
    assert verdicts.prediction({"hopper": far}, 100).verdict == "not at this scale"
    # a TT trained longer on the page is the one that counts for its environment
    longer = {**far, "TT (argmax), longer": rng.normal(0.1, 0.05, 20)}
    v = verdicts.prediction({"hopper": longer, "walker2d": far}, 100)
    assert v.verdict == "partly" and "hopper: MLP − TT (argmax), longer = +" in v.why


def test_imitation_verdict_asks_for_a_test_that_could_see_a_shortfall():
    def frame(tt, data):
        rows = [{"env": "hopper", "agent": "TT (likelihood)", "score": x} for x in tt]
        return pd.DataFrame(
            rows + [{"env": "hopper", "agent": "expert data", "score": x} for x in data]
        )

    assert verdicts.imitation(frame([100, 101, 99], [100, 100.5, 99.5])).verdict == "reproduced"
    # within the noise, but the noise is too wide to tell
    assert verdicts.imitation(frame([10, 190], [100, 100.5])).verdict == "not at this scale"
    assert (
        verdicts.imitation(frame([50, 51, 49], [100, 100.5, 99.5])).verdict == "not at this scale"
    )


def test_goal_reaching_verdict():
    assert verdicts.goal_reaching([1] * 10, [1] * 10).verdict == "reproduced"
    assert verdicts.goal_reaching([1, 1, 1, 1, 0, 0, 0, 0, 0, 0] * 3, [1] * 30).verdict == "partly"
    assert verdicts.goal_reaching([0] * 10, [1] * 10).verdict == "not at this scale"
    # a variant of ours is reported beside the verdict and does not change it
    v = verdicts.goal_reaching([0] * 10, [1] * 10, variant=("relative goals", [1] * 8 + [0] * 2))
    assert v.verdict == "not at this scale"
    assert "Changed by us (relative goals), TT reached 80 ± 13.3 % (n = 10)." in v.why


def test_attention_verdict_counts_patterns_above_chance():
    rows = []
    for w in range(8):
        rows.append(
            {
                "window": w,
                "layer": 0,
                "head": 0,
                "markov": 0.6 + 0.01 * w,
                "smoothing": 0.1,
                "chance_markov": 0.2,
                "chance_smoothing": 0.1,
            }
        )
        rows.append(
            {
                "window": w,
                "layer": 0,
                "head": 1,
                "markov": 0.2,
                "smoothing": 0.1,
                "chance_markov": 0.2,
                "chance_smoothing": 0.1,
            }
        )
    assert verdicts.attention(pd.DataFrame(rows)).verdict == "partly"


def test_d4rl_verdict_from_paired_episode_differences():
    rows = []
    for kind in ("medium", "medium-replay"):
        for i in range(3):
            for method, score in (("TT (quantile)", 50 + i), ("BC", 20 + i), ("IQL", 49 + i)):
                rows.append(
                    {
                        "env": "hopper",
                        "kind": kind,
                        "method": method,
                        "train_seed": 0,
                        "episode": i,
                        "score": float(score),
                    }
                )
    episodes = pd.DataFrame(rows)
    data = pd.DataFrame(
        [
            {"env": "hopper", "kind": k, "episode": i, "score": 30.0 + i}
            for k in ("medium", "medium-replay")
            for i in range(4)
        ]
    )
    diffs = d4rl_report.differences(episodes, data)
    assert set(zip(diffs["a"], diffs["b"], strict=True)) >= {
        ("TT (quantile)", "BC"),
        ("TT (quantile)", "data"),
    }
    summary = (
        episodes.groupby(["env", "kind", "method"], sort=False)["score"]
        .agg(score="mean")
        .reset_index()
        .assign(se=0.5, episodes=3)
    )
    # TT − IQL is exactly +1 in every pair: a clear win, as is TT − BC
    assert d4rl_report.verdict(diffs, summary).verdict == "reproduced"
    table = d4rl_report.differences_table(diffs)
    assert table.shape[1] <= 6 and table["Dataset"].iloc[-1] == "Average"
    ours = d4rl_report.ours_table(summary, data)
    assert ours.shape[1] <= 6 and ours.loc[0, "data"] == "31.5 ± 0.6 (4)"


# ------------------------------------------------------------------ provenance
def test_provenance_footer_names_preset_commit_machine_time_and_models(tmp_path):
    record = {
        "preset": "cpu", "command": "ttlib reproduce --preset cpu --only d4rl",
        "git_sha": "0123456789abcdef", "ttlib_modified_at_start": False,
        "hardware": {"cpu": "Some CPU", "cores": 2}, "started_utc": "2026-01-01T00:00:00Z",
        "wall_time_s": 90.0, "episode_seconds": 600.0,
        "models": [
            {"model": "a-123", "steps": 10, "train_seconds": 120.0, "trained_in_this_run": True,
             "git_sha": "fedcba9876543210"},
            {"model": "b-456.pt", "steps": 5, "train_seconds": None, "trained_in_this_run": False},
        ],
    }  # fmt: skip
    path = tmp_path / "run.json"
    path.write_text(json.dumps(record))
    text = provenance.provenance_markdown(path)
    for part in (
        "Preset `cpu`",
        "commit `01234567`",
        "Some CPU, 2 cores, no GPU",
        "wall time 1.5 min",
        "10.0 min",
        "| a-123 | 10 | 2.0 min (this run) | fedcba98, time not recorded |",
        "| b-456.pt | 5 | not recorded | not recorded, time not recorded |",
    ):
        assert part in text, part


def test_finish_stamps_the_commit_on_models_trained_in_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TTLIB_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m-1.json").write_text(json.dumps({"train_seconds": 3.0}))
    from ttlib.experiments.cache import MODELS_USED

    run = runs.Run(
        "x", {"preset": "smoke"}, tmp_path / "out", runs.RunRecord("x", {"preset": "smoke"})
    )
    run.record.git_sha = "abc"
    MODELS_USED[:] = [
        {"model": "m-1", "trained_in_this_run": True, "steps": 1, "train_seconds": 3.0}
    ]
    try:
        rec = json.loads(run.finish().read_text())
    finally:
        MODELS_USED.clear()
    assert rec["models"][0]["git_sha"] == "abc"
    assert json.loads((tmp_path / "models" / "m-1.json").read_text())["git_sha"] == "abc"
