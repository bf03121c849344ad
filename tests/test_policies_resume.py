"""make-policies: the stop score, and resuming on a fresh machine from the committed milestone."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

from ttlib.datagen.policies import PolicyConfig, train


def _cfg(root: Path, **kw) -> PolicyConfig:
    base = PolicyConfig(
        env="hopper",
        total_steps=200,
        checkpoint_every=100,
        learning_starts=50,
        eval_episodes=1,
        milestone_every=100,
        cache_dir=str(root / "cache"),
        out_dir=str(root / "out"),
        command="pytest",
    )
    return replace(base, **kw)


def test_stop_score_ends_training_after_the_first_chunk_that_reaches_it(tmp_path):
    # Every return is above -1e9, so the run must stop after its first 100-step chunk.
    cfg = _cfg(tmp_path, stop_score=-1e9)
    train(cfg)
    evals = json.loads((tmp_path / "cache" / "hopper" / "evals.json").read_text())
    assert [e["step"] for e in evals] == [100]


def test_a_fresh_machine_resumes_from_the_committed_milestone(tmp_path):
    cfg = _cfg(tmp_path, total_steps=100)
    train(cfg)
    milestone = tmp_path / "out" / "hopper" / "sac_milestone.zip"
    assert milestone.exists()
    assert json.loads(milestone.with_suffix(".json").read_text())["step"] == 100
    shutil.rmtree(tmp_path / "cache")  # a fresh machine: no local checkpoint, no replay buffer
    train(replace(cfg, total_steps=200))
    cache = tmp_path / "cache" / "hopper"
    evals = json.loads((cache / "evals.json").read_text())
    assert [e["step"] for e in evals] == [100, 200]  # continued, not restarted from 0
    commands = (cache / "commands.txt").read_text()
    assert "resumed from" in commands and "empty buffer" in commands
    assert json.loads(milestone.with_suffix(".json").read_text())["step"] == 200
