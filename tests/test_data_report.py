"""The data report: D4RL's reference values joined to our datasets, learning curves read back."""

import json

import pandas as pd

from ttlib.datagen.report import learning_curves, with_reference


def test_reference_joins_by_env_and_kind_and_leaves_unknown_datasets_empty():
    summary = pd.DataFrame(
        {"dataset_id": ["ttlib/hopper/medium-replay-v0", "ttlib/fourrooms/diverse-v0"]}
    )
    reference = pd.DataFrame(
        {
            "env": ["hopper", "hopper"],
            "kind": ["medium-replay", "medium"],
            "normalized_mean": [None, 44.0],
            "transitions": [402000, 1000000],
            "source": ["a", "b"],
        }
    )
    out = with_reference(summary, reference)
    assert list(out["d4rl_transitions"].fillna(0)) == [402000, 0]
    assert out["d4rl_source"].tolist()[0] == "a" and pd.isna(out["d4rl_source"][1])


def _write(path, evaluations, **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"evaluations": evaluations, **extra}))


def test_learning_curves_read_the_run_that_trained_furthest(tmp_path):
    old = [{"step": s, "mean": 100.0 * s} for s in (10, 20)]
    new = [{"step": s, "mean": 50.0 * s} for s in (10, 20, 30)]
    medium = {"step": 10, "return_mean": 0}
    _write(tmp_path / "hopper" / "policies.json", old, medium=medium, expert=medium)
    _write(tmp_path / "hopper" / "sac_milestone.json", new)
    curves = learning_curves(tmp_path)
    assert curves["step"].tolist() == [10, 20, 30]
    assert not curves["final"].any() and set(curves["chosen_as"]) == {""}
    _write(tmp_path / "hopper" / "policies.json", new, medium=medium, expert={"step": 30})
    curves = learning_curves(tmp_path)
    assert curves["final"].all()
    assert curves.set_index("step")["chosen_as"].to_dict() == {10: "medium", 20: "", 30: "expert"}


def test_learning_curves_show_a_new_run_over_older_final_policies(tmp_path):
    old = [{"step": s, "mean": 100.0 * s} for s in (10, 20, 30)]
    new = [{"step": s, "mean": 50.0 * s} for s in (10, 20)]  # restarted: disagrees at 10, 20
    medium = {"step": 10, "return_mean": 0}
    _write(tmp_path / "hopper" / "policies.json", old, medium=medium, expert={"step": 30})
    _write(tmp_path / "hopper" / "sac_milestone.json", new)
    curves = learning_curves(tmp_path)
    assert curves["step"].tolist() == [10, 20] and not curves["final"].any()
