"""Four-rooms success against training tokens and planning horizon: which points are planned."""

import numpy as np

from ttlib.experiments import goal_sweep


class _Trained:
    def __init__(self, name):
        self.folder = type("F", (), {"name": name})()
        self.model = self.discretizer = None


def test_sweep_plans_each_missing_point_once_and_reuses_the_known_one(monkeypatch):
    planned = []

    class FakePlanner:
        def __init__(self, model, discretizer, cfg, goal_dims):
            self.config = cfg

    def fake_success(planner, name, env, pairs, max_steps, seed):
        planned.append((name, planner.config.horizon))
        return np.array([1, 0, 1, 1], dtype=bool) if name == "big" else np.zeros(4, bool)

    monkeypatch.setattr(goal_sweep, "TTPlanner", FakePlanner)
    monkeypatch.setattr(goal_sweep, "cached_success", fake_success)
    params = {"horizon": 5, "beam_width": 8, "seed": 0, "env": "fourrooms"}
    params["max_episode_steps"] = 10
    models = {100: _Trained("small"), 400: _Trained("big")}
    known = {(400, 5): np.array([1, 1, 0, 0], dtype=bool)}
    sweep = goal_sweep.success_sweep(models, [5, 10, 20], params, pairs=[], known=known)
    assert planned == [("small", 5), ("big", 10), ("big", 20)]
    assert list(zip(sweep["tokens"], sweep["horizon"], strict=True)) == [
        (100, 5), (400, 5), (400, 10), (400, 20)
    ]  # fmt: skip
    assert sweep["success"].tolist() == [0.0, 0.5, 0.75, 0.75]
    assert sweep["se"].iloc[1] == np.std([1, 1, 0, 0], ddof=1) / 2  # sample s.e., n = 4
    assert (sweep["episodes"] == 4).all()
    # paired against the page's model (400 tokens, H5) over the same 4 tasks
    ref = np.array([1, 1, 0, 0], dtype=float)
    h10 = np.array([1, 0, 1, 1], dtype=float) - ref
    assert sweep["diff_vs_page"].tolist() == [-0.5, 0.0, 0.25, 0.25]
    assert sweep["diff_se"].iloc[2] == np.std(h10, ddof=1) / 2
    assert not sweep["diff_clear"].any()  # +0.25 ± 0.48 over 4 pairs is noise
