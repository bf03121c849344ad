"""benchmarks/prediction_longer.py: it finds its own run among the cached models."""

import json

import pytest

from conftest import load_benchmark

longer = load_benchmark("prediction_longer")


def test_the_run_folder_is_the_one_whose_configs_match(tmp_path):
    data = {"dataset_id": "ttlib/hopper/medium-v0", "n_bins": 100}
    for name, steps in (("a", 4000), ("b", 16000)):
        (tmp_path / name).mkdir()
        config = {"data": data, "train": {"max_steps": steps, "betas": [0.9, 0.95]}}
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    # the configs as the code holds them (tuples) match what config.json stored (lists)
    found = longer._run_folder(tmp_path, data, {"max_steps": 16000, "betas": (0.9, 0.95)})
    assert found == tmp_path / "b"
    with pytest.raises(FileNotFoundError, match="no cache folder"):
        longer._run_folder(tmp_path, data, {"max_steps": 8000, "betas": (0.9, 0.95)})
