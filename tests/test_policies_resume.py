"""make-policies: the stop score, and resuming on a fresh machine from the committed milestone."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from ttlib.datagen.policies import PolicyConfig, train

from conftest import tiny_sac_config


def _cfg(root: Path, **kw) -> PolicyConfig:
    """conftest's tiny Hopper run in 100-step chunks, with a milestone every chunk."""
    base = dict(total_steps=200, learning_starts=50, milestone_every=100, command="pytest")
    return tiny_sac_config(root, **(base | kw))


@pytest.mark.slow
def test_stop_score_ends_training_after_the_first_chunk_that_reaches_it(tmp_path):
    # Every return is above -1e9, so the run must stop after its first 100-step chunk.
    cfg = _cfg(tmp_path, stop_score=-1e9)
    train(cfg)
    evals = json.loads((tmp_path / "cache" / "hopper" / "evals.json").read_text())
    assert [e["step"] for e in evals] == [100]


@pytest.mark.slow
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


@pytest.mark.slow
def test_finalize_on_a_fresh_machine_uses_the_committed_early_files(tmp_path):
    """Train 300 steps in 100-step chunks, lose the local cache, then finalize: medium/expert
    actors and medium-replay must come from early/ and equal what the local cache gave."""
    import numpy as np

    from ttlib.datagen.actor import load_actor
    from ttlib.datagen.policies import finalize

    cfg = _cfg(tmp_path, total_steps=300, final_eval_episodes=1, prefix_score=1e9)
    train(cfg)
    early = tmp_path / "out" / "hopper" / "early"
    assert json.loads((early / "early.json").read_text())["prefix_end"] == 300
    local = finalize(cfg)
    local_replay = dict(np.load(tmp_path / "out" / "hopper" / "medium_replay.npz"))
    local_medium = load_actor(tmp_path / "out" / "hopper" / "medium.pt").state_dict()
    shutil.rmtree(tmp_path / "cache")
    fresh = finalize(cfg)
    assert (fresh["medium"]["step"], fresh["expert"]["step"]) == (
        local["medium"]["step"],
        local["expert"]["step"],
    )
    replay = dict(np.load(tmp_path / "out" / "hopper" / "medium_replay.npz"))
    assert replay.keys() == local_replay.keys()
    for k in replay:
        np.testing.assert_array_equal(replay[k], local_replay[k], err_msg=k)
    medium = load_actor(tmp_path / "out" / "hopper" / "medium.pt").state_dict()
    for k in medium:  # the early copies are float16: equal to half precision
        np.testing.assert_allclose(medium[k], local_medium[k], rtol=1e-3, atol=1e-3)


def test_cut_transitions_closes_the_running_episode_as_a_truncation():
    import numpy as np

    from ttlib.datagen.replay import cut_transitions

    term = np.array([0, 0, 1, 0, 0, 0, 0], bool)
    trunc = np.array([0, 0, 0, 0, 0, 0, 1], bool)
    data = {
        "observations": np.arange(7, dtype=np.float32)[:, None],
        "actions": np.zeros((7, 1), np.float32),
        "rewards": np.ones(7, np.float32),
        "terminations": term,
        "truncations": trunc,
        "final_observations": np.array([[100.0], [200.0]], np.float32),
    }
    cut = cut_transitions(data, 5)
    assert cut["terminations"].tolist() == [0, 0, 1, 0, 0]
    assert cut["truncations"].tolist() == [0, 0, 0, 0, 1]
    assert cut["final_observations"][:, 0].tolist() == [100.0, 5.0]  # row 5 follows row 4
    whole = cut_transitions(data, 3)  # ends exactly at a termination: nothing to close
    assert whole["truncations"].tolist() == [0, 0, 0]
    assert whole["final_observations"][:, 0].tolist() == [100.0]


@pytest.mark.slow
def test_save_early_by_hand_also_brings_the_milestone_to_the_latest_checkpoint(tmp_path):
    from ttlib.datagen.policies import save_early

    cfg = _cfg(tmp_path, total_steps=200, milestone_every=1000)  # no milestone while training
    train(cfg)
    milestone = tmp_path / "out" / "hopper" / "sac_milestone.json"
    assert json.loads(milestone.read_text())["step"] == 200  # the run's end writes one
    train(replace(cfg, total_steps=300))  # 300 is the end again; extend once more by hand
    train(replace(cfg, total_steps=400, milestone_every=10_000))
    assert json.loads(milestone.read_text())["step"] == 400
    milestone.unlink()
    info = save_early(cfg)
    assert json.loads(milestone.read_text())["step"] == 400
    assert info["prefix_end"] == 400  # prefix_score never reached: the whole buffer so far


@pytest.mark.slow
def test_a_resumed_run_keeps_the_replay_prefix_it_cannot_rebuild(tmp_path):
    import numpy as np

    cfg = _cfg(tmp_path, total_steps=100)
    train(cfg)  # milestone and early/ at step 100, prefix_score never reached: prefix = 100
    prefix = tmp_path / "out" / "hopper" / "early" / "replay_prefix.npz"
    before = dict(np.load(prefix))
    shutil.rmtree(tmp_path / "cache")  # a fresh machine: the buffer restarts at step 100
    train(replace(cfg, total_steps=200))
    early = json.loads((prefix.parent / "early.json").read_text())
    assert early["prefix_end"] == 100  # not 200: steps 0-99 are not in the new buffer
    after = dict(np.load(prefix))
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
